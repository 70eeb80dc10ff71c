package config

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/state"
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
	d := *p // components validate defaulted copies of their own configs
	d.applyOwnDefaults()
	v := &validator{p: &d}
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
	v.errorf(path, "must be %s, got %q", field.OrList(allowed), got)
}

func (v *validator) pipeline() {
	p := v.p
	if strings.TrimSpace(p.Name) == "" {
		v.errorf("name", "required")
	}
	v.brokers()
	v.merge("kafka", p.Kafka.Validate())
	v.source()
	v.operators()
	v.sink()
	v.errorsPolicy()
	v.merge("state", p.State.Validate())
	if p.State.Kind == state.KindKafka && len(p.Brokers) == 0 {
		v.errorf("state.kind", "kafka needs brokers")
	}
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
	// The embedded section is used only with brokers: embedded, but allowed
	// (and checked) with real brokers too: a file like the quickstart picks
	// its brokers from the environment, ${SPILLWAY_BROKERS:embedded}.
	if p.Brokers.Embedded() || p.has("embedded") {
		if p.Embedded.Port < 0 || p.Embedded.Port > 65535 {
			v.errorf("embedded.port", "must be between 0 and 65535, got %d", p.Embedded.Port)
		}
		v.positive("embedded.partitions", p.Embedded.Partitions)
	}
	if p.Brokers.Embedded() {
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

// merge records the field errors of a component's Validate under prefix.
func (v *validator) merge(prefix string, err error) {
	for _, e := range field.Split(err) {
		var fe *field.Error
		if errors.As(e, &fe) {
			v.errorf(field.Join(prefix, fe.Path), "%s", fe.Msg)
		} else {
			v.errorf(prefix, "%v", e)
		}
	}
}

// component validates a kind's config, if it can validate itself.
func (v *validator) component(prefix string, cfg any) {
	if c, ok := cfg.(validater); ok {
		v.merge(prefix, c.Validate())
	}
}

// SourceTopics returns the Kafka topics the source reads and whether it
// reads Kafka at all (its config is a registry.TopicReader).
func (p *Pipeline) SourceTopics() ([]string, bool) {
	if t, ok := p.Source.Config.(registry.TopicReader); ok {
		return t.KafkaTopics(), true
	}
	return nil, false
}

func (v *validator) source() {
	s := v.p.Source
	kinds := kindNames(v.p.Registry().Sources(), func(e registry.Source) string { return e.Kind })
	g := chosen(s.given, s.Kind, s.Config)
	v.exactlyOneKind("source", kinds, g)
	for _, k := range g {
		v.component("source."+k.kind, k.cfg)
	}
	if _, ok := v.p.SourceTopics(); ok && len(v.p.Brokers) == 0 {
		v.errorf("brokers", "required with a %s source", s.Kind)
	}
}

func (v *validator) operators() {
	kinds := append(kindNames(v.p.Registry().Operators(), func(e registry.Operator) string { return e.Kind }), reservedOperators...)
	names := map[string]int{}
	for i, op := range v.p.Operators {
		path := fmt.Sprintf("operators[%d]", i)
		g := chosen(op.given, op.Kind, op.Config)
		v.exactlyOneKind(path, kinds, g)
		if op.Name != "" {
			if j, dup := names[op.Name]; dup {
				v.errorf(path+".name", "duplicate operator name %q (also operators[%d])", op.Name, j)
			} else {
				names[op.Name] = i
			}
		}
		for _, k := range g {
			if slices.Contains(reservedOperators, k.kind) {
				v.errorf(path+"."+k.kind, "not supported yet")
			} else {
				v.component(path+"."+k.kind, k.cfg)
			}
		}
	}
}

func (v *validator) sink() {
	s := v.p.Sink
	kinds := kindNames(v.p.Registry().Sinks(), func(e registry.Sink) string { return e.Kind })
	g := chosen(s.given, s.Kind, s.Config)
	v.exactlyOneKind("sink", kinds, g)
	for _, k := range g {
		v.component("sink."+k.kind, k.cfg)
		v.kafkaTarget("sink."+k.kind, k.cfg)
	}
	v.merge("sink.writer", s.Writer.Validate())
	w := s.Writer
	w.ApplyDefaults()
	for _, k := range g {
		if or, ok := k.cfg.(registry.OrderingRequirer); ok {
			if want, key, why := or.RequiredOrdering(); want != "" && w.Ordering != want {
				v.errorf("sink."+k.kind+"."+key, "as set, requires sink.writer.ordering: %s (got %q): %s", want, w.Ordering, why)
			}
		}
	}
	if rl := s.RateLimit; rl != nil && rl.Config != nil {
		if bc, ok := rl.Config.(*backpressure.Config); ok {
			// The built-in strategies' limits may default from the writer.
			v.merge("sink.rate_limit", bc.ValidateFor(w.MaxBatchSize, w.MaxInFlightRequests))
		} else {
			v.component("sink.rate_limit", rl.Config)
		}
		if key := groupScopeKey(rl.Config); key != "" {
			if _, kafkaSource := v.p.SourceTopics(); !kafkaSource {
				v.errorf("sink.rate_limit."+key, "group needs a Kafka source: the consumer group's partitions split the limit among its workers")
			}
		}
	}
	if cb := s.CircuitBreaker; cb != nil {
		v.merge("sink.circuit_breaker", cb.Validate())
	}
}

// groupScopeKey is the key, under sink.rate_limit, that declares a limit
// for the whole consumer group (scope: group), or "".
func groupScopeKey(cfg any) string {
	switch c := cfg.(type) {
	case *backpressure.Config:
		if c.Scope == backpressure.ScopeGroup {
			return "scope"
		}
		if c.Global != nil && c.Global.Scope == backpressure.ScopeGroup {
			return "global.scope"
		}
	case *backpressure.AdaptiveRateConfig:
		if c.Scope == backpressure.ScopeGroup {
			return "scope"
		}
	}
	return ""
}

// kafkaTarget checks a sink that produces to Kafka (registry.TopicWriter)
// against the rest of the pipeline: brokers to write to, and a fixed
// target topic that is neither a source topic of the same cluster (a
// loop) nor the dead-letter topic.
func (v *validator) kafkaTarget(prefix string, cfg any) {
	tw, ok := cfg.(registry.TopicWriter)
	if !ok {
		return
	}
	topic, key, brokers := tw.KafkaTarget()
	if len(brokers) == 0 && len(v.p.Brokers) == 0 {
		v.errorf("brokers", "required with a %s sink that has no brokers of its own", strings.TrimPrefix(prefix, "sink."))
	}
	if tx, ok := cfg.(interface{ KafkaTransactional() (key string, on bool) }); ok {
		// One transaction holds the records, the dead letters and the
		// source's offsets: all live on one cluster, read by one Kafka
		// source. The dead-letter topic is always on the pipeline's
		// brokers, the source's cluster; the sink must be too.
		if tkey, on := tx.KafkaTransactional(); on {
			if v.p.Source.Kind != "kafka" {
				v.errorf(field.Join(prefix, tkey), "exactly_once needs a kafka source (its offsets are committed in the sink's transactions), got source %q", v.p.Source.Kind)
			}
			if len(brokers) > 0 && !sameBrokers(brokers, v.p.Brokers) {
				msg := "with exactly_once the sink writes to the source's cluster: leave it empty or the same as brokers"
				if v.p.Errors.Config.Topic != "" {
					msg += " (errors.dead_letter_topic is on brokers too, and a transaction spans one cluster)"
				}
				v.errorf(field.Join(prefix, "brokers"), "%s", msg)
			}
		}
	}
	if topic == "" {
		return
	}
	path := field.Join(prefix, key)
	if len(brokers) == 0 || sameBrokers(brokers, v.p.Brokers) {
		topics, _ := v.p.SourceTopics()
		if slices.Contains(topics, topic) {
			v.errorf(path, "must differ from the source topic %q: the job would read what it writes (a loop)", topic)
		}
	}
	if topic == v.p.Errors.Config.Topic {
		v.errorf(path, "must differ from errors.dead_letter_topic %q", topic)
	}
}

// sameBrokers reports whether a and b name the same set of brokers.
func sameBrokers(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func (v *validator) errorsPolicy() {
	e := v.p.Errors
	v.merge("errors", e.Config.Validate())
	v.merge("errors", e.RetryConfig.Validate())
	if topic := e.Config.Topic; topic != "" {
		if len(v.p.Brokers) == 0 {
			v.errorf("errors.dead_letter_topic", "requires brokers")
		}
		topics, _ := v.p.SourceTopics()
		for _, t := range topics {
			if t == topic {
				v.errorf("errors.dead_letter_topic", "must differ from the source topic %q", t)
			}
		}
	}
}

func andList(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}
