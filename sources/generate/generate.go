// Package generate is a source of synthetic records for local runs,
// demos and benchmarks.
package generate

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"golang.org/x/time/rate"

	"github.com/spillway-io/spillway/checkpoint"
	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
)

// Config configures the generator: the keys of a pipeline file's
// source.generate section, plus fields a program sets (yaml:"-"). Zero
// values mean the default documented on each field; ApplyDefaults fills
// them in.
type Config struct {
	Count      int64   `yaml:"count" zero:"ok"` // records to emit; 0 = until ctx is cancelled
	ValueBytes int     `yaml:"value_bytes"`     // value size; default 100
	Keys       int     `yaml:"keys"`            // distinct keys; default 1000
	Rate       float64 `yaml:"rate" zero:"ok"`  // records/s, finite; 0 = as fast as the sink accepts
	BatchSize  int     `yaml:"-"`               // records per emit; default 500; with Rate at most a tenth of a second's worth
	Topic      string  `yaml:"-"`               // origin topic name; default "generate"
}

// ApplyDefaults replaces each zero field by its documented default. It is
// idempotent.
func (c *Config) ApplyDefaults() {
	if c.ValueBytes == 0 {
		c.ValueBytes = 100
	}
	if c.Keys == 0 {
		c.Keys = 1000
	}
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.Topic == "" {
		c.Topic = "generate"
	}
}

// Validate reports every invalid setting as a *field.Error with the
// setting's key, joined with errors.Join. Zero fields count as their
// defaults.
func (c Config) Validate() error {
	c.ApplyDefaults()
	var l field.List
	if c.Count < 0 {
		l.Add("count", "must not be negative, got %d", c.Count)
	}
	l.Positive("value_bytes", c.ValueBytes)
	l.Positive("keys", c.Keys)
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		l.Add("rate", "must be a finite number, 0 or more, got %v", c.Rate)
	}
	l.Positive("batch_size", c.BatchSize)
	return l.Err()
}

// Source emits JSON values {"id":N,"amount":M,"pad":"xx…"} padded to
// ValueBytes (a smaller ValueBytes gives the value with an empty pad), with
// keys key-(N mod Keys). Offsets are the sequence number. Run and Close are
// each called once, Run first.
type Source struct {
	cfg     Config
	tracker *checkpoint.Partition
}

// New applies cfg's defaults and validates it.
func New(cfg Config) (*Source, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("generate source: %w", err)
	}
	return &Source{cfg: cfg, tracker: checkpoint.NewPartition(0)}, nil
}

// Done returns how many leading records are done.
func (s *Source) Done() int64 {
	off, _ := s.tracker.Committable()
	return off
}

// Value builds the value of record i, exported for tests that check
// delivered content.
func Value(i int64, size int) []byte {
	v := fmt.Appendf(make([]byte, 0, size), `{"id":%d,"amount":%d,"pad":"`, i, i%1000)
	for len(v) < size-2 {
		v = append(v, 'x')
	}
	return append(v, '"', '}')
}

// Run emits records until Count is reached or ctx ends, and returns nil
// then; it returns emit's error if that is not ctx's.
//
// With a Rate, every batch waits for its records' share of time, the first
// one included, so Count records take Count/Rate seconds; batches then hold
// at most a tenth of a second's records (at least one), so a low rate is
// spread out rather than sent in bursts of BatchSize.
func (s *Source) Run(ctx context.Context, emit pipeline.Emit) error {
	size := int64(s.cfg.BatchSize)
	var lim *rate.Limiter
	if s.cfg.Rate > 0 {
		if per := s.cfg.Rate / 10; per < float64(size) {
			size = max(1, int64(per))
		}
		lim = rate.NewLimiter(rate.Limit(s.cfg.Rate), int(size))
		lim.AllowN(time.Now(), int(size)) // start with an empty bucket: no initial burst
	}
	var i int64
	for s.cfg.Count == 0 || i < s.cfg.Count {
		if ctx.Err() != nil { // the sink need not look at ctx
			return nil
		}
		n := size
		if s.cfg.Count > 0 {
			n = min(n, s.cfg.Count-i)
		}
		if lim != nil {
			if err := lim.WaitN(ctx, int(n)); err != nil {
				// ctx ended, or ends before the tokens are there: nothing
				// more is emitted, but the source is not exhausted.
				<-ctx.Done()
				return nil
			}
		}
		now := time.Now()
		batch := make([]pipeline.Record, n)
		for j := range batch {
			off := i + int64(j)
			s.tracker.Begin(off)
			batch[j] = pipeline.Record{
				Key:       strconv.AppendInt([]byte("key-"), off%int64(s.cfg.Keys), 10),
				Value:     Value(off, s.cfg.ValueBytes),
				Timestamp: now,
				Origin:    pipeline.Origin{Topic: s.cfg.Topic, Offset: off},
			}.WithAcker(s.tracker)
		}
		if err := emit(ctx, batch); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		i += n
	}
	return nil
}

// Close has nothing to commit.
func (s *Source) Close(context.Context) error { return nil }
