package integration

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMMidStream (issue 4, scenario 9): SIGTERM while the worker is
// delivering, with requests in flight and records still arriving. The
// process exits 0 after draining: every record it took is delivered and the
// committed offset of each partition is exactly the end of what was
// delivered (nothing in flight lost, nothing delivered left uncommitted). A
// restart delivers the rest without a single duplicate.
func TestSIGTERMMidStream(t *testing.T) {
	const parts = 4
	e := newFaultEnvOn(t, newCluster(t, parts), parts, 6000)
	var slow atomic.Bool
	slow.Store(true)
	e.rc.setHook(func(http.ResponseWriter, *http.Request, []int64) bool {
		if slow.Load() {
			time.Sleep(20 * time.Millisecond) // so the signal lands mid-stream
		}
		return false
	})
	cfg := writeConfig(t, fmt.Sprintf(`
name: sigterm-test
brokers: %q
source:
  kafka:
    topics: [%s]
    group: %s
    checkpoint_interval: 1h   # only the shutdown commit counts
    session_timeout: 6s
sink:
  http:
    url: %s
  writer:
    max_batch_size: 100
    max_in_flight_requests: 4
    max_buffered_requests: 2000
    max_time_in_buffer: 20ms
shutdown_timeout: 1m
log:
  level: warn
`, joinAddrs(e.c.Addrs), e.topic, e.group, e.rc.URL()))
	w := startWorker(t, "run", "-c", cfg, "-summary", "0")
	stopFeed := e.feed.keepProducing(t, 100, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 1500)
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := w.wait(t, time.Minute); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	atExit := e.rc.uniqueCount()
	n, err := stopFeed()
	if err != nil {
		t.Fatal(err)
	}
	if atExit >= n {
		t.Fatal("the worker delivered everything before the signal; it was not mid-stream")
	}
	// Committed = delivered, per partition: the frontier (first offset the
	// receiver has not seen) is the committed offset, and nothing at or
	// above it was delivered.
	got, want := e.committed(), e.feed.frontier(e.rc)
	for p := range int32(parts) {
		if got[p] == -1 && want[p] == 0 {
			continue // nothing delivered, nothing committed: a restart starts at 0
		}
		if got[p] != want[p] {
			t.Errorf("partition %d: committed %d, delivered up to %d", p, got[p], want[p])
		}
	}
	e.rc.mu.Lock()
	seen := make(map[int64]int, len(e.rc.seen))
	for id, c := range e.rc.seen {
		seen[id] = c
	}
	e.rc.mu.Unlock()
	for id := range int64(n) {
		at := e.feed.where(id)
		if seen[id] > 0 && at.off >= got[at.part] {
			t.Errorf("id %d at %d/%d was delivered but lies above the commit %d", id, at.part, at.off, got[at.part])
			break
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("SIGTERM after %d of %d records: exit 0, committed %v", atExit, n, got)

	// Restart: the rest arrives, and nothing twice.
	slow.Store(false)
	w2 := startWorker(t, "run", "-c", cfg, "-summary", "0")
	e.waitDelivered("all delivered after the restart", n)
	if err := w2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := w2.wait(t, time.Minute); code != 0 {
		t.Fatalf("restart: exit code %d after SIGTERM, want 0", code)
	}
	if !e.atEnd() {
		t.Fatalf("after the second graceful stop: committed %v, not at the end", e.committed())
	}
	unique, dups, missing := e.rc.stats(n)
	if len(missing) > 0 {
		t.Fatalf("%d records lost, first %v", len(missing), missing[:min(10, len(missing))])
	}
	if dups != 0 {
		t.Fatalf("%d duplicates after a graceful stop; the shutdown commit should make a restart resume exactly", dups)
	}
	t.Logf("SIGTERM mid-stream: %d records, %d delivered, 0 lost, 0 duplicates", n, unique)
}
