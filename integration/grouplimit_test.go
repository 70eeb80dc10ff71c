package integration

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// arrivals notes when the receiver accepted how many records from which
// worker (the X-Worker header each worker's sink sends).
type arrivals struct {
	mu  sync.Mutex
	log []arrival
}

type arrival struct {
	at     time.Time
	worker string
	n      int
}

// hook accepts every request and notes it.
func (a *arrivals) hook(rc *receiver) func(http.ResponseWriter, *http.Request, []int64) bool {
	return func(w http.ResponseWriter, r *http.Request, ids []int64) bool {
		rc.accept(r, ids)
		a.mu.Lock()
		a.log = append(a.log, arrival{time.Now(), r.Header.Get("X-Worker"), len(ids)})
		a.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		return true
	}
}

// rates returns the records per second accepted in [from, to), in all and
// per worker.
func (a *arrivals) rates(from, to time.Time) (all float64, per map[string]float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	per = map[string]float64{}
	secs := to.Sub(from).Seconds()
	for _, x := range a.log {
		if !x.at.Before(from) && x.at.Before(to) {
			all += float64(x.n) / secs
			per[x.worker] += float64(x.n) / secs
		}
	}
	return all, per
}

// TestGroupLimitSharedByWorkers (issue 13, item 3): three worker processes
// of one consumer group read a 12-partition topic through a token bucket
// of L records/s declared for the group (scope: group). Measured at the
// receiver: the workers' rates add up to L within 5% (each worker applies
// L × its partitions / 12); after one worker is killed (SIGKILL) the
// others take its partitions and its share within one rebalance, and the
// sum is L again. A live limit set for the job then is the group's too.
// Nothing is lost: every record arrives, and the group commits to the end.
func TestGroupLimitSharedByWorkers(t *testing.T) {
	const (
		limit = 3000 // L, records/s for the whole group
		parts = 12
	)
	warm, window := 4*time.Second, 8*time.Second
	if testing.Short() {
		t.Skip("runs three worker processes for about a minute; without -short it runs")
	}
	c := newCluster(t, parts)
	topic, group := name(t, "topic"), name(t, "group")
	job := name(t, "job")
	c.createTopic(t, topic, parts)
	n := limit * 60 // more than the test delivers before it lifts the limit: no partition runs dry meanwhile
	c.produce(t, topic, n, 100)
	rc := newReceiver(t)
	var arr arrivals
	rc.setHook(arr.hook(rc))

	config := func(worker string) string {
		return writeConfig(t, fmt.Sprintf(`
name: %s
brokers: %q
source:
  kafka:
    topics: [%s]
    group: %s
    checkpoint_interval: 200ms
    session_timeout: 6s
sink:
  http:
    url: %s
    headers: {X-Worker: %s}
  writer:
    max_batch_size: 100
    max_in_flight_requests: 4
  rate_limit:
    kind: token_bucket
    records_per_second: %d
    scope: group
log:
  level: info
`, job, joinAddrs(c.Addrs), topic, group, rc.URL(), worker, limit))
	}
	workers := map[string]*worker{}
	var cfgs []string
	for _, w := range []string{"w0", "w1", "w2"} {
		cfg := config(w)
		cfgs = append(cfgs, cfg)
		workers[w] = startWorker(t, "run", "-c", cfg, "-summary", "0")
	}
	// Warm-up: every worker joined and got its 4 partitions, and all
	// three have delivered for a while.
	waitFor(t, "three workers delivering", time.Minute, func() bool {
		now := time.Now()
		_, per := arr.rates(now.Add(-time.Second), now)
		return len(per) == 3
	})
	time.Sleep(warm)
	from := time.Now()
	time.Sleep(window)
	sum, per := arr.rates(from, from.Add(window))
	t.Logf("three workers: %.0f records/s in all over %v (L = %d: error %+.1f%%); per worker %s",
		sum, window, limit, 100*(sum-limit)/limit, fmtRates(per))
	if d := (sum - limit) / limit; d > 0.05 || d < -0.05 {
		t.Errorf("three workers delivered %.0f records/s in all, want L = %d ± 5%%", sum, limit)
	}
	for w, r := range per {
		// 4 partitions of 12 each: L/3.
		if d := (r - limit/3.0) / (limit / 3.0); d > 0.15 || d < -0.15 {
			t.Errorf("worker %s delivered %.0f records/s, want its share L/3 = %d ± 15%%", w, r, limit/3)
		}
	}

	// Kill one worker: the group gives its partitions to the others after
	// the session timeout, and their shares grow to cover L.
	killed := time.Now()
	if err := workers["w2"].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	workers["w2"].wait(t, 30*time.Second)
	var back time.Time
	waitFor(t, "the two others delivering L between them", 2*time.Minute, func() bool {
		now := time.Now()
		s, per := arr.rates(now.Add(-time.Second), now)
		if s >= 0.95*limit && per["w2"] == 0 {
			back = now
			return true
		}
		return false
	})
	t.Logf("killed w2: the others deliver L again %v after the kill (session timeout 6s)", back.Sub(killed).Round(10*time.Millisecond))
	from = time.Now()
	time.Sleep(window)
	sum, per = arr.rates(from, from.Add(window))
	t.Logf("two workers: %.0f records/s in all (error %+.1f%%); per worker %s", sum, 100*(sum-limit)/limit, fmtRates(per))
	if d := (sum - limit) / limit; d > 0.05 || d < -0.05 {
		t.Errorf("two workers delivered %.0f records/s in all, want L = %d ± 5%%", sum, limit)
	}

	// A live limit for the job is the group's too: double it.
	lw := startWorker(t, "limits", "set", "-c", cfgs[0], "--records-per-second", fmt.Sprint(2*limit))
	if code := lw.wait(t, time.Minute); code != 0 {
		t.Fatalf("limits set: exit %d: %s", code, lw.out.String())
	}
	time.Sleep(2 * time.Second)
	from = time.Now()
	time.Sleep(window / 2)
	sum, per = arr.rates(from, from.Add(window/2))
	t.Logf("live limit 2L: %.0f records/s in all (error %+.1f%%); per worker %s", sum, 100*(sum-2*limit)/(2*limit), fmtRates(per))
	if d := (sum - 2*limit) / (2 * limit); d > 0.05 || d < -0.05 {
		t.Errorf("after a live limit of 2L two workers delivered %.0f records/s in all, want 2L = %d ± 5%%", sum, 2*limit)
	}

	// Nothing lost: deliver the rest quickly, then all of it is there.
	lw = startWorker(t, "limits", "set", "-c", cfgs[0], "--records-per-second", "1000000")
	if code := lw.wait(t, time.Minute); code != 0 {
		t.Fatalf("limits set: exit %d: %s", code, lw.out.String())
	}
	waitFor(t, "all partitions committed to the end", 3*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	for _, w := range []string{"w0", "w1"} {
		if err := workers[w].cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := workers[w].wait(t, time.Minute); code != 0 {
			t.Errorf("worker %s: exit code after SIGTERM = %d, want 0", w, code)
		}
	}
	unique, dups, missing := rc.stats(n)
	if len(missing) > 0 {
		t.Fatalf("%d records lost, first %v", len(missing), missing[:min(10, len(missing))])
	}
	t.Logf("delivered %d unique, %d duplicates (the killed worker's records in flight)", unique, dups)
	if os.Getenv("SPILLWAY_TEST_VERBOSE") != "" {
		for _, w := range []string{"w0", "w1"} {
			t.Logf("worker %s:\n%s", w, tail(workers[w].out.String(), 3000))
		}
	}
}

// fmtRates formats per-worker rates, sorted by worker.
func fmtRates(per map[string]float64) string {
	var ws []string
	for w := range per {
		ws = append(ws, w)
	}
	slices.Sort(ws)
	var b strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&b, "%s=%.0f ", w, per[w])
	}
	return strings.TrimSpace(b.String())
}
