package job

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/sources/kafka"
	"github.com/spillway-io/spillway/state"
)

// workerName names this worker in its Member record: the source's
// instance_id (static membership), else host-pid.
func workerName(cfg *config.Pipeline) string {
	if kc, ok := cfg.Source.Config.(*kafka.Config); ok && kc.InstanceID != "" {
		return kc.InstanceID
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", cmp.Or(host, "worker"), os.Getpid())
}

// strategyKind is the kind shown for the job's strategy.
func strategyKind(cfg *config.Pipeline) string {
	if rl := cfg.Sink.RateLimit; rl != nil {
		return rl.Kind
	}
	return string(backpressure.KindAdaptiveRate) + " (default pacing)"
}

// member describes this worker for its Member record (state.Member).
func (j *Job) member(worker, kind string) state.Member {
	m := state.NewMember(worker)
	if as, ok := j.src.(assignmentSource); ok {
		m.Partitions = as.Owned()
	}
	m.Strategy = kind
	m.Limits = currentLimits(j.Strategy)
	m.Scope = string(backpressure.ScopeWorker)
	if sh, ok := j.Strategy.(backpressure.Shared); ok && sh.GroupScoped() {
		m.Scope, m.Share = string(backpressure.ScopeGroup), sh.Share()
	}
	if f, _, ok := fairStrategy(j.Strategy); ok {
		m.Load, m.WantsMore = f.Load()
		m.Load = math.Round(m.Load) // whole units: a record that changes for less is not worth writing
	}
	m.LiveLimit = j.state.currentLimit()
	m.Breaker = j.writer.BreakerState().String()
	m.State = j.state.status()
	return m
}

// memberPublisher writes this worker's Member record when it changes and
// at least every state.MemberRefresh, and deletes it at the end.
type memberPublisher struct {
	key      string
	describe func() state.Member
	// refresh is how often the record is written when nothing changed:
	// state.MemberRefresh, or more often when the other workers read the
	// load in it for their fair shares (they ignore a record older than
	// memberFresh).
	refresh time.Duration
	last    state.Member
	written time.Time
}

// publish writes the record if it changed or is due.
func (p *memberPublisher) publish(store state.Store, now time.Time) {
	m := p.describe()
	if m.Same(p.last) && now.Sub(p.written) < cmp.Or(p.refresh, state.MemberRefresh) {
		return
	}
	m.UpdatedAt = now.UTC()
	if v, err := json.Marshal(m); err == nil && store.Put(p.key, v) == nil {
		p.last, p.written = m, now
	}
}
