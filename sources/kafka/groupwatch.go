package kafka

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupWatch is the consumer client's hook (kgo.WithHooks) that says at warn
// why the worker is not consuming while its group membership is in trouble:
//
//   - every join, sync or heartbeat failure that ends a group session
//     (HookGroupManageError), with its reason: the first at once, then at
//     most one line per every with the count since and the last reason;
//     the first assignment after failures says how many there were;
//   - a JoinGroup or SyncGroup the coordinator has not answered for after,
//     then again every every while it waits: a coordinator holds a join
//     until every member of the group rejoined, or until the rebalance
//     timeout removes those that did not, so a worker that stopped while
//     joining holds the others that long without any error.
//
// Its methods are safe for concurrent use; close stops its timers.
type groupWatch struct {
	log       *slog.Logger
	after     time.Duration // first line about an unanswered join or sync
	every     time.Duration // at most one line per this, for each kind
	rebalance time.Duration // the configured rebalance timeout, for the text

	mu       sync.Mutex
	closed   bool
	failures int       // failures since the last assignment
	since    time.Time // first of them
	shown    time.Time // last failure line
	hidden   int       // failures since that line
	last     error
	waiting  map[int16]*unanswered // by request key
}

type unanswered struct {
	sent   time.Time
	timer  *time.Timer
	warned bool // a line said it was waiting
}

func newGroupWatch(log *slog.Logger, rebalance time.Duration) *groupWatch {
	return &groupWatch{log: log, after: 5 * time.Second, every: 10 * time.Second, rebalance: rebalance,
		waiting: map[int16]*unanswered{}}
}

var (
	_ kgo.HookGroupManageError = (*groupWatch)(nil)
	_ kgo.HookBrokerWrite      = (*groupWatch)(nil)
	_ kgo.HookBrokerRead       = (*groupWatch)(nil)
)

// OnGroupManageError implements kgo.HookGroupManageError.
func (g *groupWatch) OnGroupManageError(err error) {
	if errors.Is(err, context.Canceled) {
		return // leaving the group
	}
	now := time.Now()
	g.mu.Lock()
	if g.failures == 0 {
		g.since = now
	}
	g.failures++
	g.last = err
	if !g.shown.IsZero() && now.Sub(g.shown) < g.every {
		g.hidden++
		g.mu.Unlock()
		return
	}
	hidden := g.hidden
	g.shown, g.hidden = now, 0
	g.mu.Unlock()
	args := []any{"err", err}
	if hidden > 0 {
		args = append(args, "failures_since_last_line", hidden+1)
	}
	g.log.Warn("kafka group session failed (join, sync or heartbeat); the client rejoins", args...)
}

// assigned notes that the group assigned partitions again, saying so after
// failures.
func (g *groupWatch) assigned() {
	g.mu.Lock()
	n, since, last := g.failures, g.since, g.last
	g.failures, g.hidden, g.shown, g.last = 0, 0, time.Time{}, nil
	g.mu.Unlock()
	if n > 0 {
		g.log.Info("kafka group joined again", "failures", n, "after", time.Since(since).Round(time.Millisecond).String(), "last_err", last)
	}
}

func watched(key int16) bool {
	return key == int16(kmsg.JoinGroup) || key == int16(kmsg.SyncGroup)
}

// OnBrokerWrite implements kgo.HookBrokerWrite: a join or sync was sent.
func (g *groupWatch) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if !watched(key) || err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	if u := g.waiting[key]; u != nil {
		u.timer.Stop()
	}
	u := &unanswered{sent: time.Now()}
	u.timer = time.AfterFunc(g.after, func() { g.stillWaiting(key, u) })
	g.waiting[key] = u
}

// OnBrokerRead implements kgo.HookBrokerRead: the answer (or the
// connection's end) came.
func (g *groupWatch) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, _ error) {
	if !watched(key) {
		return
	}
	g.mu.Lock()
	u := g.waiting[key]
	delete(g.waiting, key)
	if u != nil {
		u.timer.Stop()
	}
	g.mu.Unlock()
	if u != nil && u.warned {
		g.log.Info("kafka group coordinator answered", "request", kmsg.NameForKey(key),
			"after", time.Since(u.sent).Round(time.Millisecond).String())
	}
}

func (g *groupWatch) stillWaiting(key int16, u *unanswered) {
	g.mu.Lock()
	if g.closed || g.waiting[key] != u {
		g.mu.Unlock()
		return
	}
	u.timer = time.AfterFunc(g.every, func() { g.stillWaiting(key, u) })
	u.warned = true
	g.mu.Unlock()
	g.log.Warn("kafka group coordinator has not answered; the worker consumes nothing meanwhile. "+
		"A coordinator completes a join once every member of the group rejoined, or after the rebalance timeout "+
		"removes those that did not: a worker that stopped while joining holds the others that long",
		"request", kmsg.NameForKey(key), "waiting", time.Since(u.sent).Round(time.Second).String(),
		"rebalance_timeout", g.rebalance.String())
}

// close stops the timers; later hook calls do nothing.
func (g *groupWatch) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for k, u := range g.waiting {
		u.timer.Stop()
		delete(g.waiting, k)
	}
}
