package backpressure_test

import (
	"strings"
	"testing"

	"github.com/spillway-io/spillway/backpressure"
)

var (
	_ backpressure.Stateful    = (*backpressure.AIMD)(nil)
	_ backpressure.Stateful    = (*backpressure.AdaptiveRate)(nil)
	_ backpressure.LimitSetter = (*backpressure.TokenBucket)(nil)
	_ backpressure.LimitSetter = (*backpressure.AdaptiveRate)(nil)
)

func TestAIMDState(t *testing.T) {
	newAIMD := func() *backpressure.AIMD {
		a, err := backpressure.NewAIMD(backpressure.AIMDConfig{MaxBatchSize: 100, MaxInFlightRequests: 10})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := newAIMD()
	a.SetLimit(230)
	saved := a.SaveState()
	b := newAIMD()
	if b.Limit() != 1000 {
		t.Fatalf("new AIMD at %d, want 1000", b.Limit())
	}
	if err := b.RestoreState(saved); err != nil {
		t.Fatal(err)
	}
	if b.Limit() != 230 {
		t.Errorf("restored limit %d, want 230", b.Limit())
	}
	for _, bad := range []string{
		`{"kind":"adaptive_rate","version":1,"rate":5}`,
		`{"kind":"aimd","version":2,"limit":5}`,
		`{"kind":"aimd","version":1,"limit":0}`,
		`not json`,
	} {
		if err := b.RestoreState([]byte(bad)); err == nil {
			t.Errorf("RestoreState(%s) accepted", bad)
		}
	}
	if b.Limit() != 230 {
		t.Errorf("a refused state changed the limit to %d", b.Limit())
	}
}

func TestAdaptiveRateState(t *testing.T) {
	newRate := func() *backpressure.AdaptiveRate {
		a, err := backpressure.NewAdaptiveRate(backpressure.AdaptiveRateConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := newRate()
	unlimited := a.SaveState()
	if err := a.SetRate(420); err != nil {
		t.Fatal(err)
	}
	saved := a.SaveState()
	b := newRate()
	if err := b.RestoreState(unlimited); err != nil || b.Rate() != 0 {
		t.Fatalf("restoring an unlimited state: %v, rate %v", err, b.Rate())
	}
	if err := b.RestoreState(saved); err != nil {
		t.Fatal(err)
	}
	if b.Rate() != 420 {
		t.Errorf("restored rate %v, want 420", b.Rate())
	}
	if err := b.RestoreState([]byte(`{"kind":"aimd","version":1,"limit":5}`)); err == nil {
		t.Error("restored an aimd state")
	}
}

func TestTokenBucketLimits(t *testing.T) {
	tb, err := backpressure.NewTokenBucket(backpressure.TokenBucketConfig{RecordsPerSecond: 1000, RecordBurst: 500})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		l          backpressure.Limits
		err        string
		rec, bytes float64
		byteBurst  int
	}{
		{backpressure.Limits{RecordsPerSecond: 100}, "", 100, 0, 0},
		{backpressure.Limits{BytesPerSecond: 5000}, "", 1000, 5000, 5000}, // records back to configured
		{backpressure.Limits{RecordsPerSecond: -1}, "must be finite numbers not below 0", 1000, 5000, 5000},
		{backpressure.Limits{}, "", 1000, 0, 0},
	}
	for i, s := range steps {
		err := tb.SetLimits(s.l)
		if (err == nil) != (s.err == "") || (err != nil && !strings.Contains(err.Error(), s.err)) {
			t.Fatalf("step %d: SetLimits(%+v) = %v, want %q", i, s.l, err, s.err)
		}
		r := tb.Rate()
		if r.RecordsPerSecond != s.rec || r.BytesPerSecond != s.bytes || r.ByteBurst != s.byteBurst || r.RecordBurst != 500 {
			t.Errorf("step %d: rate %+v, want records %v bytes %v byte burst %d record burst 500", i, r, s.rec, s.bytes, s.byteBurst)
		}
	}
}

func TestAdaptiveRateLimits(t *testing.T) {
	a, err := backpressure.NewAdaptiveRate(backpressure.AdaptiveRateConfig{MaxRate: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetLimits(backpressure.Limits{RecordsPerSecond: 50}); err != nil {
		t.Fatal(err)
	}
	if a.Rate() != 50 || a.MaxRate() != 50 {
		t.Errorf("after a limit of 50: rate %v, max %v", a.Rate(), a.MaxRate())
	}
	if err := a.SetRate(500); err != nil {
		t.Fatal(err)
	}
	if a.Rate() != 50 {
		t.Errorf("SetRate(500) under a limit of 50 gave %v", a.Rate())
	}
	if err := a.SetLimits(backpressure.Limits{BytesPerSecond: 10}); err == nil || !strings.Contains(err.Error(), "counts records") {
		t.Errorf("a bytes limit on a records rate: %v", err)
	}
	if err := a.SetLimits(backpressure.Limits{}); err != nil {
		t.Fatal(err)
	}
	if a.MaxRate() != 1000 || a.Rate() != 50 {
		t.Errorf("after clearing: max %v (want the configured 1000), rate %v (want 50: it adapts from there)", a.MaxRate(), a.Rate())
	}
}

func TestMultiTierAndCompositeLimits(t *testing.T) {
	tb, _ := backpressure.NewTokenBucket(backpressure.TokenBucketConfig{RecordsPerSecond: 1000})
	aimd, _ := backpressure.NewAIMD(backpressure.AIMDConfig{MaxBatchSize: 10})
	mt, err := backpressure.NewMultiTier(backpressure.Tiers{Global: tb})
	if err != nil {
		t.Fatal(err)
	}
	if err := mt.SetLimits(backpressure.Limits{RecordsPerSecond: 10}); err != nil || tb.Rate().RecordsPerSecond != 10 {
		t.Errorf("multi-tier: %v, global rate %v", err, tb.Rate().RecordsPerSecond)
	}
	noGlobal, _ := backpressure.NewMultiTier(backpressure.Tiers{Global: aimd})
	if err := noGlobal.SetLimits(backpressure.Limits{RecordsPerSecond: 10}); err == nil {
		t.Error("a multi-tier with an aimd global tier took a rate")
	}
	c, _ := backpressure.NewComposite(aimd, tb)
	if err := c.SetLimits(backpressure.Limits{RecordsPerSecond: 20}); err != nil || tb.Rate().RecordsPerSecond != 20 {
		t.Errorf("composite: %v, rate %v", err, tb.Rate().RecordsPerSecond)
	}
	only, _ := backpressure.NewComposite(aimd)
	if err := only.SetLimits(backpressure.Limits{RecordsPerSecond: 20}); err == nil {
		t.Error("a composite of aimd took a rate")
	}
}
