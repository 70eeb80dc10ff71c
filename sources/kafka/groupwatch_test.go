package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// lines is a slog handler keeping "LEVEL msg k=v ..." per record.
type lines struct {
	mu  sync.Mutex
	got []string
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *lines) WithGroup(string) slog.Handler            { return l }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, b.String())
	return nil
}

// take returns the lines logged since the last take.
func (l *lines) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.got
	l.got = nil
	return out
}

func expectLines(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d lines %q, want %d containing %q", len(got), got, len(want), want)
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Fatalf("line %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

// TestGroupWatchFailures: every failed group session is reported at warn
// with its reason, the first at once, then one line per 10s with the count;
// the next assignment says how many there were.
func TestGroupWatchFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l lines
		g := newGroupWatch(slog.New(&l), time.Minute)
		defer g.close()
		refused := errors.New("unable to dial: connection refused")
		g.OnGroupManageError(refused)
		expectLines(t, l.take(), "WARN kafka group session failed (join, sync or heartbeat); the client rejoins err="+refused.Error())
		for range 3 {
			time.Sleep(time.Second)
			g.OnGroupManageError(refused)
		}
		expectLines(t, l.take()) // within 10s of the first line
		time.Sleep(7 * time.Second)
		g.OnGroupManageError(errors.New("GROUP_AUTHORIZATION_FAILED"))
		expectLines(t, l.take(), "err=GROUP_AUTHORIZATION_FAILED failures_since_last_line=4")
		g.OnGroupManageError(context.Canceled) // leaving: not a failure
		expectLines(t, l.take())
		g.assigned()
		expectLines(t, l.take(), "INFO kafka group joined again failures=5 after=10s last_err=GROUP_AUTHORIZATION_FAILED")
		g.assigned()
		expectLines(t, l.take())
		g.OnGroupManageError(refused) // a new trouble is reported at once
		expectLines(t, l.take(), "WARN kafka group session failed")
	})
}

// TestGroupWatchUnansweredJoin: a JoinGroup the coordinator holds is
// reported after 5s and every 10s after that, with the rebalance timeout;
// its answer ends the reports. Other requests and answered joins say
// nothing.
func TestGroupWatchUnansweredJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l lines
		g := newGroupWatch(slog.New(&l), 45*time.Second)
		defer g.close()
		var meta kgo.BrokerMetadata
		join, sync, fetch := int16(kmsg.JoinGroup), int16(kmsg.SyncGroup), int16(kmsg.Fetch)

		g.OnBrokerWrite(meta, fetch, 100, 0, 0, nil)
		g.OnBrokerWrite(meta, sync, 100, 0, 0, nil)
		time.Sleep(time.Second)
		g.OnBrokerRead(meta, sync, 100, 0, 0, nil)
		time.Sleep(time.Minute)
		expectLines(t, l.take()) // a fetch that waits is normal; the sync was answered

		g.OnBrokerWrite(meta, join, 100, 0, 0, nil)
		time.Sleep(4 * time.Second)
		synctest.Wait()
		expectLines(t, l.take())
		time.Sleep(time.Second)
		synctest.Wait()
		expectLines(t, l.take(), "WARN kafka group coordinator has not answered")
		time.Sleep(10 * time.Second)
		synctest.Wait()
		expectLines(t, l.take(), "request=JoinGroup waiting=15s rebalance_timeout=45s")
		time.Sleep(3 * time.Second)
		g.OnBrokerRead(meta, join, 100, 0, 0, nil)
		expectLines(t, l.take(), "INFO kafka group coordinator answered request=JoinGroup after=18s")
		time.Sleep(time.Minute)
		expectLines(t, l.take())

		g.OnBrokerWrite(meta, join, 100, 0, 0, nil)
		g.close()
		time.Sleep(time.Minute)
		expectLines(t, l.take()) // closed: its timers stopped
	})
}
