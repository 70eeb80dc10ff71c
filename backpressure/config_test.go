package backpressure

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/field"
	"go.yaml.in/yaml/v3"
)

func TestConfigValidate(t *testing.T) {
	three := 3
	neg := -1
	tests := []struct {
		name string
		cfg  Config
		want []string // every error, in order
	}{
		{"zero is none", Config{}, nil},
		{"unknown kind", Config{Kind: "leaky"},
			[]string{`kind: must be one of token_bucket, sliding_window, aimd, multi_tier, none, got "leaky"`}},
		{"token bucket without a rate", Config{Kind: KindTokenBucket},
			[]string{"records_per_second: a token bucket needs records_per_second or bytes_per_second"}},
		{"negative rate", Config{Kind: KindTokenBucket, RecordsPerSecond: -5},
			[]string{"records_per_second: must be a finite number not below 0, got -5"}},
		{"burst without its rate", Config{Kind: KindTokenBucket, RecordsPerSecond: 10, ByteBurst: 100},
			[]string{"byte_burst: only with bytes_per_second"}},
		{"field of another kind", Config{Kind: KindTokenBucket, RecordsPerSecond: 10, Window: time.Second, InitialLimit: 4},
			[]string{"window: only with kind sliding_window (kind is token_bucket)",
				"initial_limit: only with kind aimd (kind is token_bucket)"}},
		{"field with kind none", Config{RecordsPerSecond: 10},
			[]string{"records_per_second: only with kind token_bucket (kind is none)"}},
		{"sliding window", Config{Kind: KindSlidingWindow, Window: -time.Second, BytesPerWindow: -1},
			[]string{"window: must be positive, got -1s",
				"bytes_per_window: must not be negative, got -1"}},
		{"sliding window without a limit", Config{Kind: KindSlidingWindow, Window: time.Minute},
			[]string{"records_per_window: a sliding window needs records_per_window or bytes_per_window"}},
		{"aimd ranges", Config{Kind: KindAIMD, DecreaseFactor: 1, LatencySmoothing: 2, MinLimit: 10, MaxLimit: 5},
			[]string{"decrease_factor: must be above 0 and below 1, got 1",
				"latency_smoothing: must be above 0 and at most 1, got 2",
				"latency_smoothing: only with latency_tolerance",
				"min_limit: must not exceed max_limit (5), got 10"}},
		{"aimd initial above max", Config{Kind: KindAIMD, InitialLimit: 100, MaxLimit: 50},
			[]string{"initial_limit: must not exceed max_limit (50), got 100"}},
		{"multi-tier without tiers", Config{Kind: KindMultiTier},
			[]string{"multi_tier needs at least one of global, topic, partition, overrides"}},
		{"multi-tier tiers are validated with their path", Config{Kind: KindMultiTier,
			Global:    &Config{Kind: KindTokenBucket},
			Partition: &Config{Kind: KindMultiTier, Global: &Config{}},
			Overrides: []TierOverride{
				{Topic: "a", Limit: Config{Kind: KindAIMD, Increase: -1}},
				{Partition: &neg, Limit: Config{Kind: KindNone}},
				{Topic: "a", Partition: &three},
				{Topic: "a", Partition: &three},
			}},
			[]string{"global.records_per_second: a token bucket needs records_per_second or bytes_per_second",
				"partition.kind: multi_tier cannot be nested in a tier",
				"overrides[0].limit.increase: must not be negative, got -1",
				"overrides[1].topic: required",
				"overrides[1].partition: must be a partition number from 0, got -1",
				"overrides[3]: overrides the same tier as overrides[2]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			var got []string
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var fe *FieldError
					if !errors.As(e, &fe) {
						t.Errorf("error %v is not a *FieldError", e)
					}
					got = append(got, e.Error())
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Validate:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if _, nerr := New(tt.cfg, WriterLimits{MaxBatchSize: 500, MaxInFlightRequests: 8}); (nerr == nil) != (err == nil) {
				t.Errorf("New error %v, Validate error %v", nerr, err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	wl := WriterLimits{MaxBatchSize: 500, MaxInFlightRequests: 8}
	t.Run("none", func(t *testing.T) {
		for _, k := range []Kind{"", KindNone} {
			s := must(New(Config{Kind: k}, wl))
			if _, ok := s.(Unlimited); !ok {
				t.Errorf("kind %q built %T, want Unlimited", k, s)
			}
		}
	})
	t.Run("token bucket", func(t *testing.T) {
		// An unset burst is one batch (or PacingSlack of the rate, when
		// that is more): at most one request at once.
		s := must(New(Config{Kind: KindTokenBucket, RecordsPerSecond: 2500, BytesPerSecond: 1e6, ByteBurst: 4096}, wl))
		got := s.(*TokenBucket).Rate()
		want := TokenBucketConfig{RecordsPerSecond: 2500, RecordBurst: 500, BytesPerSecond: 1e6, ByteBurst: 4096}
		if got != want {
			t.Errorf("rate %+v, want %+v", got, want)
		}
		s = must(New(Config{Kind: KindTokenBucket, BytesPerSecond: 1e6}, WriterLimits{MaxBatchSize: 500, MaxBatchBytes: 1 << 20, MaxInFlightRequests: 8}))
		if got := s.(*TokenBucket).Rate(); got.ByteBurst != 1<<20 {
			t.Errorf("byte burst %d, want one batch (%d)", got.ByteBurst, 1<<20)
		}
		// At a rate where PacingSlack holds more than a batch, the burst
		// is PacingSlack of the rate.
		s = must(New(Config{Kind: KindTokenBucket, RecordsPerSecond: 200000, BytesPerSecond: 500e6}, WriterLimits{MaxBatchSize: 500, MaxBatchBytes: 1 << 20, MaxInFlightRequests: 8}))
		if got := s.(*TokenBucket).Rate(); got.RecordBurst != 2000 || got.ByteBurst != 5e6 {
			t.Errorf("bursts at 200,000 records/s and 500 MB/s: %d records, %d bytes; want 2,000 and 5,000,000 (10 ms of the rates)", got.RecordBurst, got.ByteBurst)
		}
	})
	t.Run("sliding window", func(t *testing.T) {
		s := must(New(Config{Kind: KindSlidingWindow, RecordsPerWindow: 600}, wl))
		if got := s.(*SlidingWindow).Limit(); got != (SlidingWindowConfig{Window: time.Second, Records: 600}) {
			t.Errorf("limit %+v", got)
		}
	})
	t.Run("aimd takes Flink's defaults from the writer", func(t *testing.T) {
		s := must(New(Config{Kind: KindAIMD}, wl))
		a := s.(*AIMD)
		if a.cfg.MaxLimit != 4000 || a.cfg.InitialLimit != 4000 || a.cfg.MinLimit != 1 ||
			a.cfg.Increase != 10 || a.cfg.DecreaseFactor != 0.5 || a.cfg.MaxInFlightRequests != 8 {
			t.Errorf("config %+v", a.cfg)
		}
	})
	t.Run("multi-tier with overrides", func(t *testing.T) {
		zero := 0
		s := must(New(Config{Kind: KindMultiTier,
			Global:    &Config{Kind: KindTokenBucket, RecordsPerSecond: 10000},
			Partition: &Config{Kind: KindAIMD},
			Overrides: []TierOverride{
				{Topic: "audit", Limit: Config{Kind: KindSlidingWindow, RecordsPerWindow: 100}},
				{Topic: "orders", Partition: &zero, Limit: Config{Kind: KindTokenBucket, RecordsPerSecond: 50}},
				{Topic: "orders", Partition: new(1), Limit: Config{Kind: KindNone}},
			}}, wl))
		m := s.(*MultiTier)
		if _, ok := m.Global().(*TokenBucket); !ok {
			t.Errorf("global tier %T", m.Global())
		}
		if tier, ok := m.Topic("audit").(*SlidingWindow); !ok || tier.Limit().Records != 100 {
			t.Errorf("topic audit tier %T", m.Topic("audit"))
		}
		if tier := m.Topic("other"); tier != nil {
			t.Errorf("topic without a template or override has tier %T", tier)
		}
		if tier, ok := m.Partition("orders", 0).(*TokenBucket); !ok || tier.Rate().RecordsPerSecond != 50 {
			t.Errorf("partition orders/0 tier %T", m.Partition("orders", 0))
		}
		if tier := m.Partition("orders", 1); tier != nil {
			t.Errorf("partition exempted with kind none has tier %T", tier)
		}
		if _, ok := m.Partition("orders", 2).(*AIMD); !ok {
			t.Errorf("partition orders/2 tier %T, want the template's AIMD", m.Partition("orders", 2))
		}
		if m.Partition("orders", 2) == m.Partition("orders", 3) {
			t.Error("two partitions share one tier instance")
		}
	})
	t.Run("writer settings", func(t *testing.T) {
		if _, err := New(Config{Kind: KindAIMD}, WriterLimits{MaxInFlightRequests: 8}); err == nil {
			t.Error("max_batch_size 0 accepted")
		}
	})
}

// TestConfigYAML decodes the documented example strictly, as the pipeline
// loader will, and builds it.
func TestConfigYAML(t *testing.T) {
	const doc = `
rate_limit:
  kind: multi_tier
  global:    {kind: token_bucket, records_per_second: 50000, bytes_per_second: 50_000_000}
  partition: {kind: aimd, latency_tolerance: 0.5}
  overrides:
    - {topic: audit, limit: {kind: sliding_window, records_per_window: 1000, window: 10s}}
    - {topic: orders, partition: 3, limit: {kind: token_bucket, records_per_second: 200}}
`
	var f struct {
		RateLimit Config `yaml:"rate_limit"`
	}
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatal(err)
	}
	c := f.RateLimit
	if c.Kind != KindMultiTier || c.Global.BytesPerSecond != 50e6 || c.Overrides[0].Limit.Window != 10*time.Second ||
		*c.Overrides[1].Partition != 3 || c.Partition.LatencyTolerance != 0.5 {
		t.Errorf("decoded %+v", c)
	}
	if _, err := New(c, WriterLimits{MaxBatchSize: 500, MaxInFlightRequests: 8}); err != nil {
		t.Fatal(err)
	}
	dec = yaml.NewDecoder(strings.NewReader("kind: token_bucket\nrecords_per_secnod: 5\n"))
	dec.KnownFields(true)
	if err := dec.Decode(new(Config)); err == nil {
		t.Error("a misspelt key decoded without error")
	}
}

func TestConfigApplyDefaults(t *testing.T) {
	c := Config{Kind: KindMultiTier,
		Global:    &Config{Kind: KindTokenBucket, RecordsPerSecond: 2500.5, BytesPerSecond: 1e6, ByteBurst: 4096},
		Topic:     &Config{Kind: KindSlidingWindow, RecordsPerWindow: 10},
		Partition: &Config{Kind: KindAIMD, LatencyTolerance: 0.5},
		Overrides: []TierOverride{
			{Topic: "a", Limit: Config{Kind: KindAIMD, MaxLimit: 100}},
			{Topic: "b", Limit: Config{}},
		}}
	c.ApplyDefaults()
	if g := c.Global; g.RecordBurst != 0 || g.ByteBurst != 4096 {
		t.Errorf("token bucket bursts %d, %d; want 0 (one batch, set by New), 4096 (as set)", g.RecordBurst, g.ByteBurst)
	}
	if c.Topic.Window != time.Second {
		t.Errorf("sliding window %v, want 1s", c.Topic.Window)
	}
	p := c.Partition
	if p.MinLimit != 1 || p.Increase != 10 || p.DecreaseFactor != 0.5 || p.LatencyDecreaseFactor != 0.9 || p.LatencySmoothing != 0.3 {
		t.Errorf("aimd with latency_tolerance %+v", *p)
	}
	if p.MaxLimit != 0 || p.InitialLimit != 0 {
		t.Errorf("aimd max_limit %d initial_limit %d: they need the writer, want 0", p.MaxLimit, p.InitialLimit)
	}
	o := c.Overrides[0].Limit
	if o.LatencyDecreaseFactor != 0 || o.LatencySmoothing != 0 || o.MaxLimit != 100 || o.InitialLimit != 0 {
		t.Errorf("aimd without latency_tolerance %+v", o)
	}
	if c.Overrides[1].Limit.Kind != KindNone {
		t.Errorf("empty kind %q, want none", c.Overrides[1].Limit.Kind)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaulted config invalid: %v", err)
	}
	before := c.clone()
	c.ApplyDefaults()
	if !reflect.DeepEqual(c, before) {
		t.Error("ApplyDefaults is not idempotent")
	}

	// Validate defaults a copy: the config, its tiers and overrides stay.
	u := Config{Kind: KindMultiTier, Global: &Config{Kind: KindSlidingWindow, RecordsPerWindow: 10},
		Overrides: []TierOverride{{Topic: "a", Limit: Config{Kind: KindAIMD}}}}
	if err := u.Validate(); err != nil {
		t.Fatal(err)
	}
	if u.Global.Window != 0 || u.Overrides[0].Limit.MinLimit != 0 {
		t.Errorf("Validate modified the config: %+v %+v", *u.Global, u.Overrides[0].Limit)
	}
}

func TestConfigValidateFor(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"not aimd", Config{Kind: KindTokenBucket, RecordsPerSecond: 1}, ""},
		{"within the default", Config{Kind: KindAIMD, InitialLimit: 20, MinLimit: 20}, ""},
		{"max_limit set", Config{Kind: KindAIMD, MaxLimit: 1000, InitialLimit: 100}, ""},
		{"initial above the default", Config{Kind: KindAIMD, InitialLimit: 100},
			"initial_limit: must not exceed max_limit, which defaults to max_batch_size × max_in_flight_requests = 20; got 100 (set max_limit to allow more)"},
		{"min above the default", Config{Kind: KindAIMD, MinLimit: 21},
			"min_limit: must not exceed max_limit, which defaults to max_batch_size × max_in_flight_requests = 20; got 21"},
		{"invalid first", Config{Kind: KindAIMD, InitialLimit: 100, Increase: -1}, "increase: must not be negative, got -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.ValidateFor(10, 2)
			got := ""
			if err != nil {
				got = err.Error()
				var fe *field.Error
				if !errors.As(err, &fe) {
					t.Errorf("%v is not a *field.Error", err)
				}
			}
			if got != tt.want {
				t.Errorf("ValidateFor(10, 2) = %q, want %q", got, tt.want)
			}
		})
	}
}
