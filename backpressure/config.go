package backpressure

import (
	"cmp"
	"reflect"
	"strings"

	"errors"
	"fmt"
	"go.yaml.in/yaml/v3"
	"math"
	"time"

	"github.com/spillway-io/spillway/field"
)

// Kind names a strategy in configuration.
type Kind string

// The kinds of strategy Config can build.
const (
	KindNone          Kind = "none" // no limit (Unlimited); also the empty kind
	KindTokenBucket   Kind = "token_bucket"
	KindSlidingWindow Kind = "sliding_window"
	KindAIMD          Kind = "aimd"
	KindMultiTier     Kind = "multi_tier"
)

// ConfigKey is the key under which Config sits in a pipeline file's sink
// section. Validate's field paths are relative to it ("global.window"); the
// config loader puts them under "sink.rate_limit".
const ConfigKey = "rate_limit"

// Config is the YAML form of a strategy: a kind and the fields of that
// kind (setting a field of another kind is an error). Zero values mean the
// default given on each field; ApplyDefaults fills in those that do not
// depend on the writer, New the rest. It is plain data.
//
//	rate_limit:
//	  kind: multi_tier
//	  global:    {kind: token_bucket, records_per_second: 50000, bytes_per_second: 50_000_000}
//	  partition: {kind: aimd}
//	  overrides:
//	    - {topic: audit, limit: {kind: sliding_window, records_per_window: 1000, window: 1s}}
//	    - {topic: orders, partition: 3, limit: {kind: token_bucket, records_per_second: 200}}
type Config struct {
	Kind Kind `yaml:"kind"` // token_bucket | sliding_window | aimd | multi_tier | none; empty = none

	// kind token_bucket: at least one rate.
	RecordsPerSecond float64 `yaml:"records_per_second"` // 0 = records unlimited
	BytesPerSecond   float64 `yaml:"bytes_per_second"`   // 0 = bytes unlimited
	RecordBurst      int     `yaml:"record_burst"`       // default one second's worth
	ByteBurst        int     `yaml:"byte_burst"`         // default one second's worth
	// Scope: worker (default) or group, the rates then being the consumer
	// group's, split among its workers by the partitions each owns; at
	// the top level or in a multi-tier's global tier.
	Scope Scope `yaml:"scope"`

	// kind sliding_window: at least one limit.
	Window           time.Duration `yaml:"window"`             // default 1s
	RecordsPerWindow int           `yaml:"records_per_window"` // 0 = records unlimited
	BytesPerWindow   int           `yaml:"bytes_per_window"`   // 0 = bytes unlimited

	// kind aimd: records in flight, Flink's defaults.
	MaxLimit              int     `yaml:"max_limit"`               // default max_batch_size × max_in_flight_requests (filled in by New)
	InitialLimit          int     `yaml:"initial_limit"`           // default max_limit (filled in by New)
	MinLimit              int     `yaml:"min_limit"`               // default 1
	Increase              int     `yaml:"increase"`                // records per clean completion; default 10
	DecreaseFactor        float64 `yaml:"decrease_factor"`         // on throttling, timeouts, failed entries; default 0.5, in (0, 1)
	LatencyTolerance      float64 `yaml:"latency_tolerance"`       // > 0: RTT above baseline × (1 + this) is congestion; 0 = off
	LatencyDecreaseFactor float64 `yaml:"latency_decrease_factor"` // on latency congestion; default 0.9, in (0, 1)
	LatencySmoothing      float64 `yaml:"latency_smoothing"`       // RTT EWMA weight per sample; default 0.3, in (0, 1]

	// kind multi_tier: at least one tier. Each tier is a Config of kind
	// token_bucket, sliding_window, aimd or none (no tier); every topic and
	// every topic-partition gets its own instance of its template.
	Global    *Config        `yaml:"global"`    // the whole worker
	Topic     *Config        `yaml:"topic"`     // template for each topic
	Partition *Config        `yaml:"partition"` // template for each topic-partition
	Overrides []TierOverride `yaml:"overrides"` // replace the template for named topics or partitions
}

// TierOverride replaces a multi-tier template for one topic or one
// topic-partition.
type TierOverride struct {
	Topic     string `yaml:"topic"`     // required
	Partition *int   `yaml:"partition"` // absent: Topic's topic tier; present: that partition's tier
	Limit     Config `yaml:"limit"`     // kind none exempts the key from its template
}

// FieldError is an invalid setting: a *field.Error whose path is relative
// to the rate_limit section ("global.records_per_second").
type FieldError = field.Error

// join is field.Join, short.
func join(p, key string) string { return field.Join(p, key) }

// ApplyDefaults fills in every default that does not depend on the
// writer: kind none for an empty kind; for sliding_window the window
// (1s); for aimd min_limit (1), increase (10), decrease_factor (0.5) and,
// with latency_tolerance, latency_decrease_factor (0.9) and
// latency_smoothing (0.3); the same in every multi-tier tier and override.
// max_limit defaults from the writer's max_batch_size and
// max_in_flight_requests, which New takes, and initial_limit from
// max_limit, so New fills in both. Fields of another kind are left alone,
// for Validate to report. Idempotent.
func (c *Config) ApplyDefaults() {
	if c.Kind == "" {
		c.Kind = KindNone
	}
	switch c.Kind {
	case KindTokenBucket:
		// The bursts default to one batch, which New knows (WriterLimits).
		c.Scope = cmp.Or(c.Scope, ScopeWorker)
	case KindSlidingWindow:
		sw := c.slidingWindow()
		sw.setDefaults()
		c.Window = sw.Window
	case KindAIMD:
		a := c.aimd(0, 0)
		a.setDefaults()
		c.MinLimit, c.Increase, c.DecreaseFactor = a.MinLimit, a.Increase, a.DecreaseFactor
		if c.LatencyTolerance > 0 {
			c.LatencyDecreaseFactor, c.LatencySmoothing = a.LatencyDecreaseFactor, a.LatencySmoothing
		}
	case KindMultiTier:
		for _, t := range []*Config{c.Global, c.Topic, c.Partition} {
			if t != nil {
				t.ApplyDefaults()
			}
		}
		for i := range c.Overrides {
			c.Overrides[i].Limit.ApplyDefaults()
		}
	}
}

// clone copies c deeply enough that ApplyDefaults on the copy leaves c as
// it is.
func (c Config) clone() Config {
	for _, t := range []**Config{&c.Global, &c.Topic, &c.Partition} {
		if *t != nil {
			cp := (*t).clone()
			*t = &cp
		}
	}
	if c.Overrides != nil {
		o := make([]TierOverride, len(c.Overrides))
		for i, ov := range c.Overrides {
			ov.Limit = ov.Limit.clone()
			o[i] = ov
		}
		c.Overrides = o
	}
	return c
}

// Validate reports every invalid setting as a *field.Error with a path
// relative to the rate_limit section, joined with errors.Join. It checks a
// defaulted copy, so zero values are valid; the settings whose defaults
// need the writer are checked by ValidateFor and New.
func (c Config) Validate() error {
	var e field.List
	d := c.clone()
	d.ApplyDefaults()
	d.validate("", &e, true)
	return e.Err()
}

// ValidateFor is Validate followed, when that finds nothing, by the checks
// that need the writer's max_batch_size and max_in_flight_requests: an aimd
// initial_limit or min_limit above the max_limit they default to (New
// would silently cap it). Messages name the default's origin.
func (c Config) ValidateFor(maxBatchSize, maxInFlight int) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Kind != KindAIMD || c.MaxLimit != 0 {
		return nil
	}
	var e field.List
	def := maxBatchSize * maxInFlight
	if c.InitialLimit > def {
		e.Add("initial_limit", "must not exceed max_limit, which defaults to max_batch_size × max_in_flight_requests = %d; got %d (set max_limit to allow more)", def, c.InitialLimit)
	}
	if c.MinLimit > def {
		e.Add("min_limit", "must not exceed max_limit, which defaults to max_batch_size × max_in_flight_requests = %d; got %d", def, c.MinLimit)
	}
	return e.Err()
}

func (c Config) validate(p string, e *field.List, top bool) {
	kind := c.Kind
	if kind == "" {
		kind = KindNone
	}
	switch kind {
	case KindNone, KindTokenBucket, KindSlidingWindow, KindAIMD:
	case KindMultiTier:
		if !top {
			e.Add(join(p, "kind"), "multi_tier cannot be nested in a tier")
			return
		}
	default:
		e.Add(join(p, "kind"), "must be one of token_bucket, sliding_window, aimd, multi_tier, none, got %q", c.Kind)
		return
	}
	// A field of another kind is a mistake worth naming: it would be
	// silently ignored.
	for _, f := range c.fields() {
		if f.kind != "" && f.kind != kind && !f.v.IsZero() {
			e.Add(join(p, f.key), "only with kind %s (kind is %s)", f.kind, kind)
		}
	}
	switch kind {
	case KindTokenBucket:
		c.tokenBucket(WriterLimits{}).validate(p, e)
		if c.Scope != "" && c.Scope != ScopeWorker && c.Scope != ScopeGroup {
			e.Add(join(p, "scope"), "must be %q or %q, got %q", ScopeWorker, ScopeGroup, c.Scope)
		}
	case KindSlidingWindow:
		c.slidingWindow().validate(p, e)
	case KindAIMD:
		c.aimd(0, 0).validate(p, e)
	case KindMultiTier:
		c.validateTiers(p, e)
	}
}

func (c Config) validateTiers(p string, e *field.List) {
	if c.Global == nil && c.Topic == nil && c.Partition == nil && len(c.Overrides) == 0 {
		e.Add(p, "multi_tier needs at least one of global, topic, partition, overrides")
	}
	for _, t := range []struct {
		key string
		c   *Config
	}{{"global", c.Global}, {"topic", c.Topic}, {"partition", c.Partition}} {
		if t.c != nil {
			t.c.validate(join(p, t.key), e, false)
			if t.key != "global" {
				t.c.refuseGroupScope(join(p, t.key), e)
			}
		}
	}
	type okey struct {
		topic string
		part  int
	}
	seen := map[okey]int{}
	for i, o := range c.Overrides {
		op := fmt.Sprintf("%s[%d]", join(p, "overrides"), i)
		if o.Topic == "" {
			e.Add(join(op, "topic"), "required")
		}
		k := okey{o.Topic, -1}
		if o.Partition != nil {
			if *o.Partition < 0 || *o.Partition > math.MaxInt32 {
				e.Add(join(op, "partition"), "must be a partition number from 0, got %d", *o.Partition)
			}
			k.part = *o.Partition
		}
		if j, dup := seen[k]; dup && o.Topic != "" {
			e.Add(op, "overrides the same tier as overrides[%d]", j)
		}
		seen[k] = i
		o.Limit.validate(join(op, "limit"), e, false)
		o.Limit.refuseGroupScope(join(op, "limit"), e)
	}
}

// refuseGroupScope reports scope group on a tier that is not global: a
// topic's or a partition's tier limits what this worker sends of it.
func (c Config) refuseGroupScope(p string, e *field.List) {
	if c.Scope == ScopeGroup {
		e.Add(join(p, "scope"), "group applies to the global tier only: a topic's or a partition's tier limits one worker's sending")
	}
}

// tokenBucket is c's token bucket for a writer with limits w: a burst left
// at zero is one batch (max_batch_size records, max_batch_bytes bytes), or
// PacingSlack of the rate when that is more, so at most one request goes
// out at once after a quiet spell and a late wakeup does not lose rate;
// without w, one second of rate.
func (c Config) tokenBucket(w WriterLimits) TokenBucketConfig {
	tb := TokenBucketConfig{
		RecordsPerSecond: c.RecordsPerSecond, BytesPerSecond: c.BytesPerSecond,
		RecordBurst: c.RecordBurst, ByteBurst: c.ByteBurst, Scope: c.Scope,
	}
	slack := func(perSecond float64) int { return burstFor(perSecond * PacingSlack.Seconds()) }
	if tb.RecordBurst == 0 && tb.RecordsPerSecond > 0 && w.MaxBatchSize > 0 {
		tb.RecordBurst = max(w.MaxBatchSize, slack(tb.RecordsPerSecond))
	}
	if tb.ByteBurst == 0 && tb.BytesPerSecond > 0 && w.MaxBatchBytes > 0 {
		tb.ByteBurst = max(w.MaxBatchBytes, slack(tb.BytesPerSecond))
	}
	return tb
}

// PacingSlack is how late a paced send may go out without losing rate: a
// default burst holds at least this much of the rate, so that the tokens
// of a wakeup the scheduler delays are not lost. With a burst of one batch
// of 500 records, a writer paced at 200,000 records/s (a request every
// 2.5 ms) sent 79% of the rate; with 10 ms of the rate, 100%.
const PacingSlack = 10 * time.Millisecond

func (c Config) slidingWindow() SlidingWindowConfig {
	return SlidingWindowConfig{Window: c.Window, Records: c.RecordsPerWindow, Bytes: c.BytesPerWindow}
}

func (c Config) aimd(maxBatchSize, maxInFlight int) AIMDConfig {
	return AIMDConfig{
		MaxBatchSize: maxBatchSize, MaxInFlightRequests: maxInFlight,
		InitialLimit: c.InitialLimit, MaxLimit: c.MaxLimit, MinLimit: c.MinLimit,
		Increase: c.Increase, DecreaseFactor: c.DecreaseFactor,
		LatencyTolerance: c.LatencyTolerance, LatencyDecreaseFactor: c.LatencyDecreaseFactor,
		LatencySmoothing: c.LatencySmoothing,
	}
}

// WriterLimits are the writer settings some strategy defaults follow.
type WriterLimits struct {
	MaxBatchSize        int // records per request: AIMD's limits, a token bucket's record burst
	MaxBatchBytes       int // bytes per request: a token bucket's byte burst; 0 = one second of rate
	MaxInFlightRequests int // AIMD's limits
}

// New validates cfg and builds its strategy for a writer with limits w
// (max_batch_size and max_in_flight_requests size AIMD's defaults, as in
// Flink's AsyncSinkWriter; a token bucket's bursts default to one batch).
// Kind none gives Unlimited. It does no I/O.
// Validation errors are Validate's, paths relative to the rate_limit
// section. An aimd initial_limit or min_limit above the max_limit the
// writer's settings give is capped to it (ValidateFor reports it instead).
func New(cfg Config, w WriterLimits) (Strategy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if w.MaxBatchSize <= 0 || w.MaxInFlightRequests <= 0 || w.MaxBatchBytes < 0 {
		return nil, fmt.Errorf("%s: max_batch_size and max_in_flight_requests must be positive, got %d and %d", ConfigKey, w.MaxBatchSize, w.MaxInFlightRequests)
	}
	b := builder{w}
	if cfg.Kind != KindMultiTier {
		return b.build(cfg, "")
	}
	return b.multiTier(cfg)
}

type builder struct{ w WriterLimits }

type partKey struct {
	topic     string
	partition int32
}

// build makes the strategy of a validated, non-multi-tier cfg; nil for
// kind none inside a multi-tier.
func (b builder) build(cfg Config, p string) (Strategy, error) {
	var (
		s   Strategy
		err error
	)
	switch cfg.Kind {
	case KindTokenBucket:
		s, err = NewTokenBucket(cfg.tokenBucket(b.w))
	case KindSlidingWindow:
		s, err = NewSlidingWindow(cfg.slidingWindow())
	case KindAIMD:
		s, err = NewAIMD(cfg.aimd(b.w.MaxBatchSize, b.w.MaxInFlightRequests))
	default:
		return Unlimited{}, nil
	}
	if err != nil {
		if p == "" {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return s, nil
}

func (b builder) multiTier(cfg Config) (Strategy, error) {
	tier := func(c *Config, path string) (Strategy, error) {
		if c == nil || c.Kind == "" || c.Kind == KindNone {
			return nil, nil
		}
		return b.build(*c, path)
	}
	topicOver := map[string]*Config{}
	partOver := map[partKey]*Config{}
	for i := range cfg.Overrides {
		o := &cfg.Overrides[i]
		if o.Partition == nil {
			topicOver[o.Topic] = &o.Limit
		} else {
			partOver[partKey{o.Topic, int32(*o.Partition)}] = &o.Limit
		}
	}
	// Build every template and override once now, so that a factory called
	// later cannot fail.
	var errs []error
	check := func(c *Config, path string) {
		if _, err := tier(c, path); err != nil {
			errs = append(errs, err)
		}
	}
	check(cfg.Topic, "topic")
	check(cfg.Partition, "partition")
	for i := range cfg.Overrides {
		check(&cfg.Overrides[i].Limit, fmt.Sprintf("overrides[%d].limit", i))
	}
	global, err := tier(cfg.Global, "global")
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	mustTier := func(c *Config) Strategy {
		s, err := tier(c, "")
		if err != nil {
			panic("backpressure: tier built once failed later: " + err.Error())
		}
		if s == nil {
			return nil // a nil *T in a Strategy would not compare equal to nil
		}
		return s
	}
	t := Tiers{Global: global}
	if cfg.Topic != nil || len(topicOver) > 0 {
		t.Topic = func(topic string) Strategy {
			if c, ok := topicOver[topic]; ok {
				return mustTier(c)
			}
			return mustTier(cfg.Topic)
		}
	}
	if cfg.Partition != nil || len(partOver) > 0 {
		t.Partition = func(topic string, partition int32) Strategy {
			if c, ok := partOver[partKey{topic, partition}]; ok {
				return mustTier(c)
			}
			return mustTier(cfg.Partition)
		}
	}
	if t.Global == nil && t.Topic == nil && t.Partition == nil {
		// Every tier is of kind none.
		return Unlimited{}, nil
	}
	return NewMultiTier(t)
}

// keyKind names the kind each key of Config belongs to; kind itself
// belongs to every kind.
var keyKind = map[string]Kind{
	"records_per_second": KindTokenBucket, "bytes_per_second": KindTokenBucket,
	"record_burst": KindTokenBucket, "byte_burst": KindTokenBucket, "scope": KindTokenBucket,
	"window": KindSlidingWindow, "records_per_window": KindSlidingWindow, "bytes_per_window": KindSlidingWindow,
	"initial_limit": KindAIMD, "max_limit": KindAIMD, "min_limit": KindAIMD, "increase": KindAIMD,
	"decrease_factor": KindAIMD, "latency_tolerance": KindAIMD, "latency_decrease_factor": KindAIMD,
	"latency_smoothing": KindAIMD,
	"global":            KindMultiTier, "topic": KindMultiTier, "partition": KindMultiTier, "overrides": KindMultiTier,
}

// configField is one key of a Config with its value.
type configField struct {
	key  string
	kind Kind // "" for kind itself
	v    reflect.Value
}

// fields lists c's keys in declaration order.
func (c Config) fields() []configField {
	v := reflect.ValueOf(c)
	t := v.Type()
	out := make([]configField, 0, t.NumField())
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		out = append(out, configField{key: key, kind: keyKind[key], v: v.Field(i)})
	}
	return out
}

// MarshalYAML writes kind and the keys of that kind only, so a printed
// config (spillway validate --print, config defaults) shows what applies.
func (c Config) MarshalYAML() (any, error) {
	kind := cmp.Or(c.Kind, KindNone)
	n := &yaml.Node{Kind: yaml.MappingNode}
	for _, f := range c.fields() {
		if f.kind != "" && f.kind != kind {
			continue
		}
		var v yaml.Node
		val := f.v.Interface()
		if f.key == "kind" {
			val = kind
		}
		if err := v.Encode(val); err != nil {
			return nil, err
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: f.key}, &v)
	}
	return n, nil
}
