package job

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/kafkalog"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/state"
)

// The keys of a job's state, under "<job>/".
const (
	keyStrategy = "strategy" // the strategy's learnt state (backpressure.Stateful)
	keyLimits   = "limits"   // the live limit applied last (a state.LimitChange)
	keyBreaker  = "breaker"  // the breaker's last state and transitions
)

// breakerRecord is the breaker history a job saves: it cannot be put back
// into the breaker (a restarted worker probes the sink itself), but says
// what the last worker saw.
type breakerRecord struct {
	Version     int       `json:"version"`
	State       string    `json:"state"`
	Transitions int64     `json:"transitions"` // of the worker that saved it
	ChangedAt   time.Time `json:"changed_at"`  // when that worker saw the state change
}

// jobState keeps a job's state in a state.Store and applies live limit
// changes from the control topic. The store's keys are shared by the
// workers of a job: a restarted worker resumes from what any of them
// saved last.
type jobState struct {
	job      string
	store    state.Store
	control  *state.Kafka // nil without Kafka
	strategy backpressure.Strategy
	writer   *sinks.Writer
	log      *slog.Logger
	every    time.Duration
	member   *memberPublisher // nil without a Kafka source: no group to show

	// applying serialises applying live limits: the control reader's
	// goroutine may deliver a change while restore applies the one read
	// at start; whichever runs second reads or brings the newer value.
	applying sync.Mutex
	mu       sync.Mutex
	limit    *state.LimitChange // applied last; nil: the configured limits
	stop     *stopSignal        // fired by a stop record (savepoint.go)
}

// openState opens the job's store (kafka or memory, per state.kind) and
// control topic, and restores the live limit and the strategy's state.
func openState(ctx context.Context, cfg *config.Pipeline, env registry.Env, strat backpressure.Strategy, w *sinks.Writer, log *slog.Logger, kafkaLevel slog.Level) (*jobState, error) {
	sc := cfg.State
	sc.ApplyDefaults()
	_, kafkaSource := cfg.SourceTopics()
	js := &jobState{job: cfg.Name, strategy: strat, writer: w, log: log, every: sc.WriteInterval, stop: newStopSignal(time.Now())}
	// Live limits wait until the stores are open and restore has run.
	js.applying.Lock()
	defer js.applying.Unlock()
	if sc.Resolve(kafkaSource && env.KafkaOpts != nil) != state.KindKafka || env.KafkaOpts == nil {
		js.store = state.NewMemory()
		js.restore()
		return js, nil
	}
	open := func(topic, client string, onChange func(string, []byte)) (*state.Kafka, error) {
		kopts, err := env.KafkaOpts()
		if err != nil {
			return nil, err
		}
		kopts = append(kopts, kgo.WithLogger(kafkalog.Logger(log.With("client", client), kafkaLevel)))
		return state.OpenKafka(ctx, state.KafkaOptions{
			Topic: topic, Partitions: int32(sc.Partitions), ReplicationFactor: int16(sc.ReplicationFactor),
			ClientOpts: kopts, Log: log, OnChange: onChange,
			WriteInterval: sc.WriteInterval, RetryInterval: sc.RetryInterval, LoadTimeout: sc.LoadTimeout,
		})
	}
	// Both load at once: with Kafka down, the job starts after one
	// load_timeout, not two.
	var (
		store, control       *state.Kafka
		storeErr, controlErr error
		wg                   sync.WaitGroup
	)
	wg.Go(func() { store, storeErr = open(sc.Topic, "state", nil) })
	wg.Go(func() { control, controlErr = open(sc.ControlTopic, "control", js.onControl) })
	wg.Wait()
	if storeErr != nil || controlErr != nil {
		js.applying.Unlock() // the control reader may wait in onControl; Close waits for it
		defer js.applying.Lock()
		for _, s := range []*state.Kafka{store, control} {
			if s != nil {
				_ = s.Close(ctx)
			}
		}
		if storeErr != nil {
			return nil, fmt.Errorf("state: %w", storeErr)
		}
		return nil, fmt.Errorf("state.control_topic: %w", controlErr)
	}
	js.store, js.control = store, control
	js.restore()
	return js, nil
}

// restore applies the live limit (the control topic's, else the one
// saved) and then the strategy's saved state, which the limit bounds. The
// caller holds js.applying.
func (js *jobState) restore() {
	if js.control != nil {
		if v, ok := js.control.Get(js.job); ok {
			js.applyLimit(v)
		}
	}
	if js.currentLimit() == nil {
		if v, ok := js.store.Get(state.Key(js.job, keyLimits)); ok {
			js.applyLimit(v)
		}
	}
	if st, ok := js.strategy.(backpressure.Stateful); ok {
		if v, ok := js.store.Get(state.Key(js.job, keyStrategy)); ok {
			if err := st.RestoreState(v); err != nil {
				js.log.Warn("saved strategy state not restored", "err", err)
			} else {
				js.log.Info("strategy state restored", "state", string(v))
			}
		}
	}
	if v, ok := js.store.Get(state.Key(js.job, keyBreaker)); ok {
		var b breakerRecord
		if json.Unmarshal(v, &b) == nil && b.State != sinks.BreakerClosed.String() && b.State != sinks.BreakerNone.String() {
			js.log.Warn("the sink's circuit breaker was not closed when this job's state was last saved", "state", b.State, "since", b.ChangedAt)
		}
	}
}

// onControl applies a live limit record of the control topic (or the one
// saved): a record for another job is not ours; a malformed one is logged
// and changes nothing; one the strategy cannot apply is logged too.
func (js *jobState) onControl(key string, value []byte) {
	if js.stopRecord(key, value) {
		return
	}
	if key != js.job || value == nil { // another job's, or deleted: keep what is applied
		return
	}
	js.applying.Lock()
	defer js.applying.Unlock()
	if js.store == nil { // openState failed: the job will not run
		return
	}
	js.applyLimit(value)
}

// applyLimit applies and saves a live limit record; the caller holds
// js.applying.
func (js *jobState) applyLimit(value []byte) {
	c, err := state.ParseLimitChange(js.job, value)
	if err != nil {
		js.log.Warn("ignoring malformed live limit record", "topic", "control", "err", err, "value", string(value))
		return
	}
	ls, ok := js.strategy.(backpressure.LimitSetter)
	if !ok {
		js.log.Warn("live limit not applied: the strategy has no rate to limit", "strategy", fmt.Sprintf("%T", js.strategy), "limit", c.String())
		return
	}
	l := backpressure.Limits{RecordsPerSecond: c.RecordsPerSecond, BytesPerSecond: c.BytesPerSecond}
	if err := ls.SetLimits(l); err != nil {
		js.log.Warn("live limit not applied", "err", err, "limit", c.String())
		return
	}
	js.mu.Lock()
	if c.Clear {
		js.limit = nil
	} else {
		js.limit = &c
	}
	js.mu.Unlock()
	key := state.Key(js.job, keyLimits)
	if c.Clear {
		err = js.store.Delete(key)
	} else {
		err = js.store.Put(key, value)
	}
	if err != nil && !errors.Is(err, state.ErrClosed) {
		js.log.Warn("live limit not saved", "err", err)
	}
	js.log.Info("live limit applied", "limit", c.String(), "set_at", c.SetAt)
}

// currentLimit returns the live limit applied, nil for the configured one.
func (js *jobState) currentLimit() *state.LimitChange {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.limit
}

// status is the store's, or the control topic's when only it is degraded.
func (js *jobState) status() state.Status {
	st := js.store.Status()
	if !st.Degraded && js.control != nil {
		if cs := js.control.Status(); cs.Degraded {
			return cs
		}
	}
	return st
}

// run saves the strategy's state and the breaker's every write interval
// when they changed, until ctx ends, then once more.
func (js *jobState) run(ctx context.Context) {
	var lastStrategy []byte
	// The breaker record stays as the last worker saved it until this
	// worker's breaker changes state.
	lastBreaker := breakerRecord{State: js.writer.BreakerState().String(), Transitions: js.writer.Stats().BreakerTransitions.Load()}
	save := func() {
		if st, ok := js.strategy.(backpressure.Stateful); ok {
			if v := st.SaveState(); string(v) != string(lastStrategy) {
				if err := js.store.Put(state.Key(js.job, keyStrategy), v); err == nil {
					lastStrategy = v
				}
			}
		}
		b := breakerRecord{Version: 1, State: js.writer.BreakerState().String(), Transitions: js.writer.Stats().BreakerTransitions.Load()}
		if b.State != lastBreaker.State || b.Transitions != lastBreaker.Transitions {
			b.ChangedAt = time.Now().UTC()
			if v, err := json.Marshal(b); err == nil && js.store.Put(state.Key(js.job, keyBreaker), v) == nil {
				lastBreaker = b
			}
		}
	}
	t := time.NewTicker(js.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			save()
			if js.member != nil {
				// Stopped: not a member any more.
				if err := js.store.Delete(js.member.key); err != nil && !errors.Is(err, state.ErrClosed) {
					js.log.Debug("member record not deleted", "err", err)
				}
			}
			return
		case now := <-t.C:
			save()
			if js.member != nil {
				js.member.publish(js.store, now)
				if f, sh, ok := fairStrategy(js.strategy); ok {
					js.applyFair(f, sh, now)
				}
			}
		}
	}
}

// close writes what is pending and closes the store and control reader.
func (js *jobState) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	if js.control != nil {
		errs = append(errs, js.control.Close(ctx))
	}
	errs = append(errs, js.store.Close(ctx))
	return errors.Join(errs...)
}
