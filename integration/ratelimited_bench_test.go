package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/sources/generate"
)

// BenchmarkRateLimitedAPI runs each rate-limiting strategy against the
// rate-limited gateway of ratelimited_receiver_test.go (issue 9) and
// prints markdown tables of goodput (records accepted for the first time,
// as a share of C) and of the share of requests answered 429, measured by
// the gateway over a window after a warm-up. Each scenario runs once per
// contender on a fresh gateway; run it with -benchtime 1x:
//
//	go test -run XXX -bench RateLimitedAPI -benchtime 1x -timeout 60m ./integration/
//	SPILLWAY_RATELIMIT_C=20000 SPILLWAY_RATELIMIT_SECONDS=2,6 go test -run XXX -bench 'RateLimitedAPI/steady' -benchtime 1x ./integration/
//
// Scenarios (sub-benchmarks, selectable with -bench RateLimitedAPI/<name>):
//   - steady: one job, capacity C, bucket C/10, Retry-After 1.
//   - step: C drops to C/2 at the end of the warm-up and comes back half a
//     window later (10 s by default); the time until goodput is within 10%
//     of the new capacity after each step.
//   - workers4: four jobs in one process, each with its own generator,
//     sharing one gateway of capacity C.
//   - group4: four workers of one job and consumer group in one process,
//     reading a 12-partition topic of the in-process broker, sharing one
//     gateway of capacity C (up to SPILLWAY_RATELIMIT_GROUP_MAX, default
//     20000: the broker holds the topic in memory). adaptive_rate_group
//     (scope: group) runs only here.
//   - item4: 1 KiB records, C = 3000, bucket 300 (smaller than a batch of
//     500), 40 s from the start.
//
// Contenders: Spillway jobs built from YAML through internal/config and
// internal/job (source generate, unbounded, value_bytes 100; sink http;
// default writer settings) with no rate_limit, aimd defaults, token_bucket
// at exactly C (C/4 per job with four workers) with its default burst,
// adaptive_rate defaults (skipped while that kind is not registered),
// adaptive_rate with scope group (group4 only); and
// a naive relay written here: one batch of 500 in flight, sleeping
// Retry-After on a 429.
//
// Environment:
//   - SPILLWAY_RATELIMIT_C: capacities, comma-separated (default
//     2000,20000,80000,200000).
//   - SPILLWAY_RATELIMIT_SECONDS: "warm,window" in seconds, or "window"
//     alone with a warm-up of half of it (default 10,20). item4's 40 s
//     scale with warm+window.
//   - SPILLWAY_RATELIMIT_CONTENDERS: a subset of none, aimd, token_bucket,
//     adaptive_rate, naive.
//   - SPILLWAY_RATELIMIT_TABLE: also write the tables to this file.
func BenchmarkRateLimitedAPI(b *testing.B) {
	p := rlParamsFromEnv(b)
	var res rlResults
	for _, c := range p.caps {
		for _, ct := range p.contenders {
			rlRun(b, fmt.Sprintf("steady/C=%d/%s", c, ct.name), ct, &res, func(b *testing.B) rlResult {
				return rlSteady(b, ct, c, p, 1)
			})
		}
	}
	for _, c := range p.caps {
		for _, ct := range p.contenders {
			rlRun(b, fmt.Sprintf("step/C=%d/%s", c, ct.name), ct, &res, func(b *testing.B) rlResult {
				return rlStep(b, ct, c, p)
			})
		}
	}
	for _, c := range p.caps {
		for _, ct := range p.contenders {
			rlRun(b, fmt.Sprintf("workers4/C=%d/%s", c, ct.name), ct, &res, func(b *testing.B) rlResult {
				return rlSteady(b, ct, c, p, 4)
			})
		}
	}
	for _, c := range p.caps {
		for _, ct := range p.contenders {
			if ct.naive {
				continue // reads no Kafka
			}
			rlRun(b, fmt.Sprintf("group4/C=%d/%s", c, ct.name), ct, &res, func(b *testing.B) rlResult {
				if c > p.groupMax {
					b.Skipf("C = %d: the group4 topic would hold %d records in the in-process broker's memory; SPILLWAY_RATELIMIT_GROUP_MAX raises the bound (%d)",
						c, rlGroupRecords(c, p), p.groupMax)
				}
				return rlGroup(b, ct, c, p, 4)
			})
		}
	}
	for _, ct := range p.contenders {
		rlRun(b, "item4/"+ct.name, ct, &res, func(b *testing.B) rlResult {
			return rlItem4(b, ct, p)
		})
	}
	table := res.markdown(p)
	b.Log("\n" + table)
	if path := os.Getenv("SPILLWAY_RATELIMIT_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			b.Errorf("write %s: %v", path, err)
		}
	}
}

// rlParams are the benchmark's settings.
type rlParams struct {
	caps         []int
	warm, window time.Duration
	item4        time.Duration
	contenders   []rlContender
	groupMax     int // the largest C of the group4 scenario
}

func rlParamsFromEnv(b *testing.B) rlParams {
	p := rlParams{caps: []int{2000, 20000, 80000, 200000}, warm: 10 * time.Second, window: 20 * time.Second, contenders: rlContenders, groupMax: 20000}
	if s := os.Getenv("SPILLWAY_RATELIMIT_GROUP_MAX"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			b.Fatalf("SPILLWAY_RATELIMIT_GROUP_MAX: %q is not a capacity", s)
		}
		p.groupMax = v
	}
	if s := os.Getenv("SPILLWAY_RATELIMIT_C"); s != "" {
		p.caps = nil
		for f := range strings.SplitSeq(s, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || c < 20 {
				b.Fatalf("SPILLWAY_RATELIMIT_C: %q is not a capacity of at least 20 records/s", f)
			}
			p.caps = append(p.caps, c)
		}
	}
	if s := os.Getenv("SPILLWAY_RATELIMIT_SECONDS"); s != "" {
		var secs []float64
		for f := range strings.SplitSeq(s, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || v <= 0 {
				b.Fatalf("SPILLWAY_RATELIMIT_SECONDS: %q is not a positive number of seconds", f)
			}
			secs = append(secs, v)
		}
		switch len(secs) {
		case 1:
			p.warm, p.window = time.Duration(secs[0]/2*float64(time.Second)), time.Duration(secs[0]*float64(time.Second))
		case 2:
			p.warm, p.window = time.Duration(secs[0]*float64(time.Second)), time.Duration(secs[1]*float64(time.Second))
		default:
			b.Fatalf(`SPILLWAY_RATELIMIT_SECONDS: want "warm,window" or "window", got %q`, s)
		}
		p.warm, p.window = p.warm.Round(gatewayTick), max(p.window.Round(gatewayTick), 2*time.Second)
	}
	p.item4 = time.Duration(40 * float64(time.Second) * (p.warm + p.window).Seconds() / 30).Round(time.Second)
	if s := os.Getenv("SPILLWAY_RATELIMIT_CONTENDERS"); s != "" {
		p.contenders = nil
		for f := range strings.SplitSeq(s, ",") {
			i := slices.IndexFunc(rlContenders, func(c rlContender) bool { return c.name == strings.TrimSpace(f) })
			if i < 0 {
				b.Fatalf("SPILLWAY_RATELIMIT_CONTENDERS: unknown contender %q", f)
			}
			p.contenders = append(p.contenders, rlContenders[i])
		}
	}
	return p
}

// rlContender is one way of sending to the gateway.
type rlContender struct {
	name  string // in sub-benchmark names and SPILLWAY_RATELIMIT_CONTENDERS
	label string // in the tables
	kind  string // the rate_limit kind it needs registered; "" none
	naive bool   // the naive relay instead of a Spillway job
	// groupOnly: only in the group4 scenario (its limit needs a consumer
	// group).
	groupOnly bool
	// rateLimit returns the sink.rate_limit section for capacity c shared
	// by workers jobs; "" for none.
	rateLimit func(c, workers int) string
}

var rlContenders = []rlContender{
	{name: "none", label: "no rate_limit", rateLimit: func(int, int) string { return "" }},
	{name: "aimd", label: "`aimd` defaults", kind: "aimd", rateLimit: func(int, int) string { return "kind: aimd" }},
	{name: "token_bucket", label: "`token_bucket` at C, default burst", kind: "token_bucket", rateLimit: func(c, workers int) string {
		return fmt.Sprintf("kind: token_bucket\nrecords_per_second: %d", c/workers)
	}},
	{name: "adaptive_rate", label: "`adaptive_rate` defaults", kind: "adaptive_rate", rateLimit: func(int, int) string { return "kind: adaptive_rate" }},
	{name: "adaptive_rate_group", label: "`adaptive_rate`, `scope: group`", kind: "adaptive_rate", groupOnly: true, rateLimit: func(int, int) string { return "kind: adaptive_rate\nscope: group" }},
	{name: "naive", label: "naive relay (1 × 500 in flight)", naive: true},
}

// rlResult is one contender's figures in one scenario.
type rlResult struct {
	scenario  string // steady, step, workers4, item4
	contender string // its name
	c         int
	skipped   string

	win       gatewayBin    // the gateway's counters over the window
	goodput   float64       // share of capacity
	throttled float64       // share of requests answered 429
	offered   float64       // records sent per second, × C
	meanReq   float64       // records per request
	oversize  float64       // share of requests larger than the bucket
	peak      float64       // highest records sent in one 100 ms tick, × C's share of a tick
	workerLo  float64       // workers4: lowest goodput of one worker, share of C/4
	workerHi  float64       // workers4: highest
	down, up  time.Duration // step: time to within 10% after the step down, after the step up
	downOK    bool
	upOK      bool
	late      float64  // item4: goodput share over the last quarter
	failures  []string // a worker that ended before the end
	notes     []string // a worker whose drain after the end did not finish
	timeline  string   // goodput/requests/429s per second from the start
	workers   string   // group4: each worker's goodput per second from the start
}

type rlResults struct {
	mu   sync.Mutex
	list []rlResult
}

// rlRun runs one sub-benchmark, once whatever b.N, and keeps its result.
func rlRun(b *testing.B, name string, ct rlContender, res *rlResults, f func(b *testing.B) rlResult) {
	b.Run(name, func(b *testing.B) {
		scenario, _, _ := strings.Cut(name, "/")
		if ct.groupOnly && scenario != "group4" {
			res.add(rlResult{scenario: scenario, contender: ct.name, skipped: "needs a consumer group"})
			b.Skip("scope group needs a Kafka source: only in group4")
		}
		if ct.kind != "" {
			if _, ok := registry.Builtin().Strategy(ct.kind); !ok {
				res.add(rlResult{scenario: scenario, contender: ct.name, skipped: "kind not registered"})
				b.Skipf("rate_limit kind %q is not registered yet", ct.kind)
			}
		}
		r := f(b)
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(100*r.goodput, "goodput%")
		b.ReportMetric(100*r.throttled, "429%")
		b.Logf("%s: goodput %.1f%% of C, 429 %.1f%% of %d requests, offered %.2f×C, %.0f records/request, %d duplicates",
			name, 100*r.goodput, 100*r.throttled, r.win.Requests, r.offered, r.meanReq, r.win.Dups)
		for _, f := range r.failures {
			b.Errorf("%s: %s", name, f)
		}
		for _, n := range r.notes {
			b.Logf("%s: %s", name, n)
		}
		if os.Getenv("SPILLWAY_RATELIMIT_TIMELINE") != "" {
			b.Logf("%s: per second since the start: %s", name, r.timeline)
			if r.workers != "" {
				b.Logf("%s: each worker's goodput per second:%s", name, r.workers)
			}
		}
		res.add(r)
	})
}

func (rs *rlResults) add(r rlResult) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	i := slices.IndexFunc(rs.list, func(o rlResult) bool {
		return o.scenario == r.scenario && o.contender == r.contender && o.c == r.c
	})
	if i >= 0 {
		rs.list[i] = r // b.N > 1: keep the last
		return
	}
	rs.list = append(rs.list, r)
}

// rlSteady runs ct with workers senders against a gateway of capacity c
// for the warm-up and the window, and measures the window.
func rlSteady(b *testing.B, ct rlContender, c int, p rlParams, workers int) rlResult {
	g := newGateway(gatewayConfig{Capacity: c})
	defer g.close()
	r := rlResult{scenario: "steady", contender: ct.name, c: c}
	if workers > 1 {
		r.scenario = fmt.Sprintf("workers%d", workers)
	}
	stop := rlStart(b, ct, g, c, workers, 100)
	rlSleepUntil(g.Start().Add(p.warm + p.window))
	r.failures, r.notes = stop()
	ticks := g.ticks()
	r.fill(ticks, p.warm, p.warm+p.window, float64(c)*p.window.Seconds(), c)
	if workers > 1 {
		r.workerLo, r.workerHi = rlWorkerSpread(g, p, c, workers)
	}
	return r
}

// rlGroupRecords is how many records the group4 topic holds: more than C
// records/s can take over the run.
func rlGroupRecords(c int, p rlParams) int {
	return int(float64(c) * (p.warm + p.window + 10*time.Second).Seconds() * 1.2)
}

// rlGroup runs ct as workers members of one consumer group that read a
// 12-partition topic on an in-process broker (3 partitions each) into a
// gateway of capacity c, and measures the window as rlSteady does. With
// scope group the workers publish their loads in the state topic and
// yield to one another (backpressure.Fair).
func rlGroup(b testing.TB, ct rlContender, c int, p rlParams, workers int) rlResult {
	const topic = "ratelimited"
	emb, err := broker.Start(broker.Options{Partitions: 12, Topics: []string{topic}})
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := broker.Produce(ctx, emb.Addrs(), topic, rlGroupRecords(c, p), 100, 1000); err != nil {
		b.Fatal(err)
	}
	g := newGateway(gatewayConfig{Capacity: c})
	defer g.close()
	r := rlResult{scenario: fmt.Sprintf("group%d", workers), contender: ct.name, c: c}
	stop := rlStartFrom(b, ct, g, c, workers, 100, func(worker string) string {
		return fmt.Sprintf("brokers: %s\nsource:\n  kafka: {topics: [%s], group: ratelimited, start_offset: earliest, instance_id: %s}\n",
			strings.Join(emb.Addrs(), ","), topic, worker)
	})
	rlSleepUntil(g.Start().Add(p.warm + p.window))
	r.failures, r.notes = stop()
	r.fill(g.ticks(), p.warm, p.warm+p.window, float64(c)*p.window.Seconds(), c)
	r.workerLo, r.workerHi = rlWorkerSpread(g, p, c, workers)
	r.workers = g.workerTimeline()
	return r
}

// rlWorkerSpread is the lowest and highest goodput of one worker over the
// window, as a share of C/workers.
func rlWorkerSpread(g *gateway, p rlParams, c, workers int) (lo, hi float64) {
	per := g.workerGoodput(p.warm, p.warm+p.window)
	share := float64(c) / float64(workers) * p.window.Seconds()
	lo = math.Inf(1)
	for i := range workers {
		v := float64(per[fmt.Sprintf("w%d", i)]) / share
		lo, hi = min(lo, v), max(hi, v)
	}
	return lo, hi
}

// rlStep runs ct against a gateway whose capacity drops to c/2 at the end
// of the warm-up and returns to c half a window later, and measures how
// long goodput takes to settle within 10% of each new capacity.
func rlStep(b *testing.B, ct rlContender, c int, p rlParams) rlResult {
	g := newGateway(gatewayConfig{Capacity: c})
	defer g.close()
	half := (p.window / 2).Round(gatewayTick)
	stop := rlStart(b, ct, g, c, 1, 100)
	rlSleepUntil(g.Start().Add(p.warm))
	g.setCapacity(c / 2)
	rlSleepUntil(g.Start().Add(p.warm + half))
	g.setCapacity(c)
	end := p.warm + half + p.window
	rlSleepUntil(g.Start().Add(end))
	r := rlResult{scenario: "step", contender: ct.name, c: c}
	r.failures, r.notes = stop()
	ticks := g.ticks()
	capacity := float64(c)/2*half.Seconds() + float64(c)*p.window.Seconds()
	r.fill(ticks, p.warm, end, capacity, c)
	r.down, r.downOK = rlSettle(ticks, p.warm, p.warm+half, float64(c)/2)
	r.up, r.upOK = rlSettle(ticks, p.warm+half, end, float64(c))
	return r
}

// rlItem4 is issue 9's item 4: 1 KiB records against C = 3000 with a
// bucket of 300 records, smaller than one batch; goodput over the whole
// run and its last quarter.
func rlItem4(b *testing.B, ct rlContender, p rlParams) rlResult {
	const c, burst = 3000, 300
	g := newGateway(gatewayConfig{Capacity: c, Burst: burst})
	defer g.close()
	stop := rlStart(b, ct, g, c, 1, 1024)
	rlSleepUntil(g.Start().Add(p.item4))
	r := rlResult{scenario: "item4", contender: ct.name, c: c}
	r.failures, r.notes = stop()
	ticks := g.ticks()
	r.fill(ticks, 0, p.item4, c*p.item4.Seconds(), c)
	from := p.item4 - (p.item4 / 4).Round(time.Second)
	r.late = float64(sumTicks(ticks, from, p.item4).Goodput()) / (c * (p.item4 - from).Seconds())
	return r
}

// fill sets the window's figures from ticks [from, to), against capacity
// records.
func (r *rlResult) fill(ticks []gatewayBin, from, to time.Duration, capacity float64, c int) {
	r.win = sumTicks(ticks, from, to)
	var tl strings.Builder
	per := int(time.Second / gatewayTick)
	for i := 0; i*per < len(ticks) && time.Duration(i)*time.Second < to; i++ {
		sec := sumTicks(ticks, time.Duration(i)*time.Second, time.Duration(i+1)*time.Second)
		fmt.Fprintf(&tl, " %d:%d/%d/%d", i, sec.Goodput(), sec.Requests, sec.Throttled)
	}
	r.timeline = "second:goodput/requests/429s" + tl.String()
	r.goodput = float64(r.win.Goodput()) / capacity
	if r.win.Requests > 0 {
		r.throttled = float64(r.win.Throttled) / float64(r.win.Requests)
		r.oversize = float64(r.win.Oversize) / float64(r.win.Requests)
		r.meanReq = float64(r.win.Accepted+r.win.Rejected) / float64(r.win.Requests)
	}
	r.offered = float64(r.win.Accepted+r.win.Rejected) / (float64(c) * (to - from).Seconds())
	lo, hi := tickRange(from, to, len(ticks))
	for _, t := range ticks[lo:hi] {
		r.peak = max(r.peak, float64(t.Accepted+t.Rejected)/(float64(c)*gatewayTick.Seconds()))
	}
}

// rlSettle returns how long after at the goodput first stays within 10% of
// target for two consecutive seconds, trying every tick from at until two
// seconds before end; false if it never does.
func rlSettle(ticks []gatewayBin, at, end time.Duration, target float64) (time.Duration, bool) {
	within := func(from time.Duration) bool {
		g := float64(sumTicks(ticks, from, from+time.Second).Goodput())
		return math.Abs(g-target) <= 0.1*target
	}
	for t := at; t+2*time.Second <= end; t += gatewayTick {
		if within(t) && within(t+time.Second) {
			return t - at, true
		}
	}
	return end - at, false
}

// rlSleepUntil sleeps until t.
func rlSleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// rlStart starts workers senders of kind ct against g, each naming itself
// wN in the X-Worker header, with values of valueBytes. The returned stop
// lets the gateway accept everything (so that jobs drain at once), stops
// the senders, waits for them and returns what went wrong (a job that
// ended early or failed).
func rlStart(b testing.TB, ct rlContender, g *gateway, c, workers, valueBytes int) (stop func() (failures, notes []string)) {
	return rlStartFrom(b, ct, g, c, workers, valueBytes, nil)
}

// rlStartFrom is rlStart with source, which returns for a worker the YAML
// of its source section and any top-level keys (nil: an unbounded
// generator).
func rlStartFrom(b testing.TB, ct rlContender, g *gateway, c, workers, valueBytes int, source func(worker string) string) (stop func() (failures, notes []string)) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	type ended struct {
		worker int
		err    error
		at     time.Time
	}
	done := make(chan ended, workers)
	for w := range workers {
		worker := fmt.Sprintf("w%d", w)
		if ct.naive {
			go func() {
				rlNaiveRelay(ctx, g.URL(), worker, valueBytes)
				done <- ended{w, nil, time.Now()}
			}()
			continue
		}
		var src string
		if source != nil {
			src = source(worker)
		}
		text := rlJobYAML(worker, g.URL(), valueBytes, ct.rateLimit(c, workers), src)
		cfg, err := config.Parse("ratelimited-"+worker+".yaml", []byte(text), nil)
		if err != nil {
			cancel()
			b.Fatalf("config:\n%s\n%v", text, err)
		}
		j, err := job.Build(ctx, cfg, rlLogger().With("worker", worker))
		if err != nil {
			cancel()
			b.Fatalf("build job: %v", err)
		}
		go func() { done <- ended{w, j.Run(ctx), time.Now()} }()
	}
	return func() (failures, notes []string) {
		stopAt := time.Now()
		g.openUp()
		cancel()
		timeout := time.After(90 * time.Second)
		for range workers {
			select {
			case e := <-done:
				if e.at.Before(stopAt) {
					failures = append(failures, fmt.Sprintf("worker w%d ended %v before the end: %v", e.worker, stopAt.Sub(e.at).Round(time.Millisecond), e.err))
				} else if e.err != nil {
					// Not what is measured: a job still waiting out a
					// backoff when the drain bound (shutdown_timeout) ends.
					notes = append(notes, fmt.Sprintf("after the end, worker w%d: %v", e.worker, e.err))
				}
			case <-timeout:
				return append(failures, "a worker did not stop within 90s"), notes
			}
		}
		return failures, notes
	}
}

// rlJobYAML is the pipeline file of one Spillway contender: an unbounded
// generator into the HTTP sink, default writer settings, rateLimit (YAML of
// the sink.rate_limit section) if not empty.
func rlJobYAML(worker, url string, valueBytes int, rateLimit, source string) string {
	name := "ratelimited-" + worker
	if source == "" {
		source = fmt.Sprintf("source:\n  generate:\n    value_bytes: %d\n", valueBytes)
	} else {
		name = "ratelimited-group" // the workers of one job
	}
	var s strings.Builder
	fmt.Fprintf(&s, `name: %s
shutdown_timeout: 5s
%ssink:
  http:
    url: %s
    headers:
      %s: %s
`, name, source, url, gatewayWorkerHeader, worker)
	if rateLimit != "" {
		s.WriteString("  rate_limit:\n")
		for line := range strings.SplitSeq(rateLimit, "\n") {
			s.WriteString("    " + line + "\n")
		}
	}
	return s.String()
}

func rlLogger() *slog.Logger {
	if os.Getenv("SPILLWAY_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// rlNaiveRelay is the simplest sender that respects the gateway: one batch
// of 500 generated records in flight, the same batch again after sleeping
// Retry-After (1 s without one) on a 429 and 100 ms after any other
// failure, until ctx ends.
func rlNaiveRelay(ctx context.Context, url, worker string, valueBytes int) {
	const batch = 500
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	var body bytes.Buffer
	for next := int64(0); ctx.Err() == nil; {
		body.Reset()
		body.WriteByte('[')
		for i := range int64(batch) {
			if i > 0 {
				body.WriteByte(',')
			}
			body.Write(generate.Value(next+i, valueBytes))
		}
		body.WriteByte(']')
		for ctx.Err() == nil {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body.Bytes()))
			if err != nil {
				panic(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(gatewayWorkerHeader, worker)
			wait := 100 * time.Millisecond
			resp, err := client.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					next += batch
					break
				}
				if resp.StatusCode == http.StatusTooManyRequests {
					wait = time.Second
					if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
						wait = time.Duration(s) * time.Second
					}
				}
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// markdown renders every result as tables.
func (rs *rlResults) markdown(p rlParams) string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	find := func(scenario, contender string, c int) (rlResult, bool) {
		i := slices.IndexFunc(rs.list, func(r rlResult) bool {
			return r.scenario == scenario && r.contender == contender && (r.c == c || r.skipped != "")
		})
		if i < 0 {
			return rlResult{}, false
		}
		return rs.list[i], true
	}
	has := func(scenario string) bool {
		return slices.ContainsFunc(rs.list, func(r rlResult) bool { return r.scenario == scenario })
	}
	pct := func(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }
	var s strings.Builder
	fmt.Fprintf(&s, "Rate-limited API gateway: C records/s as a token bucket holding C/10 records, 429 with Retry-After: 1 for a batch that does not fit. "+
		"Goodput: records accepted for the first time, as a share of C; 429: share of requests. Warm-up %v, window %v.\n", p.warm, p.window)

	grid := func(title, scenario string, cell func(r rlResult) string) {
		if !has(scenario) {
			return
		}
		fmt.Fprintf(&s, "\n%s\n\n| contender |", title)
		for _, c := range p.caps {
			fmt.Fprintf(&s, " C = %s |", thousands(c))
		}
		s.WriteString("\n| --- |" + strings.Repeat(" --- |", len(p.caps)) + "\n")
		for _, ct := range p.contenders {
			fmt.Fprintf(&s, "| %s |", ct.label)
			for _, c := range p.caps {
				r, ok := find(scenario, ct.name, c)
				switch {
				case !ok:
					s.WriteString(" |")
				case r.skipped != "":
					s.WriteString(" – |")
				default:
					fmt.Fprintf(&s, " %s |", cell(r))
				}
			}
			s.WriteString("\n")
		}
	}
	grid("### One worker: goodput / 429", "steady", func(r rlResult) string {
		return pct(r.goodput) + " / " + pct(r.throttled)
	})
	grid("### Four workers (four jobs, one gateway): aggregate goodput / 429 (lowest–highest worker, share of C/4)", "workers4", func(r rlResult) string {
		return fmt.Sprintf("%s / %s (%.0f–%.0f%%)", pct(r.goodput), pct(r.throttled), 100*r.workerLo, 100*r.workerHi)
	})
	grid("### Four workers of one consumer group (a 12-partition topic on the in-process broker): aggregate goodput / 429 (lowest–highest worker, share of C/4)", "group4", func(r rlResult) string {
		return fmt.Sprintf("%s / %s (%.0f–%.0f%%)", pct(r.goodput), pct(r.throttled), 100*r.workerLo, 100*r.workerHi)
	})
	if has("step") {
		fmt.Fprintf(&s, "\n### C drops to C/2 after the warm-up and returns %v later: time until goodput stays within 10%% of the new capacity (two whole seconds), and goodput / 429 from the drop to the end\n\n", (p.window / 2).Round(gatewayTick))
		s.WriteString("| contender | C | settle after the drop | settle after the return | goodput / 429 |\n| --- | --- | --- | --- | --- |\n")
		settle := func(d time.Duration, ok bool) string {
			if !ok {
				return "not within " + d.String()
			}
			return d.String()
		}
		for _, c := range p.caps {
			for _, ct := range p.contenders {
				if r, ok := find("step", ct.name, c); ok && r.skipped == "" {
					fmt.Fprintf(&s, "| %s | %s | %s | %s | %s / %s |\n", ct.label, thousands(c), settle(r.down, r.downOK), settle(r.up, r.upOK), pct(r.goodput), pct(r.throttled))
				}
			}
		}
	}
	if has("item4") {
		fmt.Fprintf(&s, "\n### Item 4: 1 KiB records, C = 3,000, bucket 300 records (a batch of 500 never fits), %v from the start\n\n", p.item4)
		s.WriteString("| contender | goodput, whole run | goodput, last quarter | 429 | records/request | requests larger than the bucket |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, ct := range p.contenders {
			if r, ok := find("item4", ct.name, 3000); ok && r.skipped == "" {
				fmt.Fprintf(&s, "| %s | %s | %s | %s | %.0f | %s |\n", ct.label, pct(r.goodput), pct(r.late), pct(r.throttled), r.meanReq, pct(r.oversize))
			}
		}
	}
	if len(rs.list) > 0 {
		s.WriteString("\n### Diagnostics over the window: records sent per second (× C), highest in one 100 ms tick (× C), records per request, requests, duplicates\n\n")
		s.WriteString("| scenario | contender | C | sent × C | peak 100 ms × C | records/request | requests | duplicates |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, scenario := range []string{"steady", "workers4", "group4", "step", "item4"} {
			caps := p.caps
			if scenario == "item4" {
				caps = []int{3000}
			}
			for _, c := range caps {
				for _, ct := range p.contenders {
					if r, ok := find(scenario, ct.name, c); ok && r.skipped == "" {
						fmt.Fprintf(&s, "| %s | %s | %s | %.2f | %.1f | %.0f | %d | %d |\n", scenario, ct.label, thousands(c), r.offered, r.peak, r.meanReq, r.win.Requests, r.win.Dups)
					}
				}
			}
		}
	}
	return s.String()
}

// thousands formats n with commas: 20000 → "20,000".
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
