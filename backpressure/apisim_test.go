package backpressure

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// A deterministic discrete-event simulation of the Spillway writer against
// a rate-limited API (issue 9). Unlike simulate (sim_test.go), which
// advances time only on completions, it has timers: Retry-After pauses,
// retry backoff and the waits a paced strategy asks for. No goroutines, no
// clock: simulated time reaches the strategies through their *At methods
// (TryAcquireAt, Admit, CompleteAt); strategies without CompleteAt get
// Complete, which for AIMD and TokenBucket does not read the clock.
//
// The destination is the gateway of integration/ratelimited_receiver_test.go:
// a token bucket of C records/s holding at most C/10 records (starting
// full); a request that does not fit gets 429 with Retry-After 1s and none
// of its records count; it answers in 0.3 ms (±0.05).
//
// The writer is sinks.Writer's run loop (sinks/run.go, buffer.go,
// settle.go, admission.go) with default settings and a source that always
// has data:
//   - up to 8 requests in flight, checked before a batch is taken;
//   - new batches of min(500, MaxBatchSize() when positive);
//   - a throttled request goes back as a retry, ordered by write position,
//     due after max(Retry-After, backoff(attempts)) where backoff is the
//     writer's exponential backoff with equal jitter (100 ms doubled per
//     attempt, throttles included, capped at 10 s); while the oldest retry
//     is not due nothing is taken, and once due it goes first, whole unless
//     the strategy's RetryBatchSize is positive and smaller (then a prefix);
//   - the strategy is consulted before each request (TryAcquireAt); a
//     refused batch is held (the writer blocks in Acquire) and tried again
//     after Admit's wait or at this writer's next completion, whichever
//     comes first, then sent even if a retry fell due meanwhile;
//   - the outcome goes to the strategy before the retry is queued.
//
// The sender has a throughput of its own (apiModel.sendRate): requests
// leave through one FIFO pipe of that many records per second (encoding,
// the HTTP client, the CPU the receiver shares). How far a writer overruns
// the gateway's small bucket before the first 429 comes back, and so every
// figure measured before the fix, depends on it; see apiModelDefault.
// (With no limit, everything before the fix gets 10% of C at every C of
// 20k and above: the bucket's C/10 each Retry-After second.) The naive
// relay has a slower pipe of its own (apiNaive).
//
// Not modelled: batches that follow the source's chunks (the real writer
// sends what it has rather than split a segment, so some batches are
// smaller than the limit); timer slack; a request is offered to the
// gateway when it leaves the pipe, a few ms after the writer sent it at
// most, so a capacity change can miss the requests already in the pipe.
//
// AdaptiveRate is built as NewAdaptiveRate builds it, but with the
// simulated clock's start instead of time.Now() (newAdaptiveRate).

// apiT0 is the simulated time 0: a fixed instant, aligned to AdaptiveRate's
// 100 ms slots, so runs do not depend on the wall clock.
var apiT0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

const apiTick = 100 * time.Millisecond

// apiModel is the part of the model that is not the strategy.
type apiModel struct {
	latency  time.Duration // gateway answer time, ± latency/6 jitter
	sendRate float64       // records/s the sender can push at most; 0 = no limit
	record   int           // bytes per record (Request.Bytes)
}

// apiModelDefault: sendRate calibrated on the no-strategy figures of issue
// 9 (10% of C at 20k, 15% at 80k): a writer that sends R records/s overruns
// a bucket of C/10 for (C/10)/(R−C) before the first 429 comes back and
// then pauses a second, so it gets about C/10 × R/(R−C) per second, 15% of
// C at 80k for R ≈ 240k. FACTS.md measured Spillway at 129k–148k records/s
// file → HTTP and 0.53M Kafka → HTTP on the 2-core box; 250k lies between.
var apiModelDefault = apiModel{latency: 300 * time.Microsecond, sendRate: 250_000, record: 100}

// apiDest is the rate-limited gateway.
type apiDest struct {
	rate, burst, tokens float64
	last                time.Duration
	fixedBurst          float64 // > 0: the burst, whatever the rate; 0: rate/10
	bins                [][]apiBin
}

// apiBin counts one writer's requests in one 100 ms tick.
type apiBin struct {
	accepted  int // records
	rejected  int // records
	requests  int
	throttled int
}

func newAPIDest(c float64, burst float64, writers int) *apiDest {
	d := &apiDest{fixedBurst: burst, bins: make([][]apiBin, writers)}
	d.setCapacity(0, c)
	d.tokens = d.burst
	return d
}

func (d *apiDest) refill(t time.Duration) {
	if t > d.last {
		d.tokens = min(d.burst, d.tokens+d.rate*(t-d.last).Seconds())
		d.last = t
	}
}

func (d *apiDest) setCapacity(t time.Duration, c float64) {
	d.refill(t)
	d.rate = c
	d.burst = d.fixedBurst
	if d.burst == 0 {
		d.burst = max(1, math.Floor(c/10))
	}
	d.tokens = min(d.tokens, d.burst)
}

// offer is a request of n records from writer w arriving at t.
func (d *apiDest) offer(t time.Duration, w, n int) bool {
	d.refill(t)
	tick := int(t / apiTick)
	for len(d.bins[w]) <= tick {
		d.bins[w] = append(d.bins[w], apiBin{})
	}
	b := &d.bins[w][tick]
	b.requests++
	if d.tokens < float64(n) {
		b.throttled++
		b.rejected += n
		return false
	}
	d.tokens -= float64(n)
	b.accepted += n
	return true
}

// sum adds the bins of writer w (all writers for w < 0) over [from, to).
func (d *apiDest) sum(w int, from, to time.Duration) apiBin {
	var s apiBin
	for i, bins := range d.bins {
		if w >= 0 && i != w {
			continue
		}
		for k := max(0, int(from/apiTick)); k < int(to/apiTick) && k < len(bins); k++ {
			s.accepted += bins[k].accepted
			s.rejected += bins[k].rejected
			s.requests += bins[k].requests
			s.throttled += bins[k].throttled
		}
	}
	return s
}

// apiSeg is a batch: n records from write position seq.
type apiSeg struct {
	n         int
	seq       int64
	attempts  int
	notBefore time.Duration
}

// apiWriter is one writer (one job's sinks.Writer) and its strategy.
type apiWriter struct {
	id          int
	s           Strategy
	naive       bool // the naive relay: one batch in flight, sleeps exactly Retry-After
	maxBatch    int
	maxInFlight int

	inflight int
	retries  []apiSeg // by seq
	next     int64
	held     *apiSeg // refused by the strategy: the writer blocks in Acquire with it
	timerGen uint64  // the live timer event's generation
	rng      *rand.Rand

	onThrottle func(now time.Duration, w *apiWriter, seg apiSeg, before float64) // optional trace hook
}

type apiEvent struct {
	at  time.Duration
	seq uint64
	w   *apiWriter
	// A completion when done is set, else a timer of generation gen.
	done *apiDone
	gen  uint64
}

type apiDone struct {
	seg  apiSeg
	sent time.Duration
	ok   bool
}

type apiQueue []apiEvent

func (q apiQueue) Len() int { return len(q) }
func (q apiQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q apiQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *apiQueue) Push(x any)   { *q = append(*q, x.(apiEvent)) }
func (q *apiQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// apiSim runs writers against one destination through one sender pipe.
type apiSim struct {
	m       apiModel
	now     time.Duration
	q       apiQueue
	seq     uint64
	dest    *apiDest
	free    time.Duration // when the sender pipe is free
	rng     *rand.Rand
	writers []*apiWriter
	events  int
	stalled bool // the event queue ran dry before the end
}

func (sim *apiSim) push(e apiEvent) {
	sim.seq++
	e.seq = sim.seq
	heap.Push(&sim.q, e)
}

func (sim *apiSim) timer(w *apiWriter, at time.Duration) {
	w.timerGen++
	sim.push(apiEvent{at: at, w: w, gen: w.timerGen})
}

func (sim *apiSim) req(n int) Request { return Request{Records: n, Bytes: n * sim.m.record} }

func (sim *apiSim) send(w *apiWriter, seg apiSeg) {
	w.inflight++
	depart := sim.now
	if sim.m.sendRate > 0 {
		depart = max(sim.now, sim.free) + time.Duration(float64(seg.n)/sim.m.sendRate*float64(time.Second))
		sim.free = depart
	}
	ok := sim.dest.offer(depart, w.id, seg.n)
	j := sim.m.latency / 6
	lat := sim.m.latency - j + time.Duration(sim.rng.Int64N(int64(2*j)+1))
	sim.push(apiEvent{at: depart + lat, w: w, done: &apiDone{seg: seg, sent: sim.now, ok: ok}})
}

// take is takeLocked: the oldest retry once due (a prefix when the
// strategy bounds retries), nothing while it is not due, else a new batch.
func (w *apiWriter) take(now time.Duration) (apiSeg, bool) {
	if len(w.retries) > 0 {
		r := w.retries[0]
		if now < r.notBefore {
			return apiSeg{}, false
		}
		limit := 0
		if rs, ok := w.s.(RetryBatchSizer); ok {
			limit = rs.RetryBatchSize()
		}
		if limit > 0 && r.n > limit {
			probe := r
			probe.n = limit
			w.retries[0].n -= limit
			w.retries[0].seq += int64(limit)
			return probe, true
		}
		w.retries = w.retries[1:]
		return r, true
	}
	n := w.maxBatch
	if m := w.s.MaxBatchSize(); m > 0 {
		n = min(n, m)
	}
	seg := apiSeg{n: n, seq: w.next}
	w.next += int64(n)
	return seg, true
}

func (w *apiWriter) pushRetry(r apiSeg) {
	i := len(w.retries)
	for i > 0 && w.retries[i-1].seq > r.seq {
		i--
	}
	w.retries = append(w.retries, apiSeg{})
	copy(w.retries[i+1:], w.retries[i:])
	w.retries[i] = r
}

// backoff is sinks.Writer's: 100 ms doubled per attempt, capped at 10 s,
// half fixed and half random.
func (w *apiWriter) backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt-1, 30)
	if d <= 0 || d > 10*time.Second {
		d = 10 * time.Second
	}
	half := d / 2
	return half + time.Duration(w.rng.Int64N(int64(half)+1))
}

// step is one pass of Run's loop at sim.now.
func (w *apiWriter) step(sim *apiSim) {
	now := sim.now
	for {
		if w.held == nil {
			if w.inflight >= w.maxInFlight {
				return // a completion wakes the loop
			}
			seg, ok := w.take(now)
			if !ok {
				// Run's timer: the oldest retry's backoff, at least 1 ms.
				sim.timer(w, max(w.retries[0].notBefore, now+time.Millisecond))
				return
			}
			w.held = &seg
		}
		req := sim.req(w.held.n)
		var ok bool
		if at, isAt := w.s.(TryAcquirerAt); isAt {
			ok = at.TryAcquireAt(apiT0.Add(now), req)
		} else {
			ok = w.s.TryAcquire(req)
		}
		if !ok {
			// Acquire: a timer for Admit's wait, or a signal (a completion).
			if g, isGate := w.s.(Gate); isGate {
				if _, wait := g.Admit(apiT0.Add(now), req); wait != Never {
					sim.timer(w, now+max(wait, time.Nanosecond))
				}
			}
			return
		}
		sim.send(w, *w.held)
		w.held = nil
	}
}

func (w *apiWriter) complete(sim *apiSim, d *apiDone) {
	now := sim.now
	res := Result{Request: sim.req(d.seg.n), Latency: now - d.sent}
	if !d.ok {
		res.Throttled, res.Failed = true, d.seg.n
	}
	var before float64
	if a, ok := w.s.(*AdaptiveRate); ok {
		before = a.Rate()
	}
	if c, ok := w.s.(interface{ CompleteAt(time.Time, Result) }); ok {
		c.CompleteAt(apiT0.Add(now), res)
	} else {
		w.s.Complete(res)
	}
	if !d.ok {
		seg := d.seg
		seg.attempts++
		wait := time.Second // Retry-After
		if !w.naive {
			wait = max(wait, w.backoff(seg.attempts))
		}
		seg.notBefore = now + wait
		w.pushRetry(seg)
		if w.onThrottle != nil {
			w.onThrottle(now, w, d.seg, before)
		}
	}
	w.inflight--
	w.step(sim)
}

// run advances the simulation to end, calling at(t) at each tick boundary
// first (capacity changes, traces).
func (sim *apiSim) run(end time.Duration, at func(t time.Duration)) {
	nextTick := time.Duration(0)
	for {
		for nextTick <= end && (sim.q.Len() == 0 || nextTick <= sim.q[0].at) {
			sim.now = nextTick
			if at != nil {
				at(nextTick)
			}
			nextTick += apiTick
		}
		if sim.q.Len() == 0 {
			// A writer always has data: something must be in flight, held
			// with a timer, or waiting for a retry's timer.
			sim.stalled = true
			return
		}
		if sim.q[0].at >= end {
			return
		}
		e := heap.Pop(&sim.q).(apiEvent)
		sim.now = e.at
		sim.events++
		switch {
		case e.done != nil:
			e.w.complete(sim, e.done)
		case e.gen == e.w.timerGen:
			e.w.step(sim)
		}
	}
}

// apiContender builds the strategy of one writer for capacity c (a
// writer's share of a shared destination: C/writers).
type apiContender struct {
	name     string
	naive    bool    // the naive relay instead of a Spillway writer
	sendRate float64 // > 0: the sender's throughput instead of the model's
	new      func(c float64) Strategy
}

func apiAdaptive(cfg AdaptiveRateConfig) func(float64) Strategy {
	return func(float64) Strategy {
		if err := cfg.Validate(); err != nil {
			panic(err)
		}
		cfg.ApplyDefaults()
		return newAdaptiveRate(apiT0, cfg) // NewAdaptiveRate with the simulated clock
	}
}

func apiMust(s Strategy, err error) Strategy {
	if err != nil {
		panic(err)
	}
	return s
}

var (
	apiNone = apiContender{name: "no strategy (before the fix)", new: func(float64) Strategy { return Unlimited{} }}
	apiAIMD = apiContender{name: "aimd defaults", new: func(float64) Strategy {
		return apiMust(New(Config{Kind: KindAIMD}, WriterLimits{MaxBatchSize: 500, MaxBatchBytes: 4 << 20, MaxInFlightRequests: 8}))
	}}
	apiTB1s = apiContender{name: "token_bucket at C, burst 1 s (old default)", new: func(c float64) Strategy {
		return apiMust(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: c}))
	}}
	apiTB500 = apiContender{name: "token_bucket at C, burst 500", new: func(c float64) Strategy {
		return apiMust(NewTokenBucket(TokenBucketConfig{RecordsPerSecond: c, RecordBurst: 500}))
	}}
	// kind: adaptive_rate as the registry builds it (burst: one batch, or
	// PacingSlack of the rate).
	apiAdaptiveDefault = apiContender{name: "adaptive_rate defaults (burst 500)", new: apiAdaptive(AdaptiveRateConfig{BatchBurst: 500})}
	// The zero config as NewAdaptiveRate takes it (initial_rate 0 is the
	// default too): burst one request, learnt from the first.
	apiAdaptiveZero = apiContender{name: "adaptive_rate zero config (burst 0)", new: apiAdaptive(AdaptiveRateConfig{})}
	// What internal/job now gives a sink without rate_limit.
	apiDefaultPacing = apiContender{name: "no rate_limit after the fix (pacing on throttles)",
		new: apiAdaptive(AdaptiveRateConfig{DecreaseOn: "throttles", BatchBurst: 500})}
	// The naive relay sends one request at a time, building each body and
	// waiting for each answer: FACTS.md measured Spillway (8 in flight)
	// at 2.1–2.3 times the one-batch relay on the same box, hence
	// 250k/2.2.
	apiNaive = apiContender{name: "naive relay (1 × 500 in flight)", naive: true, sendRate: 115_000,
		new: func(float64) Strategy { return Unlimited{} }}

	apiContenders = []apiContender{apiNone, apiAIMD, apiTB1s, apiTB500, apiAdaptiveDefault, apiAdaptiveZero, apiDefaultPacing, apiNaive}
	apiCaps       = []float64{2000, 20000, 80000, 200000}
)

// apiScenario is one run: writers of one contender against one gateway.
type apiScenario struct {
	m        apiModel
	ct       apiContender
	c        float64 // capacity at the start, shared by all writers
	burst    float64 // the gateway's burst; 0: C/10
	writers  int     // 0: 1
	end      time.Duration
	schedule map[time.Duration]float64 // capacity changes at tick boundaries
	tick     func(t time.Duration, sim *apiSim)
	throttle func(now time.Duration, w *apiWriter, seg apiSeg, before float64)
	seed     uint64 // of the latency and backoff jitter; 0 is the tables' seed
}

func (sc apiScenario) run() *apiSim {
	n := max(sc.writers, 1)
	m := sc.m
	if sc.ct.sendRate > 0 {
		m.sendRate = sc.ct.sendRate
	}
	sim := &apiSim{m: m, dest: newAPIDest(sc.c, sc.burst, n), rng: rand.New(rand.NewPCG(9+sc.seed, 1))}
	for i := range n {
		w := &apiWriter{id: i, s: sc.ct.new(sc.c / float64(n)), naive: sc.ct.naive, maxBatch: 500, maxInFlight: 8,
			rng: rand.New(rand.NewPCG(uint64(i), 9+sc.seed)), onThrottle: sc.throttle}
		if w.naive {
			w.maxInFlight = 1
		}
		sim.writers = append(sim.writers, w)
	}
	sim.run(sc.end, func(t time.Duration) {
		if c, ok := sc.schedule[t]; ok {
			sim.dest.setCapacity(t, c)
		}
		if t == 0 {
			for _, w := range sim.writers {
				w.step(sim)
			}
		}
		if sc.tick != nil {
			sc.tick(t, sim)
		}
	})
	return sim
}

// apiFigures are goodput (share of capacity) and the share of requests
// answered 429 over a window.
type apiFigures struct {
	goodput, throttled, perRequest float64
	requests                       int
	stalled                        bool
}

func apiMeasure(sim *apiSim, w int, from, to time.Duration, capacity float64) apiFigures {
	s := sim.dest.sum(w, from, to)
	f := apiFigures{goodput: float64(s.accepted) / capacity, requests: s.requests, stalled: sim.stalled}
	if s.requests > 0 {
		f.throttled = float64(s.throttled) / float64(s.requests)
		f.perRequest = float64(s.accepted+s.rejected) / float64(s.requests)
	}
	return f
}

func (f apiFigures) String() string {
	s := fmt.Sprintf("%5.1f%% / %4.1f%%", 100*f.goodput, 100*f.throttled)
	if f.stalled {
		s += " STALLED"
	}
	return s
}

// apiSettle is the benchmark's rlSettle: how long after at the goodput
// first stays within 10% of target for two consecutive seconds, trying
// every tick until two seconds before end; false if it never does.
func apiSettle(d *apiDest, at, end time.Duration, target float64) (time.Duration, bool) {
	within := func(from time.Duration) bool {
		g := float64(d.sum(-1, from, from+time.Second).accepted)
		return math.Abs(g-target) <= 0.1*target
	}
	for t := at; t+2*time.Second <= end; t += apiTick {
		if within(t) && within(t+time.Second) {
			return t - at, true
		}
	}
	return end - at, false
}

const (
	apiWarm   = 10 * time.Second
	apiWindow = 20 * time.Second
)

// apiRow is one contender's cells, one per capacity of apiCaps.
type apiRow struct {
	name  string
	cells []string
}

func apiTable(title, corner string, rows []apiRow) string {
	var s strings.Builder
	fmt.Fprintf(&s, "%s\n| %-50s |", title, corner)
	for _, c := range apiCaps {
		fmt.Fprintf(&s, " %-27s |", fmt.Sprintf("C = %.0f", c))
	}
	s.WriteString("\n|" + strings.Repeat(" --- |", len(apiCaps)+1) + "\n")
	for _, r := range rows {
		fmt.Fprintf(&s, "| %-50s |", r.name)
		for _, c := range r.cells {
			fmt.Fprintf(&s, " %-27s |", c)
		}
		s.WriteString("\n")
	}
	return s.String()
}

// apiMeasured is what issue 9 measured against the real gateway: goodput
// and the share of requests answered 429 (negative: not given).
type apiMeasured struct{ goodput, throttled float64 }

var apiIssue = map[string]map[float64]apiMeasured{
	apiAIMD.name:  {20000: {0.12, 0.087}, 80000: {0.21, 0.021}},
	apiNone.name:  {20000: {0.10, 0.59}, 80000: {0.15, 0.18}},
	apiTB1s.name:  {20000: {0.11, 0.60}},
	apiTB500.name: {20000: {0.87, 0}},
	apiNaive.name: {20000: {0.10, -1}, 80000: {0.29, -1}},
}

// TestAPISimBeforeAndAfter runs the contenders of issue 9 against the
// rate-limited gateway for 30 s and measures 10–30 s. Before the fix, the
// figures the issue measured are reproduced (goodput within a factor of
// 1.5). After it, the issue's goal: adaptive_rate with default settings
// delivers ≥ 90% of C with ≤ 5% of requests throttled, and more than the
// naive relay, at every C; and a sink without rate_limit ≥ 80% (item 4).
//
// Where the model does not match a measurement: aimd at 80k gets about 15%
// here against 21% measured (and 4% of requests throttled against 2.1%).
// In the model a request's round trip is 0.3 ms plus its share of the
// sender's throughput, so AIMD's limit on records in flight (a few hundred
// after its halvings) still lets the writer send faster than C and it
// behaves like the writer without a strategy; on the real, loaded box
// round trips are longer and that limit throttles the writer below the
// sender's throughput, overrunning the bucket more slowly. The token
// bucket with a burst of one batch got 100% here against 79-87% measured
// at 200,000 records/s: the model has no timer slack, which lost the
// tokens of every late wakeup until default bursts held PacingSlack of the
// rate (then 100% measured too). Both are inside the band.
func TestAPISimBeforeAndAfter(t *testing.T) {
	res := map[string]map[float64]apiFigures{}
	var rows []apiRow
	for _, ct := range apiContenders {
		res[ct.name] = map[float64]apiFigures{}
		row := apiRow{name: ct.name}
		for _, c := range apiCaps {
			sim := apiScenario{m: apiModelDefault, ct: ct, c: c, end: apiWarm + apiWindow}.run()
			f := apiMeasure(sim, -1, apiWarm, apiWarm+apiWindow, c*apiWindow.Seconds())
			res[ct.name][c] = f
			cell := f.String()
			if m, ok := apiIssue[ct.name][c]; ok {
				if m.throttled < 0 {
					cell += fmt.Sprintf(" [%.0f%%]", 100*m.goodput)
				} else {
					cell += fmt.Sprintf(" [%.0f%% / %.0f%%]", 100*m.goodput, 100*m.throttled)
				}
			}
			row.cells = append(row.cells, cell)
			if f.stalled {
				t.Errorf("%s at C=%.0f: the simulation stalled", ct.name, c)
			}
		}
		rows = append(rows, row)
	}
	t.Log("\n" + apiTable(fmt.Sprintf("Rate-limited gateway (bucket C/10, 429 + Retry-After 1 s), simulated 30 s; sender %.0fk records/s (naive relay %.0fk), latency %v. [measured in issue 9]",
		apiModelDefault.sendRate/1000, apiNaive.sendRate/1000, apiModelDefault.latency), "goodput / 429 over 10–30 s", rows))

	t.Run("before the fix", func(t *testing.T) {
		for _, ct := range apiContenders {
			for _, c := range apiCaps {
				want, ok := apiIssue[ct.name][c]
				if !ok {
					continue
				}
				if got := res[ct.name][c]; got.goodput < want.goodput/1.5 || got.goodput > want.goodput*1.5 {
					t.Errorf("%s at C=%.0f: goodput %.1f%% of C, measured %.0f%%; want within a factor of 1.5", ct.name, c, 100*got.goodput, 100*want.goodput)
				}
			}
		}
	})
	t.Run("goal: adaptive_rate defaults", func(t *testing.T) {
		for _, c := range apiCaps {
			got, naive := res[apiAdaptiveDefault.name][c], res[apiNaive.name][c]
			if got.goodput < 0.9 || got.throttled > 0.05 {
				t.Errorf("C=%.0f: goodput %.1f%% of C with %.1f%% of requests throttled; want ≥ 90%% and ≤ 5%%", c, 100*got.goodput, 100*got.throttled)
			}
			if got.goodput <= naive.goodput {
				t.Errorf("C=%.0f: goodput %.1f%%, not more than the naive relay's %.1f%%", c, 100*got.goodput, 100*naive.goodput)
			}
		}
	})
	t.Run("goal: no rate_limit", func(t *testing.T) {
		for _, c := range apiCaps {
			if got := res[apiDefaultPacing.name][c]; got.goodput < 0.8 {
				t.Errorf("C=%.0f: goodput %.1f%% of C without rate_limit; want ≥ 80%%", c, 100*got.goodput)
			}
		}
	})
	t.Run("adaptive_rate trace", func(t *testing.T) {
		for _, c := range apiCaps {
			t.Log("\n" + apiTrace(apiModelDefault, apiAdaptiveDefault, c, 30*time.Second, nil))
		}
	})
}

// apiTrace runs ct at capacity c (changed by schedule) and returns a trace
// of its rate: throttles (the first 12, and the first 12 after each
// capacity change), and one line a second.
func apiTrace(m apiModel, ct apiContender, c float64, end time.Duration, schedule map[time.Duration]float64) string {
	var s strings.Builder
	fmt.Fprintf(&s, "%s at C=%.0f (bucket %.0f)\n", ct.name, c, max(1, math.Floor(c/10)))
	rate := func(w *apiWriter) string {
		a, ok := w.s.(*AdaptiveRate)
		if !ok {
			return "-"
		}
		if !a.limited {
			return "unlimited"
		}
		return fmt.Sprintf("%.0f", a.rate)
	}
	var sim *apiSim
	throttles, shown := 0, 0
	sc := apiScenario{m: m, ct: ct, c: c, end: end, schedule: schedule}
	sc.throttle = func(now time.Duration, w *apiWriter, seg apiSeg, before float64) {
		throttles++
		if shown++; shown > 12 {
			return
		}
		a := w.s.(*AdaptiveRate)
		took := sim.dest.sum(-1, now-time.Second, now+apiTick).accepted
		fmt.Fprintf(&s, "  %8v 429 for %d records (attempt %d): rate %.0f -> %s, w_max %.0f, batch cap %d, gateway took %d in the last second, %d retries queued\n",
			now.Round(10*time.Microsecond), seg.n, seg.attempts+1, before, rate(w), a.wMax, a.batchCap, took, len(w.retries))
	}
	sc.tick = func(t time.Duration, cur *apiSim) {
		sim = cur
		if t > 0 && t%time.Second == 0 {
			f := apiMeasure(cur, -1, t-time.Second, t, c)
			fmt.Fprintf(&s, "  %3.0fs rate %-9s goodput %5.1f%% of C, %3d requests (%3.0f records each), %4.1f%% 429, %d throttles so far\n",
				t.Seconds(), rate(cur.writers[0]), 100*f.goodput, f.requests, f.perRequest, 100*f.throttled, throttles)
		}
		if c2, ok := schedule[t]; ok {
			fmt.Fprintf(&s, "  %3.0fs capacity now %.0f\n", t.Seconds(), c2)
			c, shown = c2, 0
		}
	}
	sc.run()
	return s.String()
}

// TestAPISimStep: C drops to C/2 at 10 s and comes back at 20 s; the time
// until goodput stays within 10% of the new capacity for two whole
// seconds. adaptive_rate must settle after the drop within the 10 s the
// drop lasts (a strategy that does not slow down keeps being throttled) for
// C >= 20,000; the time after the return, and C = 2000, are reported.
func TestAPISimStep(t *testing.T) {
	const end = 40 * time.Second
	var rows []apiRow
	for _, ct := range []apiContender{apiAdaptiveDefault, apiDefaultPacing, apiAIMD, apiTB500, apiNaive} {
		row := apiRow{name: ct.name}
		for _, c := range apiCaps {
			sim := apiScenario{m: apiModelDefault, ct: ct, c: c, end: end,
				schedule: map[time.Duration]float64{10 * time.Second: c / 2, 20 * time.Second: c}}.run()
			down, downOK := apiSettle(sim.dest, 10*time.Second, 20*time.Second, c/2)
			up, upOK := apiSettle(sim.dest, 20*time.Second, end, c)
			settle := func(d time.Duration, ok bool) string {
				if !ok {
					return "never"
				}
				return d.String()
			}
			row.cells = append(row.cells, fmt.Sprintf("%s, %s", settle(down, downOK), settle(up, upOK)))
			// At C = 2000 the gateway's burst (100 records after the drop)
			// is below every batch the writer has queued; settling there is
			// still open (issue 9), so it is reported, not asserted.
			if ct.name == apiAdaptiveDefault.name && !downOK && c >= 20000 {
				t.Errorf("%s at C=%.0f: goodput never settled within 10%% of C/2 in the 10 s after the drop", ct.name, c)
			}
		}
		rows = append(rows, row)
	}
	t.Log("\n" + apiTable("C drops to C/2 at 10 s and returns at 20 s (simulated 40 s): time to settle within 10% after the drop, after the return", "contender", rows))
	t.Run("adaptive_rate trace", func(t *testing.T) {
		t.Log("\n" + apiTrace(apiModelDefault, apiAdaptiveDefault, 20000, 40*time.Second,
			map[time.Duration]float64{10 * time.Second: 10000, 20 * time.Second: 20000}))
	})
}

// TestAPISimFourWriters: four writers, each with its own strategy (a
// token bucket at C/4), share one gateway. adaptive_rate must reach ≥ 90%
// of C together with ≤ 5% throttled (C >= 20,000); the lowest and highest
// writer's share of C/4 is reported.
func TestAPISimFourWriters(t *testing.T) {
	const workers = 4
	var rows []apiRow
	for _, ct := range []apiContender{apiAdaptiveDefault, apiDefaultPacing, apiNone, apiAIMD, apiTB500} {
		row := apiRow{name: ct.name}
		for _, c := range apiCaps {
			sim := apiScenario{m: apiModelDefault, ct: ct, c: c, writers: workers, end: apiWarm + apiWindow}.run()
			all := apiMeasure(sim, -1, apiWarm, apiWarm+apiWindow, c*apiWindow.Seconds())
			lo, hi := math.Inf(1), 0.0
			for w := range workers {
				g := apiMeasure(sim, w, apiWarm, apiWarm+apiWindow, c/workers*apiWindow.Seconds()).goodput
				lo, hi = min(lo, g), max(hi, g)
			}
			row.cells = append(row.cells, fmt.Sprintf("%s (%.0f–%.0f%%)", all, 100*lo, 100*hi))
		}
		rows = append(rows, row)
	}
	t.Log("\n" + apiTable("Four writers sharing one gateway (simulated 30 s)", "goodput / 429 over 10–30 s (lowest–highest writer, share of C/4)", rows))
	// Together the writers must reach the single writer's goal for C >=
	// 20,000, over the long run (one 20 s window depends on where four
	// writers' probes fall; see TestAPISimSlidingWindows). At C = 2000 (a
	// share of 500 records/s against a burst of 200) four writers each on
	// their own are reported, not held to it: scope group
	// (TestGroupAdaptiveRateFindsShares and the group4 benchmark) is the way
	// to a fair split there.
	row := apiRow{name: "adaptive_rate defaults, 5 seeds × 110 s"}
	for _, c := range apiCaps {
		lr := apiLongRun(apiAdaptiveDefault, c, workers)
		row.cells = append(row.cells, lr.String())
		if c >= 20000 && (lr.goodput < 0.9 || lr.throttled > 0.05) {
			t.Errorf("C=%.0f: four writers deliver %.1f%% of C over 10–110 s with %.1f%% throttled; want ≥ 90%% and ≤ 5%%", c, 100*lr.goodput, 100*lr.throttled)
		}
	}
	t.Log("\n" + apiTable("Four writers sharing one gateway, long run", "goodput / 429 over 10–110 s (lowest window; windows below 90%)", []apiRow{row}))
}

// apiLong is the long run of apiLongRun.
type apiLong struct {
	goodput, throttled float64 // over 10–110 s, mean of the seeds
	low                float64 // the lowest 20 s window
	below              float64 // the share of 20 s windows below 90% of C
	windows            int
}

func (l apiLong) String() string {
	return fmt.Sprintf("%.1f%% / %.1f%% (%.1f%%; %.0f%%)", 100*l.goodput, 100*l.throttled, 100*l.low, 100*l.below)
}

// apiLongRun runs ct with writers writers against capacity c for 110 s,
// five times with other jitter (seeds), and measures 10–110 s and each
// 20 s window starting every 2 s from 10 s to 90 s.
func apiLongRun(ct apiContender, c float64, writers int) apiLong {
	const (
		seeds = 5
		end   = 110 * time.Second
		last  = 90 * time.Second
	)
	l := apiLong{low: math.Inf(1)}
	below := 0
	for seed := range uint64(seeds) {
		sim := apiScenario{m: apiModelDefault, ct: ct, c: c, writers: writers, end: end, seed: seed}.run()
		for from := apiWarm; from <= last; from += 2 * time.Second {
			g := apiMeasure(sim, -1, from, from+apiWindow, c*apiWindow.Seconds()).goodput
			l.low = min(l.low, g)
			if g < 0.9 {
				below++
			}
			l.windows++
		}
		f := apiMeasure(sim, -1, apiWarm, end, c*(end-apiWarm).Seconds())
		l.goodput += f.goodput / seeds
		l.throttled += f.throttled / seeds
	}
	l.below = float64(below) / float64(l.windows)
	return l
}

// TestAPISimBatchLargerThanBurst is issue 9's item 4: 1 KiB records, C =
// 3000 with a bucket of 300 records, smaller than a batch of 500. Before
// the fix a sink without rate_limit delivered 125 records/s (4% of C)
// after 40 s; the goal is ≥ 80% of C without rate_limit. The model
// delivers nothing at all before the fix: every request is a full batch
// of 500, which never fits. (The real writer's batches follow the source's
// chunks, so some were smaller; hence the 4%.)
func TestAPISimBatchLargerThanBurst(t *testing.T) {
	const end = 40 * time.Second
	m := apiModelDefault
	m.record = 1024
	var s strings.Builder
	s.WriteString("1 KiB records, C = 3000, bucket 300 (simulated 40 s)\n| contender | goodput, whole run | goodput / 429, last 10 s | records per request, last 10 s |\n| --- | --- | --- | --- |\n")
	for _, ct := range []apiContender{apiNone, apiDefaultPacing, apiAdaptiveDefault, apiAdaptiveZero, apiAIMD, apiNaive} {
		sim := apiScenario{m: m, ct: ct, c: 3000, burst: 300, end: end}.run()
		whole := apiMeasure(sim, -1, 0, end, 3000*end.Seconds())
		late := apiMeasure(sim, -1, end-10*time.Second, end, 3000*10)
		fmt.Fprintf(&s, "| %s | %.1f%% | %s | %.0f |\n", ct.name, 100*whole.goodput, late, late.perRequest)
		switch ct.name {
		case apiNone.name:
			if late.goodput > 0.04*1.5 {
				t.Errorf("%s: %.1f%% of C over the last 10 s; measured 4%%", ct.name, 100*late.goodput)
			}
		case apiDefaultPacing.name:
			if late.goodput < 0.8 {
				t.Errorf("%s: %.1f%% of C over the last 10 s; want ≥ 80%%", ct.name, 100*late.goodput)
			}
		}
	}
	t.Log("\n" + s.String())
}

// TestAPISimSlidingWindows: the goal of TestAPISimBeforeAndAfter in every
// window, not only in 10–30 s. One writer with adaptive_rate defaults runs
// 110 s against the gateway, five times with other jitter (seeds); each 20 s
// window starting every 2 s from 10 s to 90 s is measured. A throttle's
// Retry-After pause costs a second of C, 5% of a window, so one window's
// figure depends on where the probes fall; the long run is the capacity
// the strategy reaches. Wanted at every C: at least 95% of the windows at
// 90% of C or more, none below 85%, and 93% of C from 10 s to the end.
// (Before the careful first measure, the plateau below it and the slower
// probe of a steady capacity, 43–51% of the windows were below 90% at
// every C.)
func TestAPISimSlidingWindows(t *testing.T) {
	row := apiRow{name: "adaptive_rate defaults, 5 seeds × 110 s"}
	for _, c := range apiCaps {
		l := apiLongRun(apiAdaptiveDefault, c, 1)
		row.cells = append(row.cells, l.String())
		if l.goodput < 0.93 || l.low < 0.85 || l.below > 0.05 {
			t.Errorf("C=%.0f: %.1f%% of C over 10–110 s, lowest window %.1f%%, %.0f%% of windows below 90%%; want ≥ 93%%, ≥ 85%%, ≤ 5%%", c, 100*l.goodput, 100*l.low, 100*l.below)
		}
	}
	t.Log("\n" + apiTable("One writer, long run", "goodput / 429 over 10–110 s (lowest window; windows below 90%)", []apiRow{row}))
}
