package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline/exprop"
)

// Validate reports every problem of p, each an *Error, joined with
// errors.Join. Zero fields count as their defaults, so a Pipeline built in
// code need not call ApplyDefaults first; Validate does not modify p. On a
// Pipeline from Parse the errors carry the line of the offending key, or of
// the enclosing section for a missing key. Operator expressions are
// compiled, so syntax and type errors are reported here.
func (p *Pipeline) Validate() error {
	if errs := p.validate(); len(errs) > 0 {
		return joinErrors(errs)
	}
	return nil
}

func (p *Pipeline) validate() []*Error {
	d := p.clone()
	d.ApplyDefaults()
	v := &validator{p: d}
	v.pipeline()
	return v.errs
}

// where returns the position of path, or of its closest written parent.
func (p *Pipeline) where(path string) position {
	for {
		if pos, ok := p.pos[path]; ok || path == "" {
			return pos
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			path = ""
		} else {
			path = path[:i]
		}
	}
}

// has reports whether Parse found path in the file.
func (p *Pipeline) has(path string) bool {
	_, ok := p.pos[path]
	return ok
}

type validator struct {
	p    *Pipeline // with defaults applied
	errs []*Error
}

func (v *validator) errorf(path, format string, args ...any) {
	pos := v.p.where(path)
	v.errs = append(v.errs, &Error{File: v.p.file, Line: pos.line, Column: pos.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// fieldErrors reports each *field.Error of err (a component's Validate)
// under prefix.
func (v *validator) fieldErrors(prefix string, err error) {
	for _, e := range field.Split(err) {
		var fe *field.Error
		if errors.As(e, &fe) {
			v.errorf(field.Join(prefix, fe.Path), "%s", fe.Msg)
		} else {
			v.errorf(prefix, "%v", e)
		}
	}
}

func (v *validator) positive(path string, n int) {
	if n <= 0 {
		v.errorf(path, "must be positive, got %d", n)
	}
}

func (v *validator) positiveDur(path string, d time.Duration) {
	if d <= 0 {
		v.errorf(path, "must be positive, got %s", d)
	}
}

func (v *validator) oneOf(path, got string, allowed ...string) {
	for _, a := range allowed {
		if got == a {
			return
		}
	}
	v.errorf(path, "must be %s, got %q", orList(allowed), got)
}

// exactlyOne checks that one of the kinds (in order) was chosen.
func (v *validator) exactlyOne(path string, kinds []string, chosen []bool) {
	var got []string
	for i, c := range chosen {
		if c {
			got = append(got, kinds[i])
		}
	}
	switch len(got) {
	case 0:
		v.errorf(path, "exactly one of %s is required, got none", strings.Join(kinds, ", "))
	case 1:
	default:
		v.errorf(path, "exactly one of %s is allowed, got %s", strings.Join(kinds, ", "), andList(got))
	}
}

func (v *validator) pipeline() {
	p := v.p
	if strings.TrimSpace(p.Name) == "" {
		v.errorf("name", "required")
	}
	v.brokers()
	v.source()
	v.operators()
	v.sink()
	v.errorsPolicy()
	v.positiveDur("shutdown_timeout", p.ShutdownTimeout)
	v.oneOf("log.level", p.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", p.Log.Format, "json", "text")
	v.oneOf("log.kafka_level", p.Log.KafkaLevel, "debug", "info", "warn", "error")
	if l := p.Ops.Listen; l != "" {
		_, port, err := net.SplitHostPort(l)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			v.errorf("ops.listen", "invalid listen address %q: want host:port (host may be empty, port 0 picks one)", l)
		}
	}
}

func (v *validator) brokers() {
	p := v.p
	if (p.Embedded != Embedded{} || p.has("embedded")) && !p.Brokers.Embedded() {
		v.errorf("embedded", "only allowed with brokers: embedded")
	}
	if p.Brokers.Embedded() {
		if p.Embedded.Port < 0 || p.Embedded.Port > 65535 {
			v.errorf("embedded.port", "must be between 0 and 65535, got %d", p.Embedded.Port)
		}
		v.positive("embedded.partitions", p.Embedded.Partitions)
		return
	}
	for i, b := range p.Brokers {
		path := fmt.Sprintf("brokers[%d]", i)
		if !p.has(path) {
			path = "brokers"
		}
		if b == "embedded" {
			v.errorf(path, `"embedded" cannot be combined with other brokers`)
			continue
		}
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			var ae *net.AddrError
			if errors.As(err, &ae) {
				err = errors.New(ae.Err)
			}
			v.errorf(path, "invalid broker address %q: %v (want host:port)", b, err)
			continue
		}
		if n, err := strconv.Atoi(port); host == "" || err != nil || n < 1 || n > 65535 {
			v.errorf(path, "invalid broker address %q: want host:port with a port from 1 to 65535", b)
		}
	}
}

func (v *validator) source() {
	s := v.p.Source
	v.exactlyOne("source", []string{"kafka", "file", "generate"}, []bool{s.Kafka != nil, s.File != nil, s.Generate != nil})
	if k := s.Kafka; k != nil {
		if len(k.Topics) == 0 {
			v.errorf("source.kafka.topics", "required")
		}
		seen := map[string]bool{}
		for i, t := range k.Topics {
			path := fmt.Sprintf("source.kafka.topics[%d]", i)
			if msg := badTopic(t); msg != "" {
				v.errorf(path, "%s", msg)
			} else if seen[t] {
				v.errorf(path, "duplicate topic %q", t)
			}
			seen[t] = true
		}
		if strings.TrimSpace(k.Group) == "" {
			v.errorf("source.kafka.group", "required")
		}
		if len(v.p.Brokers) == 0 {
			v.errorf("brokers", "required with a kafka source")
		}
		v.oneOf("source.kafka.start_offset", k.StartOffset, "earliest", "latest")
		v.positive("source.kafka.partitions", k.Partitions)
		v.positiveDur("source.kafka.checkpoint_interval", k.CheckpointInterval)
		v.positiveDur("source.kafka.revoke_timeout", k.RevokeTimeout)
		v.positiveDur("source.kafka.session_timeout", k.SessionTimeout)
		v.positiveDur("source.kafka.connect_timeout", k.ConnectTimeout)
		v.positive("source.kafka.max_poll_records", k.MaxPollRecords)
		if v.p.has("source.kafka.fetch_max_bytes") {
			v.positive("source.kafka.fetch_max_bytes", k.FetchMaxBytes)
		}
		if v.p.has("source.kafka.fetch_max_partition_bytes") {
			v.positive("source.kafka.fetch_max_partition_bytes", k.FetchMaxPartitionBytes)
			if k.FetchMaxBytes > 0 && k.FetchMaxPartitionBytes > k.FetchMaxBytes {
				v.errorf("source.kafka.fetch_max_partition_bytes", "must not exceed fetch_max_bytes (%d), got %d", k.FetchMaxBytes, k.FetchMaxPartitionBytes)
			}
		}
		for key, n := range map[string]int{"fetch_max_bytes": k.FetchMaxBytes, "fetch_max_partition_bytes": k.FetchMaxPartitionBytes} {
			if n > math.MaxInt32 {
				v.errorf("source.kafka."+key, "must be below 2 GiB, got %d", n)
			}
		}
		if v.p.has("source.kafka.request_timeout_overhead") {
			v.positiveDur("source.kafka.request_timeout_overhead", k.RequestTimeoutOverhead)
		}
	}
	if f := s.File; f != nil && f.Path == "" {
		v.errorf("source.file.path", `required ("-" reads standard input)`)
	}
	if g := s.Generate; g != nil {
		if g.Count < 0 {
			v.errorf("source.generate.count", "must not be negative, got %d", g.Count)
		}
		v.positive("source.generate.value_bytes", g.ValueBytes)
		v.positive("source.generate.keys", g.Keys)
		if g.Rate < 0 || math.IsNaN(g.Rate) || math.IsInf(g.Rate, 0) {
			v.errorf("source.generate.rate", "must be a finite number, 0 or more, got %v", g.Rate)
		}
	}
}

// badTopic says what is wrong with a Kafka topic name, or "".
func badTopic(t string) string {
	switch {
	case t == "":
		return "empty topic name"
	case t == "." || t == "..":
		return fmt.Sprintf("invalid topic name %q", t)
	case len(t) > 249:
		return fmt.Sprintf("topic name longer than 249 characters: %q...", t[:20])
	}
	for _, c := range t {
		if !(c == '.' || c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return fmt.Sprintf("invalid topic name %q: use only letters, digits, '.', '_' and '-'", t)
		}
	}
	return ""
}

func (v *validator) operators() {
	names := map[string]int{}
	for i, op := range v.p.Operators {
		path := fmt.Sprintf("operators[%d]", i)
		hasFilter := op.Filter != "" || v.p.has(path+".filter")
		v.exactlyOne(path, []string{"filter", "map", "route"}, []bool{hasFilter, op.Map != nil, op.Route != nil})
		if op.Name != "" {
			if j, dup := names[op.Name]; dup {
				v.errorf(path+".name", "duplicate operator name %q (also operators[%d])", op.Name, j)
			} else {
				names[op.Name] = i
			}
		}
		if op.Route != nil {
			v.errorf(path+".route", "not supported yet")
		}
		if hasFilter {
			if _, err := exprop.Filter(op.Filter); err != nil {
				v.errorf(path+".filter", "%s", exprMsg(err))
			}
		}
		if m := op.Map; m != nil {
			if m.Key == "" && m.Value == "" && len(m.Headers) == 0 {
				v.errorf(path+".map", "needs at least one of key, value, headers")
			}
			v.expr(path+".map.key", m.Key)
			v.expr(path+".map.value", m.Value)
			for _, name := range slices.Sorted(maps.Keys(m.Headers)) {
				src := m.Headers[name]
				hp := path + ".map.headers." + name
				if !validHeaderName(name) {
					v.errorf(hp, "invalid header name %q", name)
				}
				if src == "" {
					v.errorf(hp, "expression is empty")
				}
				v.expr(hp, src)
			}
		}
	}
}

func (v *validator) expr(path, src string) {
	if src == "" {
		return
	}
	if err := exprop.Check(src); err != nil {
		v.errorf(path, "%s", exprMsg(err))
	}
}

// exprMsg formats an expression error on one line.
func exprMsg(err error) string {
	var e *exprop.Error
	if !errors.As(err, &e) {
		return err.Error()
	}
	if e.Msg == "empty expression" {
		return "expression is empty"
	}
	msg := "invalid expression: " + e.Msg
	switch {
	case e.Line > 1:
		msg += fmt.Sprintf(" (line %d, column %d of the expression)", e.Line, e.Column)
	case e.Column > 0:
		msg += fmt.Sprintf(" (column %d of the expression)", e.Column)
	}
	return msg
}

func (v *validator) sink() {
	s := v.p.Sink
	v.exactlyOne("sink", []string{"http", "file", "stdout"}, []bool{s.HTTP != nil, s.File != nil, s.Stdout != nil})
	if h := s.HTTP; h != nil {
		v.fieldErrors("sink.http", h.Validate())
	}
	if f := s.File; f != nil {
		v.fieldErrors("sink.file", f.Validate())
	}

	if rl := s.RateLimit; rl != nil {
		v.fieldErrors("sink.rate_limit", rl.ValidateFor(s.Writer.MaxBatchSize, s.Writer.MaxInFlightRequests))
	}

	if cb := s.CircuitBreaker; cb != nil {
		if cb.FailureRatio < 0 || cb.FailureRatio > 1 || math.IsNaN(cb.FailureRatio) {
			v.errorf("sink.circuit_breaker.failure_ratio", "must be in (0, 1], got %v", cb.FailureRatio)
		}
		if cb.MinRequests < 0 {
			v.errorf("sink.circuit_breaker.min_requests", "must be positive, got %d", cb.MinRequests)
		}
		if cb.HalfOpenRequests < 0 {
			v.errorf("sink.circuit_breaker.half_open_requests", "must be positive, got %d", cb.HalfOpenRequests)
		}
		v.positiveDur("sink.circuit_breaker.interval", cb.Interval)
		v.positiveDur("sink.circuit_breaker.open_timeout", cb.OpenTimeout)
	}

	w := s.Writer
	v.positive("sink.writer.max_batch_size", w.MaxBatchSize)
	v.positive("sink.writer.max_batch_bytes", w.MaxBatchBytes)
	v.positive("sink.writer.max_in_flight_requests", w.MaxInFlightRequests)
	v.positive("sink.writer.max_buffered_requests", w.MaxBufferedRequests)
	v.positive("sink.writer.max_buffered_bytes", w.MaxBufferedBytes)
	v.positiveDur("sink.writer.max_time_in_buffer", w.MaxTimeInBuffer)
	v.positive("sink.writer.max_record_bytes", w.MaxRecordBytes)
	v.positiveDur("sink.writer.request_timeout", w.RequestTimeout)
	if w.MaxBatchSize > 0 && w.MaxBufferedRequests > 0 && w.MaxBufferedRequests <= w.MaxBatchSize {
		v.errorf("sink.writer.max_buffered_requests", "must be greater than max_batch_size (%d), got %d", w.MaxBatchSize, w.MaxBufferedRequests)
	}
	if w.MaxBatchBytes > 0 && w.MaxBufferedBytes > 0 && w.MaxBufferedBytes < w.MaxBatchBytes {
		v.errorf("sink.writer.max_buffered_bytes", "must be at least max_batch_bytes (%d), got %d", w.MaxBatchBytes, w.MaxBufferedBytes)
	}
	if w.MaxBatchBytes > 0 && w.MaxRecordBytes > w.MaxBatchBytes {
		v.errorf("sink.writer.max_record_bytes", "must not exceed max_batch_bytes (%d), got %d", w.MaxBatchBytes, w.MaxRecordBytes)
	}
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func (v *validator) errorsPolicy() {
	e := v.p.Errors
	v.oneOf("errors.tolerance", e.Tolerance, "none", "all")
	if e.Tolerance == "all" && e.DeadLetterTopic == "" {
		v.errorf("errors.dead_letter_topic", "required with tolerance all")
	}
	if e.DeadLetterTopic != "" {
		if msg := badTopic(e.DeadLetterTopic); msg != "" {
			v.errorf("errors.dead_letter_topic", "%s", msg)
		}
		if len(v.p.Brokers) == 0 {
			v.errorf("errors.dead_letter_topic", "requires brokers")
		}
		if k := v.p.Source.Kafka; k != nil {
			for _, t := range k.Topics {
				if t == e.DeadLetterTopic {
					v.errorf("errors.dead_letter_topic", "must differ from the source topic %q", t)
				}
			}
		}
	}
	v.positive("errors.max_attempts", e.MaxAttempts)
	v.positiveDur("errors.retry_backoff", e.RetryBackoff)
	v.positiveDur("errors.max_retry_backoff", e.MaxRetryBackoff)
	if e.RetryBackoff > 0 && e.MaxRetryBackoff > 0 && e.RetryBackoff > e.MaxRetryBackoff {
		v.errorf("errors.retry_backoff", "must not exceed max_retry_backoff (%s), got %s", e.MaxRetryBackoff, e.RetryBackoff)
	}
}

func orList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

func andList(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}
