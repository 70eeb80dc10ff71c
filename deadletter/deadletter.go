// Package deadletter owns what happens to records that cannot be
// processed: the policy (errors.tolerance, as in Kafka Connect, and the
// dead-letter topic), the Kafka producer that stores them with headers
// saying where each came from and why it failed, and those header names.
//
// A Queue applies the policy. The pipeline's operator path and the
// writer's settle path both hand it failed records through its Send (they
// see it as a pipeline.DeadLetter): with tolerance none Send stores nothing
// and returns the error that fails the job; with tolerance all it produces
// the records and returns once the broker acknowledged them.
package deadletter

import (
	"context"
	"errors"
	"fmt"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/kafkaclient"
	"github.com/spillway-io/spillway/pipeline"
)

// Tolerance is errors.tolerance, as in Kafka Connect.
type Tolerance string

const (
	// ToleranceNone fails the job on the first record that cannot be
	// processed.
	ToleranceNone Tolerance = "none"
	// ToleranceAll dead-letters records that cannot be processed and goes
	// on.
	ToleranceAll Tolerance = "all"
)

// Config is the dead-letter policy: the tolerance and dead_letter_topic
// keys of a pipeline file's errors section. Zero values mean the default
// given on each field; ApplyDefaults is the one place those defaults live.
type Config struct {
	// Tolerance is none (default) or all.
	Tolerance Tolerance `yaml:"tolerance"`
	// Topic is where records go with tolerance all, which requires it. It
	// may be set with tolerance none too (a producer is then built but
	// unused).
	Topic string `yaml:"dead_letter_topic"`
}

// ApplyDefaults replaces each zero field by its default. It is idempotent
// and does not validate.
func (c *Config) ApplyDefaults() {
	if c.Tolerance == "" {
		c.Tolerance = ToleranceNone
	}
}

// Validate reports every invalid setting, each a *field.Error with a path
// relative to the errors section, joined with errors.Join. Zero fields
// count as their defaults. Whether brokers exist and the topic differs from
// the source's is for the caller that knows them.
func (c Config) Validate() error {
	c.ApplyDefaults()
	var l field.List
	l.OneOf("tolerance", string(c.Tolerance), string(ToleranceNone), string(ToleranceAll))
	if c.Tolerance == ToleranceAll && c.Topic == "" {
		l.Add("dead_letter_topic", "required with tolerance all")
	}
	if c.Topic != "" {
		if err := kafkaclient.CheckTopic(c.Topic); err != nil {
			l.Add("dead_letter_topic", "%v", err)
		}
	}
	return l.Err()
}

// ErrNotTolerated is what a Queue's errors wrap with tolerance none.
var ErrNotTolerated = errors.New("errors.tolerance none")

// Queue applies the dead-letter policy to records that could not be
// processed. It implements pipeline.DeadLetter; the pipeline and the
// writer both use it. It is safe for concurrent use if its producer is.
type Queue struct {
	cfg Config
	p   pipeline.DeadLetter
}

// NewQueue returns the Queue cfg describes (defaults applied), storing
// records with p, which may be nil with tolerance none (a *Producer
// writing to cfg.Topic in production). It does no I/O.
func NewQueue(cfg Config, p pipeline.DeadLetter) (*Queue, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dead letter: %w", err)
	}
	if cfg.Tolerance == ToleranceAll && p == nil {
		return nil, errors.New("dead letter: tolerance all needs a dead-letter producer")
	}
	return &Queue{cfg: cfg, p: p}, nil
}

// Config returns the effective policy, defaults applied.
func (q *Queue) Config() Config { return q.cfg }

// Send handles recs, which failed with f. With tolerance all it stores them
// with the producer and returns its error, if any, once the broker
// acknowledged them; the caller then acknowledges the originals. With
// tolerance none it stores nothing and returns an error saying the
// failure's class, wrapping ErrNotTolerated and f.Err: the caller fails the
// job and leaves the records unacknowledged.
func (q *Queue) Send(ctx context.Context, recs []pipeline.Record, f pipeline.Failure) error {
	if q.cfg.Tolerance != ToleranceAll {
		if f.Err == nil {
			return fmt.Errorf("%s failure (%w)", f.Class, ErrNotTolerated)
		}
		return fmt.Errorf("%s failure (%w): %w", f.Class, ErrNotTolerated, f.Err)
	}
	return q.p.Send(ctx, recs, f)
}
