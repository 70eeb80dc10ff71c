package backpressure_test

import (
	"strings"
	"testing"

	"github.com/spillway-io/spillway/backpressure"
)

var (
	_ backpressure.Shared = (*backpressure.TokenBucket)(nil)
	_ backpressure.Shared = (*backpressure.AdaptiveRate)(nil)
	_ backpressure.Shared = (*backpressure.MultiTier)(nil)
	_ backpressure.Shared = (*backpressure.Composite)(nil)
)

// TestTokenBucketShare: a group-scoped bucket applies its share of the
// configured rate and of a live limit; its bursts stay; a worker-scoped
// one refuses a share.
func TestTokenBucketShare(t *testing.T) {
	tb, err := backpressure.NewTokenBucket(backpressure.TokenBucketConfig{RecordsPerSecond: 1200, BytesPerSecond: 6000, RecordBurst: 500, Scope: backpressure.ScopeGroup})
	if err != nil {
		t.Fatal(err)
	}
	if !tb.GroupScoped() || tb.Share() != 1 {
		t.Fatalf("scoped %v share %v, want true 1", tb.GroupScoped(), tb.Share())
	}
	if err := tb.SetShare(0.25); err != nil {
		t.Fatal(err)
	}
	if r := tb.Rate(); r.RecordsPerSecond != 300 || r.BytesPerSecond != 1500 || r.RecordBurst != 500 {
		t.Errorf("share 0.25 of 1200 rec/s, 6000 B/s: %+v", r)
	}
	if err := tb.SetLimits(backpressure.Limits{RecordsPerSecond: 400}); err != nil {
		t.Fatal(err)
	}
	if r := tb.Rate(); r.RecordsPerSecond != 100 || r.BytesPerSecond != 1500 {
		t.Errorf("live group limit 400 at share 0.25: %+v", r)
	}
	if err := tb.SetShare(0.5); err != nil {
		t.Fatal(err)
	}
	if r := tb.Rate(); r.RecordsPerSecond != 200 || r.BytesPerSecond != 3000 {
		t.Errorf("live group limit 400 at share 0.5: %+v", r)
	}
	if err := tb.SetLimits(backpressure.Limits{}); err != nil {
		t.Fatal(err)
	}
	if r := tb.Rate(); r.RecordsPerSecond != 600 {
		t.Errorf("cleared limit at share 0.5: %+v", r)
	}
	for _, bad := range []float64{0, -0.5, 1.5} {
		if err := tb.SetShare(bad); err == nil || !strings.Contains(err.Error(), "must be in (0, 1]") {
			t.Errorf("SetShare(%v): %v", bad, err)
		}
	}
	if r := tb.Rate(); r.RecordsPerSecond != 600 {
		t.Errorf("a refused share changed the rate: %+v", r)
	}

	own, err := backpressure.NewTokenBucket(backpressure.TokenBucketConfig{RecordsPerSecond: 1200})
	if err != nil {
		t.Fatal(err)
	}
	if own.GroupScoped() {
		t.Error("a bucket without scope is group-scoped")
	}
	if err := own.SetShare(0.5); err == nil || own.Rate().RecordsPerSecond != 1200 {
		t.Errorf("worker-scoped SetShare: %v, rate %+v", err, own.Rate())
	}
}

// TestAdaptiveRateShare: the cap (max_rate, then a live limit) and the
// initial rate are the group's; the rate falls to the share at once.
func TestAdaptiveRateShare(t *testing.T) {
	a, err := backpressure.NewAdaptiveRate(backpressure.AdaptiveRateConfig{MaxRate: 8000, InitialRate: 4000, Scope: backpressure.ScopeGroup})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetShare(0.25); err != nil {
		t.Fatal(err)
	}
	if a.MaxRate() != 2000 || a.Rate() != 1000 {
		t.Errorf("share 0.25 of max 8000, initial 4000: max %v rate %v, want 2000 1000", a.MaxRate(), a.Rate())
	}
	if err := a.SetLimits(backpressure.Limits{RecordsPerSecond: 2000}); err != nil {
		t.Fatal(err)
	}
	if a.MaxRate() != 500 || a.Rate() != 500 {
		t.Errorf("live group limit 2000 at share 0.25: max %v rate %v, want 500 500", a.MaxRate(), a.Rate())
	}
	if err := a.SetShare(1); err != nil {
		t.Fatal(err)
	}
	if a.MaxRate() != 2000 || a.Rate() != 500 {
		t.Errorf("share 1: max %v rate %v, want 2000 (the rate adapts below it) 500", a.MaxRate(), a.Rate())
	}

	own, err := backpressure.NewAdaptiveRate(backpressure.AdaptiveRateConfig{MaxRate: 8000})
	if err != nil {
		t.Fatal(err)
	}
	if own.Rate() != 8000 {
		t.Errorf("max_rate 8000 without initial_rate: starts at %v, want the cap", own.Rate())
	}
	if err := own.SetShare(0.5); err == nil {
		t.Error("worker-scoped adaptive rate took a share")
	}
}

// TestMultiTierShare: the global tier's scope and share are the
// multi-tier's; scope group is refused on other tiers.
func TestMultiTierShare(t *testing.T) {
	w := backpressure.WriterLimits{MaxBatchSize: 100, MaxBatchBytes: 1 << 20, MaxInFlightRequests: 4}
	s, err := backpressure.New(backpressure.Config{Kind: backpressure.KindMultiTier,
		Global:    &backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 900, Scope: backpressure.ScopeGroup},
		Partition: &backpressure.Config{Kind: backpressure.KindAIMD}}, w)
	if err != nil {
		t.Fatal(err)
	}
	m := s.(*backpressure.MultiTier)
	if !m.GroupScoped() {
		t.Fatal("global tier scope group: multi-tier not group-scoped")
	}
	if err := m.SetShare(1.0 / 3); err != nil {
		t.Fatal(err)
	}
	if r := m.Global().(*backpressure.TokenBucket).Rate().RecordsPerSecond; r != 300 {
		t.Errorf("global tier at share 1/3 of 900: %v", r)
	}
	for _, c := range []struct {
		cfg  backpressure.Config
		want string
	}{
		{backpressure.Config{Kind: backpressure.KindMultiTier, Partition: &backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 5, Scope: backpressure.ScopeGroup}},
			"partition.scope: group applies to the global tier only"},
		{backpressure.Config{Kind: backpressure.KindMultiTier, Overrides: []backpressure.TierOverride{{Topic: "a", Limit: backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 5, Scope: backpressure.ScopeGroup}}}},
			"overrides[0].limit.scope: group applies to the global tier only"},
		{backpressure.Config{Kind: backpressure.KindTokenBucket, RecordsPerSecond: 5, Scope: "all"},
			`scope: must be "worker" or "group", got "all"`},
		{backpressure.Config{Kind: backpressure.KindAIMD, Scope: backpressure.ScopeGroup},
			"scope: only with kind token_bucket"},
	} {
		if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestAdaptiveRateFair: a fair share alone (no throttle) does not lower
// the rate; the load is the rate held.
func TestAdaptiveRateFair(t *testing.T) {
	a, err := backpressure.NewAdaptiveRate(backpressure.AdaptiveRateConfig{InitialRate: 1000, Scope: backpressure.ScopeGroup})
	if err != nil {
		t.Fatal(err)
	}
	a.SetFair(500)
	if r := a.Rate(); r != 1000 {
		t.Errorf("a fair share alone changed the rate: %v, want 1000", r)
	}
	if r, wants := a.Load(); r != 1000 || wants {
		t.Errorf("load of a strategy that never waited: %v %v, want its rate 1000, false", r, wants)
	}
}
