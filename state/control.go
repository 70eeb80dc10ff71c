package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// LimitVersion is the version of LimitChange records this build writes
// and reads.
const LimitVersion = 1

// LimitChange is a control record: a live limit for every worker of a job,
// the value of the key <job> in the control topic (spillway limits set).
// Each dimension is a per-worker upper bound that replaces the configured
// one of the job's strategy; 0 leaves that dimension as configured. Clear
// goes back to the configured limits.
//
// Encoded as JSON, for example
//
//	{"version":1,"job":"orders","records_per_second":5000,"set_at":"2026-11-27T19:00:00Z"}
type LimitChange struct {
	Version          int       `json:"version"`
	Job              string    `json:"job"`
	RecordsPerSecond float64   `json:"records_per_second,omitempty"`
	BytesPerSecond   float64   `json:"bytes_per_second,omitempty"`
	Clear            bool      `json:"clear,omitempty"`
	SetAt            time.Time `json:"set_at"`
}

// maxRate bounds a rate: beyond it a limit means nothing.
const maxRate = 1e15

// Validate reports what is wrong with c: an unknown version, no job, a
// rate that is negative or too large, Clear together with a rate, or
// neither.
func (c LimitChange) Validate() error {
	var errs []error
	if c.Version != LimitVersion {
		errs = append(errs, fmt.Errorf("unsupported version %d (this build reads version %d)", c.Version, LimitVersion))
	}
	if c.Job == "" {
		errs = append(errs, errors.New("job: required"))
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"records_per_second", c.RecordsPerSecond}, {"bytes_per_second", c.BytesPerSecond}} {
		if r.v < 0 || r.v > maxRate || math.IsNaN(r.v) {
			errs = append(errs, fmt.Errorf("%s: must be a positive number up to %g, got %v", r.name, float64(maxRate), r.v))
		}
	}
	switch {
	case c.Clear && (c.RecordsPerSecond != 0 || c.BytesPerSecond != 0):
		errs = append(errs, errors.New("clear cannot be combined with a rate"))
	case !c.Clear && c.RecordsPerSecond == 0 && c.BytesPerSecond == 0:
		errs = append(errs, errors.New("no limit: set records_per_second or bytes_per_second, or clear"))
	}
	return errors.Join(errs...)
}

// String describes the change for logs and the CLI.
func (c LimitChange) String() string {
	if c.Clear {
		return "configured limits"
	}
	var b bytes.Buffer
	if c.RecordsPerSecond > 0 {
		fmt.Fprintf(&b, "records_per_second=%g", c.RecordsPerSecond)
	}
	if c.BytesPerSecond > 0 {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "bytes_per_second=%g", c.BytesPerSecond)
	}
	return b.String()
}

// ParseLimitChange decodes and validates the control record value of key
// (the job): strict JSON, no unknown field, the job matching the key.
func ParseLimitChange(key string, value []byte) (LimitChange, error) {
	var c LimitChange
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var v struct {
			Version int `json:"version"`
		}
		if json.Unmarshal(value, &v) == nil && v.Version > LimitVersion {
			return LimitChange{}, fmt.Errorf("unsupported version %d (this build reads version %d)", v.Version, LimitVersion)
		}
		return LimitChange{}, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return LimitChange{}, errors.New("decode: data after the JSON object")
	}
	if err := c.Validate(); err != nil {
		return LimitChange{}, err
	}
	if c.Job != key {
		return LimitChange{}, fmt.Errorf("job %q does not match the record key %q", c.Job, key)
	}
	return c, nil
}

// PublishLimitChange validates c and writes it to the control topic under
// the key c.Job, creating the topic (compacted, with partitions and rf)
// if it is missing. clientOpts name the brokers (kgo.SeedBrokers) and
// carry TLS and SASL. It returns once the brokers acknowledged the record.
func PublishLimitChange(ctx context.Context, clientOpts []kgo.Opt, topic string, partitions int32, rf int16, c LimitChange) error {
	if c.Version == 0 {
		c.Version = LimitVersion
	}
	if c.SetAt.IsZero() {
		c.SetAt = time.Now().UTC()
	}
	if err := c.Validate(); err != nil {
		return err
	}
	value, err := json.Marshal(c)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(slices.Clone(clientOpts), kgo.ProducerLinger(0))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	compact := "compact"
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, max(partitions, 1), rf, map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create control topic %s: %w", topic, err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(c.Job), Value: value}).FirstErr(); err != nil {
		return fmt.Errorf("write to control topic %s: %w", topic, err)
	}
	return nil
}

// StopVersion is the version of StopRequest records this build writes and
// reads.
const StopVersion = 1

// StopRequest is a control record asking every worker of a job to stop
// gracefully (drain what is in flight, commit, leave the group and exit
// 0), the value of the key StopKey(job) in the control topic: spillway
// savepoint create --stop writes it, waits until the group is empty and
// deletes it. A worker obeys only stop records written after it loaded
// the control topic, so one left behind does not stop workers started
// later.
//
// Encoded as JSON, for example
//
//	{"version":1,"job":"orders","savepoint":"sp-20261127T190000Z-3f2a","requested_at":"2026-11-27T19:00:00Z"}
type StopRequest struct {
	Version int    `json:"version"`
	Job     string `json:"job"`
	// Savepoint is the id of the savepoint taken once the workers left;
	// informative.
	Savepoint   string    `json:"savepoint,omitempty"`
	RequestedAt time.Time `json:"requested_at"`
}

// StopKey returns the control topic key of job's stop requests.
func StopKey(job string) string { return Key(job, "stop") }

// ParseStopRequest decodes and validates the stop record value of key:
// strict JSON, a known version, a time, the job matching the key.
func ParseStopRequest(key string, value []byte) (StopRequest, error) {
	var r StopRequest
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return StopRequest{}, fmt.Errorf("decode: %w", err)
	}
	switch {
	case dec.More():
		return StopRequest{}, errors.New("decode: data after the JSON object")
	case r.Version != StopVersion:
		return StopRequest{}, fmt.Errorf("unsupported version %d (this build reads version %d)", r.Version, StopVersion)
	case r.Job == "" || StopKey(r.Job) != key:
		return StopRequest{}, fmt.Errorf("job %q does not match the record key %q", r.Job, key)
	case r.RequestedAt.IsZero():
		return StopRequest{}, errors.New("requested_at: required")
	}
	return r, nil
}
