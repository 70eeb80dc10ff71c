package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/state"
)

// Issue 13, item 5: savepoints, measured from outside: the receiver's
// counts and the group's committed offsets.

// savepointPipeline writes a pipeline file for topic and group into the
// receiver, with an AIMD strategy and state topics of its own.
func savepointPipeline(t *testing.T, c *cluster, topic, group, url, jobName string) string {
	return writeConfig(t, fmt.Sprintf(`
name: %s
brokers: %q
source:
  kafka:
    topics: [%s]
    group: %s
    checkpoint_interval: 100ms
    session_timeout: 6s
sink:
  http:
    url: %s
  writer:
    max_batch_size: 100
    max_in_flight_requests: 4
    max_buffered_requests: 1000
    max_time_in_buffer: 20ms
  rate_limit:
    kind: aimd
    max_limit: 1000
state:
  topic: %s
  control_topic: %s
  write_interval: 100ms
errors:
  max_attempts: 1000
  retry_backoff: 10ms
log:
  level: info
`, jobName, joinAddrs(c.Addrs), topic, group, url, name(t, "state"), name(t, "control")))
}

// cliOut runs the CLI and returns its exit code, stdout and stderr.
func cliOut(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(spillwayBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	_ = cmd.Run()
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// showSavepoint reads a savepoint through the CLI.
func showSavepoint(t *testing.T, path, id string) state.Savepoint {
	t.Helper()
	code, out, errs := cliOut(t, "savepoint", "show", id, "-c", path)
	if code != 0 {
		t.Fatalf("savepoint show %s: exit %d: %s", id, code, errs)
	}
	sp, err := state.ParseSavepoint("", []byte(out))
	if err != nil {
		t.Fatalf("savepoint show %s: %v\n%s", id, err, out)
	}
	return sp
}

// committedOffsets returns the group's committed offset per partition of topic.
func (c *cluster) committedOffsets(t *testing.T, group, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.admin(t).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	r.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			out[o.Partition] = o.At
		}
	})
	return out
}

func savepointOffsets(sp state.Savepoint, topic string) map[int32]int64 {
	out := map[int32]int64{}
	for _, o := range sp.Offsets {
		if o.Topic == topic {
			out[o.Partition] = o.Offset
		}
	}
	return out
}

func sameOffsets(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for p, o := range a {
		if b[p] != o {
			return false
		}
	}
	return true
}

// TestSavepointRoundTrip: a job delivers n records; a savepoint is taken
// (while it runs); m more records are delivered and the strategy's state
// changes; the job stops. A worker restored from the savepoint delivers
// exactly those m records again (and nothing before the savepoint), with
// the strategy state of the savepoint.
func TestSavepointRoundTrip(t *testing.T) {
	const n, m = 2000, 1500
	c := newCluster(t, 4)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 4)
	if err := c.produceRange(t, topic, 0, n, 500, 0); err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t)
	path := savepointPipeline(t, c, topic, group, rc.URL(), name(t, "job"))
	cfg, err := config.Load(path, config.WithRegistry(registry.Builtin()))
	if err != nil {
		t.Fatal(err)
	}
	j, stop := startJob(t, cfg)
	aimd, ok := j.Strategy.(*backpressure.AIMD)
	if !ok {
		t.Fatalf("strategy %T, want AIMD", j.Strategy)
	}
	waitFor(t, "the first records committed", time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok && rc.uniqueCount() == n
	})
	// A state to recognise: the job saves it within its write interval.
	aimd.SetLimit(37)
	saved := func(want string) func() bool {
		return func() bool {
			v, _ := j.StateStore().Get(state.Key(cfg.Name, "strategy"))
			return strings.Contains(string(v), want)
		}
	}
	waitFor(t, "the strategy state saved", 30*time.Second, saved(`"limit":37`))
	var sp state.Savepoint
	waitFor(t, "a savepoint with the saved state", 30*time.Second, func() bool {
		code, out, errs := cliOut(t, "savepoint", "create", "-c", path)
		if code != 0 {
			t.Fatalf("savepoint create: exit %d: %s", code, errs)
		}
		sp = showSavepoint(t, path, strings.TrimSpace(out))
		return strings.Contains(string(sp.State["strategy"]), `"limit":37`) // written to Kafka after the write interval
	})
	if sp.Total() != n || !sameOffsets(savepointOffsets(sp, topic), c.committedOffsets(t, group, topic)) || sp.Stopped {
		t.Fatalf("savepoint %+v: want the %d records committed", sp, n)
	}
	t.Logf("savepoint %s: %d records before it, state %s", sp.ID, sp.Total(), sp.State["strategy"])

	// More records, delivered once; the strategy moves on.
	aimd.SetLimit(900)
	if err := c.produceRange(t, topic, n, n+m, 500, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every record delivered and committed", time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok && rc.uniqueCount() == n+m
	})
	waitFor(t, "the new strategy state saved", 30*time.Second, func() bool { return !saved(`"limit":37`)() })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, dups, missing := rc.stats(n + m); dups != 0 || len(missing) != 0 {
		t.Fatalf("before the restore: %d duplicates, %d missing", dups, len(missing))
	}

	// Restore: the m records after the savepoint again, nothing else.
	w := startLogged(t, "run", "-c", path, "--from-savepoint", sp.ID, "-summary", "0")
	waitFor(t, "the records after the savepoint delivered again", time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		_, dups, _ := rc.stats(n + m)
		return ok && dups >= m
	})
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := w.wait(t, time.Minute); code != 0 {
		t.Fatalf("restored worker exit code %d", code)
	}
	unique, dups, missing := rc.stats(n + m)
	if unique != n+m || dups != m || len(missing) != 0 {
		t.Errorf("after the restore: %d unique, %d duplicates, %d missing; want %d, exactly the %d after the savepoint, 0", unique, dups, len(missing), n+m, m)
	}
	rc.mu.Lock()
	for id, times := range rc.seen {
		want := 1
		if id >= n { // after the savepoint
			want = 2
		}
		if times != want {
			t.Errorf("id %d received %d times, want %d", id, times, want)
			break
		}
	}
	rc.mu.Unlock()
	var restored, strategy bool
	for _, l := range w.parse(t) {
		switch l.msg {
		case "savepoint restored: the group resumes from its offsets":
			restored = l.attrs["savepoint"] == sp.ID && l.attrs["records_before"] == float64(n)
		case "strategy state restored":
			strategy = l.attrs["state"] == string(sp.State["strategy"])
		}
	}
	if !restored || !strategy {
		t.Errorf("restored worker's log: savepoint restored %v, strategy state %s restored %v", restored, sp.State["strategy"], strategy)
	}
	t.Logf("restored from %s: %d records delivered again (the %d after the savepoint), strategy state %s", sp.ID, dups, m, sp.State["strategy"])

	// An unknown id is refused.
	if code, _, errs := cliOut(t, "run", "-c", path, "--from-savepoint", "sp-unknown"); code != 1 || !strings.Contains(errs, `has no savepoint "sp-unknown"`) {
		t.Errorf("run --from-savepoint of an unknown id: exit %d: %s", code, errs)
	}
}

// TestSavepointStop: two workers deliver from one group; `savepoint create
// --stop` makes both drain and exit 0, and the savepoint's offsets are the
// group's committed offsets and exactly what the receiver got (nothing in
// flight, nothing delivered beyond them). Workers started afterwards
// deliver the rest, each record once.
func TestSavepointStop(t *testing.T) {
	const n = 30_000
	c := newCluster(t, 4)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 4)
	if err := c.produceRange(t, topic, 0, n, 1000, 0); err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t)
	// A slow receiver (about 4000 records/s for both workers): requests
	// are in flight when the stop arrives.
	var slow atomic.Bool
	slow.Store(true)
	rc.setHook(func(http.ResponseWriter, *http.Request, []int64) bool {
		if slow.Load() {
			time.Sleep(200 * time.Millisecond)
		}
		return false
	})
	path := savepointPipeline(t, c, topic, group, rc.URL(), name(t, "job"))
	workers := []*worker{startWorker(t, "run", "-c", path, "-summary", "0"), startWorker(t, "run", "-c", path, "-summary", "0")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitFor(t, "two members delivering", time.Minute, func() bool {
		ds, err := c.admin(t).DescribeGroups(ctx, group)
		return err == nil && len(ds[group].Members) == 2 && ds[group].State == "Stable" && rc.uniqueCount() > n/10
	})
	start := time.Now()
	code, out, errs := cliOut(t, "savepoint", "create", "-c", path, "--stop")
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("savepoint create --stop: exit %d: %s", code, errs)
	}
	for i, w := range workers {
		if code := w.wait(t, 30*time.Second); code != 0 {
			t.Errorf("worker %d exit code %d after the stop, want 0", i, code)
		}
	}
	sp := showSavepoint(t, path, strings.TrimSpace(out))
	if testing.Verbose() {
		for i, w := range workers {
			t.Logf("worker %d:\n%s", i, tail(w.out.String(), 3000))
		}
		t.Logf("savepoint create --stop:\n%s", errs)
	}
	committed := c.committedOffsets(t, group, topic)
	unique, dups, _ := rc.stats(n)
	t.Logf("savepoint %s (stopped %v) in %s: %d records before it; the receiver had %d (%d duplicates) of %d", sp.ID, sp.Stopped, took.Round(time.Millisecond), sp.Total(), unique, dups, n)
	if !sp.Stopped || !sameOffsets(savepointOffsets(sp, topic), committed) {
		t.Errorf("savepoint offsets %v, committed %v: want equal, stopped", savepointOffsets(sp, topic), committed)
	}
	if sp.Total() != int64(unique) || dups != 0 || unique >= n {
		t.Errorf("savepoint has %d records before it, the receiver got %d (%d duplicates): want the same, mid-stream, none twice", sp.Total(), unique, dups)
	}

	// Started again, the workers deliver the rest, once.
	slow.Store(false)
	w := startWorker(t, "run", "-c", path, "-summary", "0")
	waitFor(t, "the rest delivered and committed", time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	w.wait(t, time.Minute)
	if unique, dups, missing := rc.stats(n); unique != n || dups != 0 {
		t.Errorf("after the restart: %d unique, %d duplicates, %d missing; want %d, 0", unique, dups, len(missing), n)
	}
}
