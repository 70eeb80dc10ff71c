package http

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-io/spillway/field"
)

// Body formats.
const (
	FormatJSON   = "json"   // a JSON array, one element per record
	FormatNDJSON = "ndjson" // one JSON element per line
)

// Defaults and bounds.
const (
	DefaultMaxErrorBody = 1024            // bytes of an error response kept
	MaxRetryAfter       = 5 * time.Minute // cap on a Retry-After answer
)

// Config configures the sink; its yaml keys are those of a pipeline
// file's sink.http section. Zero values mean the default given on each
// field, which ApplyDefaults fills in. It is plain data.
type Config struct {
	URL         string            `yaml:"url"`          // required: http or https, with a host
	Method      string            `yaml:"method"`       // POST (default), PUT or PATCH, in any case: ApplyDefaults upper-cases it
	Format      string            `yaml:"format"`       // "json" (default, an array) or "ndjson"
	Headers     map[string]string `yaml:"headers"`      // sent on every request; may override Content-Type and Host
	BearerToken string            `yaml:"bearer_token"` // sends Authorization: Bearer <token>
	BasicAuth   *BasicAuth        `yaml:"basic_auth"`   // sends Authorization: Basic; not with bearer_token
	// Timeout bounds each request; 0 = no bound of the sink's own, only
	// the context's deadline. In a pipeline, 0 means the writer's
	// request_timeout: the pipeline loader sets it.
	Timeout time.Duration `yaml:"timeout"`
	// MaxErrorBody is how many bytes of an error response are kept for the
	// error and its dead-letter header; default DefaultMaxErrorBody. Not a
	// pipeline file setting.
	MaxErrorBody int `yaml:"-"`

	// Per-status classification overriding the defaults (2xx delivered,
	// 429 and 503 throttled, other 5xx retried, other 4xx dead-lettered),
	// as Benthos's successful_on / backoff_on / drop_on: statuses here
	// count as delivered, retryable with backoff, throttled (Retry-After
	// honoured), or fatal (dead-lettered, never retried). A status may be
	// in one list only.
	SuccessfulOn []int `yaml:"successful_on"`
	BackoffOn    []int `yaml:"backoff_on"`
	ThrottleOn   []int `yaml:"throttle_on"`
	DropOn       []int `yaml:"drop_on"`
}

// BasicAuth is HTTP basic authentication.
type BasicAuth struct {
	Username string `yaml:"username"` // required; no ':'
	Password string `yaml:"password"`
}

// Header size bounds checked by Validate: one value, and all configured
// headers together (most servers answer 431 above these).
const (
	maxHeaderValue = 8 << 10
	maxHeaderTotal = 32 << 10
)

// headers the sink manages itself.
var reservedHeaders = []string{"Connection", "Content-Length", "Idempotency-Key", "Transfer-Encoding"}

// ApplyDefaults upper-cases Method and fills in Method (POST), Format
// (json) and MaxErrorBody (DefaultMaxErrorBody). Timeout has no default
// of its own (see Timeout). Idempotent.
func (c *Config) ApplyDefaults() {
	c.Method = strings.ToUpper(c.Method)
	if c.Method == "" {
		c.Method = http.MethodPost
	}
	if c.Format == "" {
		c.Format = FormatJSON
	}
	if c.MaxErrorBody == 0 {
		c.MaxErrorBody = DefaultMaxErrorBody
	}
}

// Validate reports every invalid setting of a defaulted copy of c as a
// *field.Error with a path relative to the sink.http section ("url",
// "headers.X-Foo", "basic_auth.username"), joined with errors.Join.
// Messages never contain the password or token.
func (c Config) Validate() error {
	c.ApplyDefaults() // c is a copy; ApplyDefaults changes no map, slice or pointee
	var l field.List
	if c.URL == "" {
		l.Add("url", "required")
	} else if msg := badURL(c.URL); msg != "" {
		l.Add("url", "malformed sink URL %q: %s", redactURL(c.URL), msg)
	} else if u, _ := url.Parse(c.URL); u.Port() != "" {
		if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
			l.Add("url", "port must be from 1 to 65535, got %s", u.Port())
		}
	}
	l.OneOf("method", c.Method, http.MethodPost, http.MethodPut, http.MethodPatch)
	seen := map[int]string{}
	for _, list := range []struct {
		key   string
		codes []int
	}{{"successful_on", c.SuccessfulOn}, {"backoff_on", c.BackoffOn}, {"throttle_on", c.ThrottleOn}, {"drop_on", c.DropOn}} {
		for _, code := range list.codes {
			switch {
			case code < 100 || code > 599:
				l.Add(list.key, "%d is not an HTTP status", code)
			case seen[code] != "" && seen[code] != list.key:
				l.Add(list.key, "status %d is also in %s", code, seen[code])
			default:
				seen[code] = list.key
			}
		}
	}
	l.OneOf("format", c.Format, FormatJSON, FormatNDJSON)
	if a := c.BasicAuth; a != nil {
		switch {
		case a.Username == "":
			l.Add("basic_auth.username", "required")
		case strings.Contains(a.Username, ":"):
			l.Add("basic_auth.username", "must not contain ':'")
		}
	}
	auth := c.BasicAuth != nil || c.BearerToken != ""
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		path := field.Join("headers", name)
		ck := http.CanonicalHeaderKey(name)
		switch {
		case !validToken(name):
			l.Add(path, "invalid header name %q", name)
		case ck == "Authorization" && auth:
			l.Add(path, "conflicts with basic_auth or bearer_token")
		case !validHeaderValue(c.Headers[name]):
			l.Add(path, "value contains control characters")
		case slices.Contains(reservedHeaders, ck):
			l.Add(path, "set by the sink, cannot be configured")
		}
	}
	// Servers refuse large headers (nginx: 8 KiB a line, about 32 KiB in
	// all; others less) with 431 for every request, so say it here.
	total := len(c.BearerToken)
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		v := c.Headers[name]
		total += len(name) + len(v)
		if len(v) > maxHeaderValue {
			l.Add(field.Join("headers", name), "value of %d bytes; destinations refuse headers over %d bytes (431)", len(v), maxHeaderValue)
		}
	}
	if len(c.BearerToken) > maxHeaderValue {
		l.Add("bearer_token", "%d bytes; destinations refuse headers over %d bytes (431)", len(c.BearerToken), maxHeaderValue)
	}
	if total > maxHeaderTotal {
		l.Add("headers", "%d bytes of headers in all; destinations refuse more than %d (431)", total, maxHeaderTotal)
	}
	if !validHeaderValue(c.BearerToken) {
		l.Add("bearer_token", "contains control characters")
	}
	if c.BearerToken != "" && c.BasicAuth != nil && (c.BasicAuth.Username != "" || c.BasicAuth.Password != "") {
		l.Add("bearer_token", "conflicts with basic_auth")
	}
	if c.Timeout < 0 {
		l.Add("timeout", "must be positive, got %s", c.Timeout)
	}
	if c.MaxErrorBody < 0 {
		l.Add("max_error_body", "must not be negative, got %d", c.MaxErrorBody)
	}
	return l.Err()
}

// badURL says what is wrong with a sink URL, or "". Its messages do not
// repeat the URL.
func badURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue.Error() repeats the URL, which may hold a password
		}
		return err.Error()
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		if u.Scheme == "" {
			return "scheme must be http or https, got none"
		}
		return fmt.Sprintf("scheme must be http or https, got %q", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return "missing host"
	}
	return ""
}

// redactURL is s with the password of its user information, if any,
// replaced by "xxxxx", as url.URL.Redacted does, also for a URL that does
// not parse.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		if _, has := u.User.Password(); has {
			return u.Redacted()
		}
		return s
	}
	_, rest, ok := strings.Cut(s, "://")
	if !ok {
		rest = s
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return s
	}
	colon := strings.Index(authority[:at], ":")
	if colon < 0 {
		return s
	}
	start := len(s) - len(rest) + colon + 1 // the password's offset in s
	return s[:start] + "xxxxx" + s[len(s)-len(rest)+at:]
}

// validToken reports whether s is an RFC 9110 token (method, header name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue rejects control characters other than tab, which would
// make the request invalid or split it.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
