package http

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/sinks/internal/jsonenc"
)

const (
	// drainLimit bounds how much of a response is read past what the sink
	// needs, so the connection can be reused; larger rests close it.
	drainLimit = 64 << 10
	// maxPartialBody bounds a 207 partial-failure body.
	maxPartialBody = 8 << 20
)

// errTimeout is the cause of a request that ran past Config.Timeout.
var errTimeout = errors.New("request timeout")

// Sink sends batches as HTTP requests. It is safe for concurrent use and
// holds no state between calls besides the client's idle connections; the
// zero value is not usable, call New.
type Sink struct {
	client     *http.Client
	method     string
	url        string
	display    string // scheme://host/path, for messages
	host       string // Host header override
	header     http.Header
	ndjson     bool
	timeout    time.Duration
	maxErrBody int
	rules      map[int]statusRule // successful_on, backoff_on, throttle_on, drop_on
	enc        encoder
	rejections *Rejections // nil: off
	now        func() time.Time

	droppedTombstones atomic.Int64
}

// Option configures a Sink.
type Option func(*Sink)

// WithClient makes the sink send through c instead of its own client (tests,
// custom TLS or proxies). Config.Timeout still applies, and so does the
// check that fails a response reached through a redirect that changed the
// method; which redirects are followed is up to c.CheckRedirect.
func WithClient(c *http.Client) Option { return func(s *Sink) { s.client = c } }

// New validates cfg (after applying defaults) and returns a sink. It does no
// I/O. Without WithClient the sink has its own client: keep-alive
// connections (up to 64 idle per host, so max_in_flight_requests requests
// reuse them), HTTP/2 when the server offers it, the proxy from
// HTTPS_PROXY/HTTP_PROXY/NO_PROXY, and only 307 and 308 redirects followed.
func New(cfg Config, opts ...Option) (*Sink, error) {
	cfg.ApplyDefaults()
	s := &Sink{now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL) // validated
	if s.client == nil {
		s.client = newClient()
	}
	s.method = cfg.Method
	s.url = cfg.URL
	s.display = (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	s.ndjson = cfg.Format == FormatNDJSON
	s.enc = encoder{values: jsonenc.Values{Encoding: cfg.ValueEncoding, BinaryBase64: cfg.BinaryValues == BinaryBase64,
		OneLine: s.ndjson, Section: "sink.http", Verb: "send"},
		dropTombs: cfg.Tombstones == TombstonesDrop, ndjson: s.ndjson}
	if cfg.Rejections != nil {
		r := *cfg.Rejections
		s.rejections = &r
	}
	s.timeout = cfg.Timeout
	s.maxErrBody = cfg.MaxErrorBody
	s.rules = map[int]statusRule{}
	for _, c := range cfg.SuccessfulOn {
		s.rules[c] = statusRule{success: true}
	}
	for _, c := range cfg.BackoffOn {
		s.rules[c] = statusRule{class: sinks.Retryable}
	}
	for _, c := range cfg.ThrottleOn {
		s.rules[c] = statusRule{class: sinks.Throttled}
	}
	for _, c := range cfg.DropOn {
		s.rules[c] = statusRule{class: sinks.Fatal}
	}

	h := http.Header{}
	if s.ndjson {
		h.Set("Content-Type", "application/x-ndjson")
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("User-Agent", "spillway")
	for k, v := range cfg.Headers {
		if http.CanonicalHeaderKey(k) == "Host" {
			s.host = v
			continue
		}
		h.Set(k, v)
	}
	switch {
	case cfg.BearerToken != "":
		h.Set("Authorization", "Bearer "+cfg.BearerToken)
	case cfg.BasicAuth != nil:
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(cfg.BasicAuth.Username+":"+cfg.BasicAuth.Password)))
	}
	s.header = h
	return s, nil
}

// newClient returns a client tuned for many concurrent requests to one host,
// following only redirects that keep the method and body.
func newClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64 // > max_in_flight_requests, or connections churn
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{
		Transport: t,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if c := req.Response.StatusCode; c != http.StatusTemporaryRedirect && c != http.StatusPermanentRedirect {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}

// DroppedTombstones returns how many tombstones the sink left out of its
// requests (tombstones: drop) since New. They count as delivered.
func (s *Sink) DroppedTombstones() int64 { return s.droppedTombstones.Load() }

// WriteBatch sends batch as one request and classifies the answer (see the
// package documentation). It blocks until the response head arrived and the
// part of the body the sink needs was read, or ctx (or Config.Timeout) ends
// the request. An empty batch sends nothing. It does not keep batch.
//
// A record whose value the configured encoding cannot carry is not sent:
// it fails alone, fatal, in a *sinks.BatchError that also holds the
// outcome of the request carrying the others.
func (s *Sink) WriteBatch(ctx context.Context, batch []pipeline.Record) error {
	if err := ctx.Err(); err != nil {
		return s.transportError(ctx, ctx, err)
	}
	if len(batch) == 0 {
		return nil
	}
	b := s.enc.encode(batch)
	defer b.release()
	if b.dropped > 0 {
		s.droppedTombstones.Add(int64(b.dropped))
	}
	if b.sent != nil && len(b.sent) == 0 {
		return b.result(nil) // nothing left to send
	}
	return b.result(s.send(ctx, b.records(batch), b.body))
}

// send sends b, the body for recs, as one request and classifies the
// answer; entry indexes in its errors are positions in recs.
func (s *Sink) send(ctx context.Context, recs []pipeline.Record, b *body) error {
	parent := ctx
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, s.timeout, errTimeout)
		defer cancel()
	}
	batch := recs
	req, err := http.NewRequestWithContext(ctx, s.method, s.url, nil)
	if err != nil {
		return sinks.AsFatal(&sinks.DetailedError{Err: fmt.Errorf("http sink: %w", err), Details: map[string]string{"http.error": "request"}})
	}
	req.Body = b.open()
	req.GetBody = func() (io.ReadCloser, error) { return b.open(), nil }
	req.ContentLength = int64(len(b.bytes()))
	req.Header = s.header.Clone()
	req.Header["Idempotency-Key"] = []string{IdempotencyKey(batch)}
	if tp, ok := batch[0].Header("traceparent"); ok && validTraceparent(tp) {
		req.Header["Traceparent"] = []string{string(tp)}
		if ts, ok := batch[0].Header("tracestate"); ok && validTracestate(ts) {
			req.Header["Tracestate"] = []string{string(ts)}
		}
	}
	if s.host != "" {
		req.Host = s.host
	}

	resp, err := s.client.Do(req)
	if err != nil {
		return s.transportError(parent, ctx, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
		resp.Body.Close()
	}()
	if resp.Request != nil && resp.Request.Method != s.method {
		// A client following 301/302/303 re-sent the request as GET
		// without the body: nothing was delivered, and retrying repeats it.
		err := fmt.Errorf("%s %s: redirected to %s %s, records not delivered",
			s.method, s.display, resp.Request.Method, resp.Request.URL.Redacted())
		return sinks.AsFatal(s.statusError(resp, err))
	}
	if resp.StatusCode == http.StatusMultiStatus {
		return s.partial(parent, resp, len(batch))
	}
	if s.success(resp.StatusCode) {
		return nil
	}
	return s.failure(resp, batch)
}

// failure classifies a non-2xx response to a request carrying batch.
func (s *Sink) failure(resp *http.Response, batch []pipeline.Record) error {
	class := s.classOf(resp.StatusCode)
	if class == sinks.Fatal && s.rejections != nil {
		return s.rejected(resp, batch)
	}
	err := s.statusError(resp, nil)
	switch class {
	case sinks.Throttled:
		return &sinks.ThrottledError{Err: err, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), s.now()),
			Unavailable: resp.StatusCode == http.StatusServiceUnavailable}
	case sinks.Fatal:
		return sinks.AsFatal(err)
	case sinks.Misconfigured:
		return sinks.AsConfigError(err)
	}
	return err
}

// statusRule is a configured classification of one status.
type statusRule struct {
	success bool
	class   sinks.Class
}

// success reports whether code means the batch was delivered: a 2xx not
// configured otherwise, or a status in successful_on.
func (s *Sink) success(code int) bool {
	if r, ok := s.rules[code]; ok {
		return r.success
	}
	return code >= 200 && code < 300
}

// classOf maps a failed status to what the writer should do with it:
// the configured rule if any, else the defaults.
func (s *Sink) classOf(code int) sinks.Class {
	if r, ok := s.rules[code]; ok && !r.success {
		return r.class
	}
	return defaultClassOf(code)
}

// defaultClassOf maps a status to what the writer should do with it.
func defaultClassOf(code int) sinks.Class {
	switch {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		return sinks.Throttled
	case code == http.StatusRequestTimeout || code == http.StatusTooEarly || code >= 500:
		return sinks.Retryable
	case code >= 200 && code < 300:
		return sinks.Retryable // a "failed" entry with a success status: try again
	case code < 100 || code > 599:
		return sinks.Retryable // absent or invalid
	case code == http.StatusUnauthorized, code == http.StatusForbidden, code == http.StatusNotFound,
		code == http.StatusMethodNotAllowed, code == http.StatusProxyAuthRequired,
		code == http.StatusRequestEntityTooLarge, code == http.StatusRequestHeaderFieldsTooLarge:
		// The request is wrong for every record: credentials, URL, method,
		// batch size or headers. Dead-lettering would empty the topic into
		// the DLQ; stop instead.
		return sinks.Misconfigured
	}
	return sinks.Fatal
}

// statusError reads a bounded excerpt of resp's body and returns the
// detailed error for it. msg, when not nil, replaces the default message.
func (s *Sink) statusError(resp *http.Response, msg error) *sinks.DetailedError {
	return s.excerptError(resp, readExcerpt(resp.Body, s.maxErrBody), msg)
}

// excerptError is statusError with the excerpt of the body already read.
func (s *Sink) excerptError(resp *http.Response, excerpt string, msg error) *sinks.DetailedError {
	if msg == nil {
		m := fmt.Sprintf("%s %s: %s", s.method, s.display, resp.Status)
		if short := oneLine(excerpt, 200); short != "" {
			m += ": " + short
		}
		msg = errors.New(m)
	}
	return &sinks.DetailedError{Err: msg, Details: map[string]string{
		"http.status": strconv.Itoa(resp.StatusCode),
		"http.body":   excerpt,
	}}
}

// transportError wraps a failure without a response: the caller's context
// ended (the error wraps parent.Err()), Config.Timeout passed, or the
// connection failed. None of them is fatal.
func (s *Sink) transportError(parent, ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its message repeats the URL with the query
	}
	kind := "transport"
	switch perr := parent.Err(); {
	case perr != nil:
		kind = "canceled"
		if errors.Is(perr, context.DeadlineExceeded) {
			kind = "timeout"
		}
		if !errors.Is(err, perr) {
			err = fmt.Errorf("%w: %w", perr, err)
		}
	case errors.Is(context.Cause(ctx), errTimeout):
		// The transport returns the cause; say what happened instead.
		kind = "timeout"
		err = fmt.Errorf("timed out after %v: %w", s.timeout, context.DeadlineExceeded)
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			kind = "timeout"
		}
	}
	return &sinks.DetailedError{
		Err:     fmt.Errorf("%s %s: %w", s.method, s.display, err),
		Details: map[string]string{"http.error": kind},
	}
}

// partialResponse is the 207 body of the partial-failure protocol.
type partialResponse struct {
	Failed []struct {
		Index  *int   `json:"index"`
		Status int    `json:"status"`
		Error  string `json:"error"`
	} `json:"failed"`
}

// partial handles a 207 answer to a batch of n records.
func (s *Sink) partial(ctx context.Context, resp *http.Response, n int) error {
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxPartialBody+1))
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return s.partialError(resp, raw, fmt.Errorf("reading body: %w", err))
	}
	if len(raw) > maxPartialBody {
		return s.partialError(resp, raw, fmt.Errorf("body exceeds %d bytes", maxPartialBody))
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		return nil
	}
	var pr partialResponse
	if err := json.Unmarshal(raw, &pr); err != nil {
		return s.partialError(resp, raw, fmt.Errorf("malformed body: %w", err))
	}
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"), s.now())
	be := &sinks.BatchError{Failed: make([]sinks.EntryError, 0, len(pr.Failed))}
	seen := make(map[int]bool, len(pr.Failed))
	for i, f := range pr.Failed {
		if f.Index == nil || *f.Index < 0 || *f.Index >= n {
			got := "missing"
			if f.Index != nil {
				got = strconv.Itoa(*f.Index)
			}
			return s.partialError(resp, raw, fmt.Errorf("failed[%d].index %s outside the batch of %d", i, got, n))
		}
		idx := *f.Index
		if seen[idx] {
			continue
		}
		seen[idx] = true
		msg := bound(f.Error, s.maxErrBody)
		var err error = &sinks.DetailedError{
			Err:     fmt.Errorf("%s %s: entry %d: status %d: %s", s.method, s.display, idx, f.Status, oneLine(msg, 200)),
			Details: map[string]string{"http.status": strconv.Itoa(f.Status), "http.error": msg},
		}
		switch s.classOf(f.Status) {
		case sinks.Throttled:
			err = &sinks.ThrottledError{Err: err, RetryAfter: retryAfter}
		case sinks.Fatal, sinks.Misconfigured:
			// One entry's status concerns that record, even one that would
			// mean a configuration fault for the whole request.
			err = sinks.AsFatal(err)
		}
		be.Failed = append(be.Failed, sinks.EntryError{Index: idx, Err: err})
	}
	if len(be.Failed) == 0 {
		return nil
	}
	slices.SortFunc(be.Failed, func(a, b sinks.EntryError) int { return a.Index - b.Index })
	return be
}

// partialError fails the whole batch (retryable) for a 207 the sink cannot
// trust.
func (s *Sink) partialError(resp *http.Response, raw []byte, err error) error {
	return &sinks.DetailedError{
		Err: fmt.Errorf("%s %s: %s: partial-failure response: %w", s.method, s.display, resp.Status, err),
		Details: map[string]string{
			"http.status": strconv.Itoa(resp.StatusCode),
			"http.body":   bound(string(raw[:min(len(raw), s.maxErrBody)]), s.maxErrBody),
		},
	}
}

// parseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date,
// relative to now. Invalid or past values give 0; the result is capped at
// MaxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs >= int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfter)
}

// readExcerpt reads at most n bytes of r as valid UTF-8 of at most n bytes.
func readExcerpt(r io.Reader, n int) string {
	if n <= 0 {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(r, int64(n)))
	return bound(string(b), n)
}

// bound returns s as valid UTF-8 of at most n bytes, cut at a rune boundary.
func bound(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	// A rune cut by the limit is dropped rather than replaced.
	for i := len(s) - 1; i >= 0 && i >= len(s)-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if !utf8.FullRuneInString(s[i:]) {
				s = s[:i]
			}
			break
		}
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	for len(s) > n { // replacements can grow it
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// oneLine shortens s for an error message: line breaks become spaces and
// it is cut to about n bytes.
func oneLine(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = bound(s, n) + "..."
	}
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}
