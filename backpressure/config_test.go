package backpressure

import (
	"errors"
	"strings"
	"testing"
	"time"

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
			[]string{`rate_limit.kind: must be one of token_bucket, sliding_window, aimd, multi_tier, none, got "leaky"`}},
		{"token bucket without a rate", Config{Kind: KindTokenBucket},
			[]string{"rate_limit.records_per_second: a token bucket needs records_per_second or bytes_per_second"}},
		{"negative rate", Config{Kind: KindTokenBucket, RecordsPerSecond: -5},
			[]string{"rate_limit.records_per_second: must be a finite number not below 0, got -5"}},
		{"burst without its rate", Config{Kind: KindTokenBucket, RecordsPerSecond: 10, ByteBurst: 100},
			[]string{"rate_limit.byte_burst: only with bytes_per_second"}},
		{"field of another kind", Config{Kind: KindTokenBucket, RecordsPerSecond: 10, Window: time.Second, InitialLimit: 4},
			[]string{"rate_limit.window: only with kind sliding_window (kind is token_bucket)",
				"rate_limit.initial_limit: only with kind aimd (kind is token_bucket)"}},
		{"field with kind none", Config{RecordsPerSecond: 10},
			[]string{"rate_limit.records_per_second: only with kind token_bucket (kind is none)"}},
		{"sliding window", Config{Kind: KindSlidingWindow, Window: -time.Second, BytesPerWindow: -1},
			[]string{"rate_limit.window: must be positive, got -1s",
				"rate_limit.bytes_per_window: must not be negative, got -1"}},
		{"sliding window without a limit", Config{Kind: KindSlidingWindow, Window: time.Minute},
			[]string{"rate_limit.records_per_window: a sliding window needs records_per_window or bytes_per_window"}},
		{"aimd ranges", Config{Kind: KindAIMD, DecreaseFactor: 1, LatencySmoothing: 2, MinLimit: 10, MaxLimit: 5},
			[]string{"rate_limit.decrease_factor: must be above 0 and below 1, got 1",
				"rate_limit.latency_smoothing: must be above 0 and at most 1, got 2",
				"rate_limit.latency_smoothing: only with latency_tolerance",
				"rate_limit.min_limit: must not exceed max_limit (5), got 10"}},
		{"aimd initial above max", Config{Kind: KindAIMD, InitialLimit: 100, MaxLimit: 50},
			[]string{"rate_limit.initial_limit: must not exceed max_limit (50), got 100"}},
		{"multi-tier without tiers", Config{Kind: KindMultiTier},
			[]string{"rate_limit: multi_tier needs at least one of global, topic, partition, overrides"}},
		{"multi-tier tiers are validated with their path", Config{Kind: KindMultiTier,
			Global:    &Config{Kind: KindTokenBucket},
			Partition: &Config{Kind: KindMultiTier, Global: &Config{}},
			Overrides: []TierOverride{
				{Topic: "a", Limit: Config{Kind: KindAIMD, Increase: -1}},
				{Partition: &neg, Limit: Config{Kind: KindNone}},
				{Topic: "a", Partition: &three},
				{Topic: "a", Partition: &three},
			}},
			[]string{"rate_limit.global.records_per_second: a token bucket needs records_per_second or bytes_per_second",
				"rate_limit.partition.kind: multi_tier cannot be nested in a tier",
				"rate_limit.overrides[0].limit.increase: must not be negative, got -1",
				"rate_limit.overrides[1].topic: required",
				"rate_limit.overrides[1].partition: must be a partition number from 0, got -1",
				"rate_limit.overrides[3]: overrides the same tier as overrides[2]"}},
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
			if _, nerr := New(tt.cfg, 500, 8); (nerr == nil) != (err == nil) {
				t.Errorf("New error %v, Validate error %v", nerr, err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Run("none", func(t *testing.T) {
		for _, k := range []Kind{"", KindNone} {
			s := must(New(Config{Kind: k}, 500, 8))
			if _, ok := s.(Unlimited); !ok {
				t.Errorf("kind %q built %T, want Unlimited", k, s)
			}
		}
	})
	t.Run("token bucket", func(t *testing.T) {
		s := must(New(Config{Kind: KindTokenBucket, RecordsPerSecond: 2500, BytesPerSecond: 1e6, ByteBurst: 4096}, 500, 8))
		got := s.(*TokenBucket).Rate()
		want := TokenBucketConfig{RecordsPerSecond: 2500, RecordBurst: 2500, BytesPerSecond: 1e6, ByteBurst: 4096}
		if got != want {
			t.Errorf("rate %+v, want %+v", got, want)
		}
	})
	t.Run("sliding window", func(t *testing.T) {
		s := must(New(Config{Kind: KindSlidingWindow, RecordsPerWindow: 600}, 500, 8))
		if got := s.(*SlidingWindow).Limit(); got != (SlidingWindowConfig{Window: time.Second, Records: 600}) {
			t.Errorf("limit %+v", got)
		}
	})
	t.Run("aimd takes Flink's defaults from the writer", func(t *testing.T) {
		s := must(New(Config{Kind: KindAIMD}, 500, 8))
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
			}}, 500, 8))
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
		if _, err := New(Config{Kind: KindAIMD}, 0, 8); err == nil {
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
	if _, err := New(c, 500, 8); err != nil {
		t.Fatal(err)
	}
	dec = yaml.NewDecoder(strings.NewReader("kind: token_bucket\nrecords_per_secnod: 5\n"))
	dec.KnownFields(true)
	if err := dec.Decode(new(Config)); err == nil {
		t.Error("a misspelt key decoded without error")
	}
}
