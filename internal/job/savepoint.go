package job

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/sources/kafka"
	"github.com/spillway-io/spillway/state"
)

// Savepoints (spillway savepoint, run --from-savepoint): restoring one
// before the job consumes, and stopping gracefully when a stop record
// (savepoint create --stop) arrives on the control topic.

// restoreFrom names the savepoint a job starts from: an id in the state
// topic, or a file.
type restoreFrom struct {
	id, file string
}

// FromSavepoint makes Build restore the job's savepoint id (from the state
// topic) before anything is consumed: the group's committed offsets (only
// while the group is empty), then the job's state, which the strategy
// restores. Build fails, restoring nothing, for an unknown id, a savepoint
// of another job or group, a group with members, or a partition of the
// savepoint that no longer exists.
func FromSavepoint(id string) Option { return func(o *buildOpts) { o.restore = &restoreFrom{id: id} } }

// FromSavepointFile is FromSavepoint with a savepoint written to a file
// (savepoint create --file).
func FromSavepointFile(path string) Option {
	return func(o *buildOpts) { o.restore = &restoreFrom{file: path} }
}

// savepointTimeout bounds reading and restoring a savepoint.
const savepointTimeout = 30 * time.Second

// restoreSavepoint restores the savepoint r names for cfg's job: offsets,
// and state in the state and control topics when the job keeps its state
// in Kafka. With the state on memory it returns the state values, which
// the caller gives to the store it opens (jobState.preload).
func restoreSavepoint(ctx context.Context, cfg *config.Pipeline, env registry.Env, r restoreFrom, log *slog.Logger) (map[string][]byte, error) {
	src, ok := cfg.Source.Config.(*kafka.Config)
	if !ok || env.KafkaOpts == nil {
		return nil, fmt.Errorf("savepoint: the source is %s: only a Kafka source's consumer group can be restored", cfg.Source.Kind)
	}
	kopts, err := env.KafkaOpts()
	if err != nil {
		return nil, err
	}
	sps, err := state.OpenSavepoints(kopts, cfg.State)
	if err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	defer sps.Close()
	ctx, cancel := context.WithTimeout(ctx, savepointTimeout)
	defer cancel()
	var sp state.Savepoint
	if r.file != "" {
		b, err := os.ReadFile(r.file)
		if err != nil {
			return nil, fmt.Errorf("savepoint: %w", err)
		}
		if sp, err = state.ParseSavepoint("", b); err != nil {
			return nil, fmt.Errorf("%s: %w", r.file, err)
		}
	} else if sp, err = sps.Get(ctx, cfg.Name, r.id); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	switch {
	case sp.Job != cfg.Name:
		return nil, fmt.Errorf("savepoint %s belongs to job %q, not to this job %q", sp.ID, sp.Job, cfg.Name)
	case sp.Group != src.Group:
		return nil, fmt.Errorf("savepoint %s was taken of group %q, not of this job's group %q (source.kafka.group)", sp.ID, sp.Group, src.Group)
	}
	if err := sps.RestoreOffsets(ctx, sp, src.Topics, log); err != nil {
		return nil, err
	}
	_, kafkaSource := cfg.SourceTopics()
	var preload map[string][]byte
	if cfg.State.Resolve(kafkaSource) == state.KindKafka {
		if err := sps.RestoreState(ctx, sp); err != nil {
			return nil, fmt.Errorf("savepoint %s: offsets restored, state not: %w", sp.ID, err)
		}
	} else {
		preload = map[string][]byte{}
		for name, v := range sp.State {
			preload[name] = v
		}
	}
	log.Info("savepoint restored: the group resumes from its offsets", "savepoint", sp.ID, "created_at", sp.CreatedAt,
		"group", sp.Group, "partitions", len(sp.Offsets), "records_before", sp.Total(), "state", len(sp.State), "stopped", sp.Stopped)
	return preload, nil
}

// preload puts a savepoint's state values into a store that does not
// outlive the process (state.kind memory) and restores from them.
func (js *jobState) preload(values map[string][]byte) {
	js.applying.Lock()
	defer js.applying.Unlock()
	for name, v := range values {
		if err := js.store.Put(state.Key(js.job, name), v); err != nil {
			js.log.Warn("savepoint state not restored", "name", name, "err", err)
		}
	}
	js.restore()
}

// stopSignal is fired by a stop record on the control topic; Run drains
// when it fires. Safe for concurrent use.
type stopSignal struct {
	since time.Time // when the worker started reading the control topic
	once  sync.Once
	ch    chan struct{}
}

// stopGrace is how much older than the worker a stop record may be and
// still be obeyed: the clocks of the host that wrote it and this one may
// differ. Stop records read while loading the control topic are never
// obeyed; this only covers a worker that started without Kafka and reads
// the control topic later.
const stopGrace = time.Minute

func newStopSignal(now time.Time) *stopSignal {
	return &stopSignal{since: now, ch: make(chan struct{})}
}

// requested is closed when a stop was requested.
func (s *stopSignal) requested() <-chan struct{} { return s.ch }

func (s *stopSignal) fire() { s.once.Do(func() { close(s.ch) }) }

// stopRecord handles a control record of key StopKey(job), reporting
// whether key was one: a valid stop request written after this worker
// started fires js.stop. Records read while the control topic loaded at
// start never reach it.
func (js *jobState) stopRecord(key string, value []byte) bool {
	if key != state.StopKey(js.job) {
		return false
	}
	if value == nil || js.stop == nil { // deleted once the workers left
		return true
	}
	r, err := state.ParseStopRequest(key, value)
	switch {
	case err != nil:
		js.log.Warn("ignoring malformed stop record", "topic", "control", "err", err, "value", string(value))
	case r.RequestedAt.Before(js.stop.since.Add(-stopGrace)):
		js.log.Warn("ignoring a stop record older than this worker", "requested_at", r.RequestedAt, "savepoint", r.Savepoint)
	default:
		js.log.Info("stop requested through the control topic: draining, committing and leaving the group", "savepoint", r.Savepoint, "requested_at", r.RequestedAt)
		js.stop.fire()
	}
	return true
}

// stopOnRequest returns a context that ends with ctx or when a stop record
// arrives, and the func that releases it (waiting for its goroutine).
func (j *Job) stopOnRequest(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	if j.state == nil || j.state.stop == nil {
		return ctx, cancel
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-j.state.stop.requested():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(); <-done }
}

// StopRequested reports whether a stop record (savepoint create --stop)
// made the job drain.
func (j *Job) StopRequested() bool {
	if j.state == nil || j.state.stop == nil {
		return false
	}
	select {
	case <-j.state.stop.requested():
		return true
	default:
		return false
	}
}
