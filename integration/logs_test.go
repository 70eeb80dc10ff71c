package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Messages of the writer's summary lines (sinks/writer.go, sinks/breaker.go).
const (
	msgFailing = "sink requests failing; records kept and retried"
	msgBreaker = "circuit breaker state changed"
	// summaryEvery is the writer's interval between two summary lines of a
	// kind (sinks/logsummary.go); gaps are checked with a little slack for
	// the clocks of log lines and of the writer.
	summaryEvery = 10 * time.Second
	summarySlack = 200 * time.Millisecond
)

// durationKey matches the attribute names that hold durations; their
// values must be text ("150ms"), not the JSON handler's nanoseconds.
var durationKey = regexp.MustCompile(`(?i)(^|_)(after|over|down|wait|waited|timeout|elapsed|took|duration|latency|backoff|interval|delay|age|uptime|since)$`)

// textLogLine matches a log line written as text: slog's default logger
// (log's date prefix) or its text handler.
var textLogLine = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |(^|\s)level=(DEBUG|INFO|WARN|ERROR)\b`)

// logLine is one JSON line of a worker's stderr.
type logLine struct {
	time  time.Time
	level string
	msg   string
	attrs map[string]any
	raw   string
}

// stderrLines runs the CLI with args and collects its stderr lines as they
// come; stdout is discarded.
type stderrLines struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when stderr is closed
	mu   sync.Mutex
	raw  []string
}

func startLogged(t *testing.T, args ...string) *stderrLines {
	t.Helper()
	p := &stderrLines{cmd: exec.Command(spillwayBin, args...), done: make(chan struct{})}
	p.cmd.Stdout = io.Discard
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.raw = append(p.raw, sc.Text())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
			_ = p.cmd.Wait()
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("worker stderr (tail):\n%s", tail(strings.Join(p.raw, "\n"), 6000))
			p.mu.Unlock()
		}
	})
	return p
}

// wait waits for the process to exit (its stderr read to the end) and
// returns the exit code.
func (p *stderrLines) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("worker did not exit within %v", limit)
	}
	_ = p.cmd.Wait()
	return p.cmd.ProcessState.ExitCode()
}

// parse decodes every line; one that is not a JSON object fails t.
func (p *stderrLines) parse(t *testing.T) []logLine {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []logLine
	for _, raw := range p.raw {
		if strings.TrimSpace(raw) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			// The final report is text; a log line must be JSON.
			if textLogLine.MatchString(raw) {
				t.Errorf("log line is not JSON (log.format: json): %.200q", raw)
			}
			continue
		}
		l := logLine{raw: raw, attrs: m}
		l.level, _ = m["level"].(string)
		l.msg, _ = m["msg"].(string)
		ts, _ := m["time"].(string)
		var err error
		if l.time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("line without a time: %.200q", raw)
		}
		out = append(out, l)
	}
	return out
}

// numericDurations returns the duration-named attributes of m (and of its
// groups) whose values are numbers, as "path=value".
func numericDurations(m map[string]any, prefix string) []string {
	var bad []string
	for k, v := range m {
		switch v := v.(type) {
		case map[string]any:
			bad = append(bad, numericDurations(v, prefix+k+".")...)
		case float64:
			if durationKey.MatchString(k) {
				bad = append(bad, fmt.Sprintf("%s%s=%v", prefix, k, v))
			}
		}
	}
	return bad
}

// TestLogsActionable (finding 8): a worker (log.format json, level debug)
// sends to a receiver that first fails half of its requests with 500, then
// is down (connections closed unanswered) for stretches separated by
// short recoveries, so the circuit
// breaker opens and closes several times. Read from the process's stderr:
// the first failure gives one info line at once, with counts and the last
// error; later ones at most one line per 10 s; breaker transitions are
// collapsed the same way, with counts; every duration is text. Nothing is
// lost and the worker exits 0 on SIGTERM. SPILLWAY_LOGS_DUMP=1 logs the
// receiver's requests per second and the lines above debug.
func TestLogsActionable(t *testing.T) {
	const (
		flakyFor   = 6 * time.Second // 500 for every other request
		downFor    = 2 * time.Second // then no answer (connection closed, or 503) to any request...
		upFor      = time.Second     // ...with a short recovery after each stretch
		downCycles = 4
		produceFor = flakyFor + downCycles*(downFor+upFor)
		perTick    = 100
		tickEvery  = 50 * time.Millisecond // 2,000 records/s
	)
	c := newCluster(t, 2)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 2)
	rc := newReceiver(t)

	var start, firstFailure atomic.Int64 // unix nanos of the first request, of the first failure
	var requests atomic.Int64
	var tlMu sync.Mutex
	timeline := map[int][3]int{} // second → requests, failed, records
	rc.setHook(func(w http.ResponseWriter, _ *http.Request, ids []int64) bool {
		now := time.Now()
		start.CompareAndSwap(0, now.UnixNano())
		since := now.Sub(time.Unix(0, start.Load()))
		tlMu.Lock()
		e := timeline[int(since/time.Second)]
		e[0]++
		e[2] += len(ids)
		timeline[int(since/time.Second)] = e
		tlMu.Unlock()
		switch {
		case since < flakyFor:
			if requests.Add(1)%2 == 0 {
				firstFailure.CompareAndSwap(0, now.UnixNano())
				http.Error(w, "flaky backend: try again", http.StatusInternalServerError)
				return true
			}
		case since < produceFor && (since-flakyFor)%(downFor+upFor) < downFor:
			// Down: the connection closes without an answer, or, every
			// other cycle, 503 with Retry-After (an outage must not shrink
			// the batches for good).
			if (since-flakyFor)/(downFor+upFor)%2 == 1 {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
				return true
			}
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return true
		}
		return false
	})

	cfg := writeConfig(t, fmt.Sprintf(`
name: logs-test
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
  writer:
    max_batch_size: 100
    max_in_flight_requests: 4
    max_time_in_buffer: 20ms
  circuit_breaker:
    failure_ratio: 0.9
    min_requests: 2
    interval: 1s
    open_timeout: 300ms
    half_open_requests: 1
errors:
  max_attempts: 1000
  retry_backoff: 20ms
  max_retry_backoff: 200ms
log:
  level: debug
  format: json
`, joinAddrs(c.Addrs), topic, group, rc.URL()))

	w := startLogged(t, "run", "-c", cfg, "-summary", "0")
	// Records arrive at a steady rate through every phase.
	n := produceSteady(t, c, topic, produceFor+time.Second, perTick, tickEvery)
	waitFor(t, "all partitions committed to the end", time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	sigtermAt := time.Now()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := w.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
	end := time.Now()
	if _, _, missing := rc.stats(n); len(missing) > 0 {
		t.Fatalf("%d records lost, first %v", len(missing), missing[:min(10, len(missing))])
	}
	if firstFailure.Load() == 0 {
		t.Fatal("the receiver never failed a request")
	}
	first := time.Unix(0, firstFailure.Load())
	run := end.Sub(first)
	maxLines := int(run/summaryEvery) + 2 // the first at once, one per interval, and what is left at exit

	lines := w.parse(t)
	if os.Getenv("SPILLWAY_LOGS_DUMP") != "" {
		tlMu.Lock()
		for sec := range 60 {
			if e, ok := timeline[sec]; ok {
				t.Logf("second %2d: %4d requests, %6d records", sec, e[0], e[2])
			}
		}
		tlMu.Unlock()
		for _, l := range lines {
			if l.level != "DEBUG" {
				t.Logf("%8.3fs %s", l.time.Sub(first).Seconds(), l.raw)
			}
		}
	}
	var failing, breaker []logLine
	for _, l := range lines {
		// (c) No duration in raw nanoseconds, in any line.
		if bad := numericDurations(l.attrs, ""); len(bad) > 0 {
			t.Errorf("durations as numbers %v in %.300s", bad, l.raw)
		}
		switch l.msg {
		case msgFailing:
			failing = append(failing, l)
		case msgBreaker:
			breaker = append(breaker, l)
		}
	}

	// (a) One info line about a second after the first failure at most,
	// with counts and the last error.
	if len(failing) == 0 {
		t.Fatalf("no %q line in %d lines of stderr", msgFailing, len(lines))
	}
	l0 := failing[0]
	if d := l0.time.Sub(first); d < -summarySlack || d > time.Second {
		t.Errorf("first %q line %v after the first failure, want within 1s: %s", msgFailing, d, l0.raw)
	}
	if l0.level != "INFO" {
		t.Errorf("first failure line at level %s, want INFO: %s", l0.level, l0.raw)
	}
	if n, _ := l0.attrs["retried_records"].(float64); n < 1 {
		t.Errorf("first failure line has no retried_records count: %s", l0.raw)
	}
	if e, _ := l0.attrs["last_error"].(string); !strings.Contains(e, "500") {
		t.Errorf("first failure line's last_error %q does not give the status: %s", e, l0.raw)
	}
	if a, ok := l0.attrs["next_attempt_after"].(string); !ok {
		t.Errorf("next_attempt_after is not text: %s", l0.raw)
	} else if _, err := time.ParseDuration(a); err != nil {
		t.Errorf("next_attempt_after %q is not a duration: %v", a, err)
	}

	// (b) and (d): at most one line per 10 s, each with counts.
	collapsed := func(what string, ls []logLine, countKey *regexp.Regexp) (total int, counts map[string]int) {
		counts = map[string]int{}
		if len(ls) > maxLines {
			t.Errorf("%d %q lines in %v, want at most %d (one per %v)", len(ls), what, run.Round(time.Millisecond), maxLines, summaryEvery)
		}
		for i, l := range ls {
			// The last line may be the summary of what was counted since the
			// previous one, logged when the run ends.
			atExit := i == len(ls)-1 && !l.time.Before(sigtermAt.Add(-summarySlack))
			if i > 0 {
				if gap := l.time.Sub(ls[i-1].time); gap < summaryEvery-summarySlack && !atExit {
					t.Errorf("%q lines %d and %d only %v apart:\n%s\n%s", what, i-1, i, gap, ls[i-1].raw, l.raw)
				}
				if o, ok := l.attrs["over"].(string); !ok {
					t.Errorf("%q line without over as text: %s", what, l.raw)
				} else if _, err := time.ParseDuration(o); err != nil {
					t.Errorf("over %q is not a duration: %v", o, err)
				}
			}
			line := 0
			for k, v := range l.attrs {
				if f, ok := v.(float64); ok && countKey.MatchString(k) {
					counts[k] += int(f)
					line += int(f)
				}
			}
			if line == 0 {
				t.Errorf("%q line without counts: %s", what, l.raw)
			}
			total += line
		}
		return total, counts
	}
	retried, kinds := collapsed(msgFailing, failing, regexp.MustCompile(`_records$|^batches_split$`))
	transitions, moves := collapsed(msgBreaker, breaker, regexp.MustCompile(`->`))
	var opened, closed int
	for k, cnt := range moves {
		if strings.HasSuffix(k, "->open") {
			opened += cnt
		}
		if strings.HasSuffix(k, "->closed") {
			closed += cnt
		}
	}
	// The breaker flapped: several transitions, collapsed into lines that
	// count more than one each.
	if opened < 2 || closed < 1 || transitions < 2*len(breaker) {
		t.Errorf("breaker lines count %d transitions in %d lines (%v); want it opened twice and closed once at least, several per line", transitions, len(breaker), moves)
	}
	for _, l := range breaker {
		if l.level != "WARN" || l.attrs["state"] == nil {
			t.Errorf("breaker line without level WARN and the state: %s", l.raw)
		}
	}
	t.Logf("%v from the first failure to exit, %d stderr lines: %d failure lines (%d records retried or throttled, %v), %d breaker lines (%d transitions, %v)",
		run.Round(time.Millisecond), len(lines), len(failing), retried, kinds, len(breaker), transitions, moves)
}

// TestValidateLatin1Config: a config saved as Latin-1 is refused by
// validate with exit code 2, the byte's file:line:column and what to do.
func TestValidateLatin1Config(t *testing.T) {
	tests := []struct {
		name, body, at string
	}{
		{"comment", "name: latin1\n# r\xe9sum\xe9 of the pipeline\nsource:\n  generate: {count: 1}\nsink:\n  stdout: {}\n", ":2:4: "},
		{"value", "name: caf\xe9\nsource:\n  generate: {count: 1}\nsink:\n  stdout: {}\n", ":1:10: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "latin1.yaml")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out := runCLI(t, "validate", "-c", path)
			if code != 2 || !strings.Contains(out, path+tc.at) || !strings.Contains(out, "invalid UTF-8 (byte 0xe9") {
				t.Fatalf("exit %d, output %q; want 2 with %s%s and invalid UTF-8 (byte 0xe9", code, out, path, tc.at)
			}
		})
	}
}

// produceSteady writes records with ids from 0, keyed by id, perTick every
// tick for d, without waiting for acknowledgements between ticks, and
// returns how many it wrote once all are acknowledged.
func produceSteady(t *testing.T, c *cluster, topic string, d time.Duration, perTick int, tick time.Duration) int {
	t.Helper()
	cl, err := kgo.NewClient(c.clientOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var failed atomic.Pointer[error]
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); <-ticker.C {
		for range perTick {
			r := &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", n), Value: fmt.Appendf(nil, `{"id":%d}`, n)}
			cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			})
			n++
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("produce: flush: %v", err)
	}
	if err := failed.Load(); err != nil {
		t.Fatalf("produce: %v", *err)
	}
	return n
}
