package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/sources/generate"
)

// This file is a test HTTP receiver that behaves like a rate-limited API
// gateway (issue 9): a capacity of C records/s enforced as a token bucket
// of C records/s holding at most B records. A batch that does not fit the
// bucket is answered 429 with Retry-After and none of its records count;
// otherwise 200. BenchmarkRateLimitedAPI runs Spillway against it.

// gatewayTick is the resolution of the gateway's counters.
const gatewayTick = 100 * time.Millisecond

// gatewayWorkerHeader names the sender of a request: ids are de-duplicated
// per value of this header, so several generators, each counting from 0,
// can share one gateway.
const gatewayWorkerHeader = "X-Worker"

// bucket is a token bucket of records: rate records/s, holding at most
// burst. It starts full. Time is an input, so it is exact and testable;
// tokens are kept in record-nanoseconds, so no rounding ever admits or
// refuses a batch it should not. A time before the last one seen adds
// nothing. Not safe for concurrent use.
type bucket struct {
	rate  int64     // records per second, > 0
	burst int64     // most records held, > 0
	nano  int64     // records held × 1e9
	last  time.Time // when nano was last brought up to date
}

func newBucket(now time.Time, rate, burst int64) bucket {
	return bucket{rate: rate, burst: burst, nano: burst * int64(time.Second), last: now}
}

// advance adds the tokens earned since the last call, up to burst.
func (b *bucket) advance(now time.Time) {
	d := now.Sub(b.last)
	if d <= 0 {
		return
	}
	b.last = now
	room := b.burst*int64(time.Second) - b.nano
	if room <= 0 || int64(d) > room/b.rate {
		b.nano = b.burst * int64(time.Second)
		return
	}
	b.nano += b.rate * int64(d)
}

// take removes n records' tokens at now and reports true, or reports false
// and removes nothing if fewer than n are held. A batch larger than burst
// never fits.
func (b *bucket) take(now time.Time, n int) bool {
	b.advance(now)
	need := int64(n) * int64(time.Second)
	if need > b.nano {
		return false
	}
	b.nano -= need
	return true
}

// tokens returns the whole records held at now.
func (b *bucket) tokens(now time.Time) int64 {
	b.advance(now)
	return b.nano / int64(time.Second)
}

// set changes the rate and the burst at now; what is held beyond the new
// burst is dropped.
func (b *bucket) set(now time.Time, rate, burst int64) {
	b.advance(now)
	b.rate, b.burst = rate, burst
	b.nano = min(b.nano, burst*int64(time.Second))
}

// gatewayConfig is the gateway's knobs. Zero values mean the default given
// on each field.
type gatewayConfig struct {
	Capacity   int           // C, records/s; required
	Burst      int           // B, records; 0 = C/10 (at least 1), which then follows C when setCapacity changes it
	RetryAfter int           // seconds sent in Retry-After on a 429; 0 = 1; negative = no header
	Latency    time.Duration // added before every answer
	Now        func() time.Time
}

// gatewayBin is what the gateway counted over one tick (or a sum of ticks).
type gatewayBin struct {
	Accepted  int64 // records of requests answered 200, duplicates included
	Dups      int64 // of Accepted, records whose (worker, id) had already been accepted
	Rejected  int64 // records of requests answered 429
	Requests  int64 // every request, whatever the answer
	Throttled int64 // requests answered 429
	Oversize  int64 // requests with more records than the bucket holds when full: they can never fit
	Bad       int64 // requests whose body was not a JSON array or NDJSON (400)
}

func (s *gatewayBin) add(o gatewayBin) {
	s.Accepted += o.Accepted
	s.Dups += o.Dups
	s.Rejected += o.Rejected
	s.Requests += o.Requests
	s.Throttled += o.Throttled
	s.Oversize += o.Oversize
	s.Bad += o.Bad
}

// Goodput is the records accepted for the first time.
func (s gatewayBin) Goodput() int64 { return s.Accepted - s.Dups }

// gateway is the rate-limited receiver. Its methods are safe for
// concurrent use.
type gateway struct {
	srv *httptest.Server
	now func() time.Time

	mu         sync.Mutex
	cfg        gatewayConfig
	start      time.Time
	bucket     bucket
	open       bool                       // no limit: every batch fits (teardown)
	bins       []gatewayBin               // per tick since start
	perWorker  map[string][]int64         // goodput per tick per worker header
	seen       map[string]*idSet          // accepted ids per worker header
	sizeCounts map[int]int64              // requests per record count, for diagnostics
	onRequest  func(n int, accepted bool) // test hook, called under mu
}

// newGateway starts a gateway on a loopback port; stop it with close.
func newGateway(cfg gatewayConfig) *gateway {
	g := newGatewayHandler(cfg)
	g.srv = httptest.NewServer(g)
	return g
}

// newGatewayHandler is a gateway without a server, for tests that call
// ServeHTTP directly.
func newGatewayHandler(cfg gatewayConfig) *gateway {
	if cfg.Capacity <= 0 {
		panic("gateway: capacity must be positive")
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = 1
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	g := &gateway{now: now, cfg: cfg, perWorker: map[string][]int64{}, seen: map[string]*idSet{}, sizeCounts: map[int]int64{}}
	g.start = now()
	g.bucket = newBucket(g.start, int64(cfg.Capacity), g.burstFor(cfg.Capacity))
	return g
}

func (g *gateway) burstFor(capacity int) int64 {
	if g.cfg.Burst > 0 {
		return int64(g.cfg.Burst)
	}
	return max(1, int64(capacity)/10)
}

// URL is where to send batches.
func (g *gateway) URL() string { return g.srv.URL + "/ingest" }

func (g *gateway) close() {
	if g.srv != nil {
		g.srv.CloseClientConnections()
		g.srv.Close()
	}
}

// Start is the gateway's time zero: ticks count from it.
func (g *gateway) Start() time.Time { return g.start }

// setCapacity changes C at once; B follows (C/10) unless it was set.
func (g *gateway) setCapacity(capacity int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cfg.Capacity = capacity
	g.bucket.set(g.now(), int64(capacity), g.burstFor(capacity))
}

// openUp lifts the limit: every batch is accepted from now on (used to let
// a job drain quickly once the measurement is over).
func (g *gateway) openUp() {
	g.mu.Lock()
	g.open = true
	g.mu.Unlock()
}

// ServeHTTP counts the batch, takes its records from the bucket and answers
// 200 if they fit, 429 otherwise.
func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var ids []int64
	n, err := scanBatch(body, strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-ndjson"), func(id int64) { ids = append(ids, id) })
	worker := r.Header.Get(gatewayWorkerHeader)

	g.mu.Lock()
	now := g.now()
	bin := g.binAt(now)
	bin.Requests++
	status := http.StatusOK
	switch {
	case err != nil:
		bin.Bad++
		status = http.StatusBadRequest
	case g.open || g.bucket.take(now, n):
		bin.Accepted += int64(n)
		seen := g.seen[worker]
		if seen == nil {
			seen = &idSet{}
			g.seen[worker] = seen
		}
		var dups int64
		for _, id := range ids {
			if !seen.add(id) {
				dups++
			}
		}
		bin.Dups += dups
		g.workerBin(worker, now)[0] += int64(n) - dups
	default:
		bin.Rejected += int64(n)
		bin.Throttled++
		status = http.StatusTooManyRequests
	}
	if err == nil {
		g.sizeCounts[n]++
		if int64(n) > g.bucket.burst && !g.open {
			bin.Oversize++
		}
	}
	if g.onRequest != nil {
		g.onRequest(n, status == http.StatusOK)
	}
	latency, retryAfter := g.cfg.Latency, g.cfg.RetryAfter
	g.mu.Unlock()

	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch status {
	case http.StatusBadRequest:
		http.Error(w, fmt.Sprintf("bad batch: %v", err), status)
	case http.StatusTooManyRequests:
		if retryAfter >= 0 {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
		}
		http.Error(w, "rate limit exceeded", status)
	default:
		w.WriteHeader(status)
	}
}

// binAt returns the tick holding now, growing bins as needed; a time
// before start counts in tick 0. Called under mu.
func (g *gateway) binAt(now time.Time) *gatewayBin {
	i := max(0, int(now.Sub(g.start)/gatewayTick))
	for len(g.bins) <= i {
		g.bins = append(g.bins, gatewayBin{})
	}
	return &g.bins[i]
}

// workerBin returns worker's goodput slot for now's tick. Called under mu.
func (g *gateway) workerBin(worker string, now time.Time) []int64 {
	i := max(0, int(now.Sub(g.start)/gatewayTick))
	ticks := g.perWorker[worker]
	for len(ticks) <= i {
		ticks = append(ticks, 0)
	}
	g.perWorker[worker] = ticks
	return ticks[i : i+1]
}

// ticks returns a copy of the per-tick counters.
func (g *gateway) ticks() []gatewayBin {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]gatewayBin(nil), g.bins...)
}

// perSecond returns the counters per whole second since start.
func (g *gateway) perSecond() []gatewayBin {
	ticks := g.ticks()
	per := int(time.Second / gatewayTick)
	out := make([]gatewayBin, (len(ticks)+per-1)/per)
	for i, b := range ticks {
		out[i/per].add(b)
	}
	return out
}

// window sums the ticks that start in [from, to) after start.
func (g *gateway) window(from, to time.Duration) gatewayBin {
	return sumTicks(g.ticks(), from, to)
}

func sumTicks(ticks []gatewayBin, from, to time.Duration) gatewayBin {
	var s gatewayBin
	lo, hi := tickRange(from, to, len(ticks))
	for _, b := range ticks[lo:hi] {
		s.add(b)
	}
	return s
}

// tickRange returns the indexes [lo, hi) of the ticks that start in
// [from, to), within n ticks.
func tickRange(from, to time.Duration, n int) (lo, hi int) {
	ceil := func(d time.Duration) int { return int((max(d, 0) + gatewayTick - 1) / gatewayTick) }
	lo, hi = min(ceil(from), n), min(ceil(to), n)
	return lo, max(lo, hi)
}

// workerGoodput returns each worker's goodput over the ticks that start in
// [from, to).
func (g *gateway) workerGoodput(from, to time.Duration) map[string]int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int64{}
	for w, ticks := range g.perWorker {
		var s int64
		lo, hi := tickRange(from, to, len(ticks))
		for _, v := range ticks[lo:hi] {
			s += v
		}
		out[w] = s
	}
	return out
}

// workerTimeline returns each worker's goodput per second from the start,
// "w0: 0:1200 1:980 …" one line per worker, sorted by worker.
func (g *gateway) workerTimeline() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	per := int(time.Second / gatewayTick)
	var out strings.Builder
	for _, w := range slices.Sorted(maps.Keys(g.perWorker)) {
		ticks := g.perWorker[w]
		fmt.Fprintf(&out, "\n%s:", w)
		for i := 0; i*per < len(ticks); i++ {
			var s int64
			for _, v := range ticks[i*per : min((i+1)*per, len(ticks))] {
				s += v
			}
			fmt.Fprintf(&out, " %d:%d", i, s)
		}
	}
	return out.String()
}

// requestSizes returns how many requests carried each record count.
func (g *gateway) requestSizes() map[int]int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[int]int64, len(g.sizeCounts))
	for k, v := range g.sizeCounts {
		out[k] = v
	}
	return out
}

// idSet is a set of record ids: a bitset for the dense ids a generator
// produces (0 to 2^31), a map for the rest.
type idSet struct {
	bits  []uint64
	other map[int64]struct{}
}

// add inserts id and reports whether it was new.
func (s *idSet) add(id int64) bool {
	if id >= 0 && id < 1<<31 {
		w, m := id/64, uint64(1)<<(id%64)
		if int64(len(s.bits)) <= w {
			s.bits = append(s.bits, make([]uint64, int(w)+1-len(s.bits)+len(s.bits)/2)...)
		}
		if s.bits[w]&m != 0 {
			return false
		}
		s.bits[w] |= m
		return true
	}
	if s.other == nil {
		s.other = map[int64]struct{}{}
	}
	if _, ok := s.other[id]; ok {
		return false
	}
	s.other[id] = struct{}{}
	return true
}

// errNotBatch is scanBatch's error for a body that is not a batch.
var errNotBatch = errors.New("not a JSON array")

// scanBatch counts the records of a request body in the HTTP sink's
// formats, a JSON array (one element per record) or NDJSON (one per
// non-empty line), and calls id with the numeric "id" of every element that
// is an object carrying one (generate's values). It checks the structure
// (brackets, strings, commas), not every token: the sink writes valid JSON,
// and a fast scan keeps a flood of rejected batches cheap.
func scanBatch(body []byte, ndjson bool, id func(int64)) (int, error) {
	if ndjson {
		n := 0
		for line := range bytes.SplitSeq(body, []byte{'\n'}) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			if end, err := skipValue(line, 0); err != nil || end != len(line) {
				return 0, fmt.Errorf("line %d: not one JSON value", n+1)
			}
			n++
			elementID(line, id)
		}
		return n, nil
	}
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '[' {
		return 0, errNotBatch
	}
	i = skipSpace(body, i+1)
	n := 0
	if i < len(body) && body[i] == ']' {
		i++
	} else {
		for {
			end, err := skipValue(body, i)
			if err != nil {
				return 0, fmt.Errorf("element %d: %w", n, err)
			}
			elementID(body[i:end], id)
			n++
			i = skipSpace(body, end)
			if i >= len(body) {
				return 0, errNotBatch
			}
			if body[i] == ']' {
				i++
				break
			}
			if body[i] != ',' {
				return 0, fmt.Errorf("element %d: want ',' or ']', got %q", n, body[i])
			}
			i = skipSpace(body, i+1)
		}
	}
	if skipSpace(body, i) != len(body) {
		return 0, errors.New("data after the array")
	}
	return n, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just after the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("missing value")
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipString(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errors.New("unterminated object or array")
	case ',', ']', '}', ':':
		return 0, fmt.Errorf("unexpected %q", b[i])
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != ']' && b[j] != '}' && b[j] != ' ' && b[j] != '\n' && b[j] != '\t' && b[j] != '\r' {
			j++
		}
		return j, nil
	}
}

// skipString returns the index just after the string starting at b[i].
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errors.New("unterminated string")
}

// elementID calls id with elem's "id" if elem is an object carrying an
// integer one: a fast path for generate's {"id":N,...}, json otherwise.
func elementID(elem []byte, id func(int64)) {
	if len(elem) == 0 || elem[0] != '{' {
		return
	}
	if rest, ok := bytes.CutPrefix(elem, []byte(`{"id":`)); ok {
		j := 0
		if j < len(rest) && rest[j] == '-' {
			j++
		}
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j < len(rest) && (rest[j] == ',' || rest[j] == '}') {
			if v, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil {
				id(v)
				return
			}
		}
	}
	var v struct {
		ID *int64 `json:"id"`
	}
	if json.Unmarshal(elem, &v) == nil && v.ID != nil {
		id(*v.ID)
	}
}

// TestRateLimitedReceiverBucket checks the gateway's bucket with time as
// an input: it starts full, refills at its rate up to its burst, refuses a
// batch that does not fit without taking anything, never fits a batch
// larger than its burst, and follows a change of rate at once.
func TestRateLimitedReceiverBucket(t *testing.T) {
	type step struct {
		at     time.Duration
		take   int   // records to take (when set is zero)
		set    int64 // > 0: change the rate to set and the burst to burst
		burst  int64
		want   bool  // take's answer
		tokens int64 // whole records held afterwards
	}
	cases := []struct {
		name        string
		rate, burst int64
		steps       []step
	}{
		{"starts full; a batch of the burst fits, then nothing", 1000, 100, []step{
			{at: 0, take: 100, want: true, tokens: 0},
			{at: 0, take: 1, want: false, tokens: 0},
		}},
		{"refills at the rate, never above the burst", 1000, 100, []step{
			{at: 0, take: 100, want: true, tokens: 0},
			{at: 50 * time.Millisecond, take: 51, want: false, tokens: 50},
			{at: 50 * time.Millisecond, take: 50, want: true, tokens: 0},
			{at: 10 * time.Second, take: 0, want: true, tokens: 100},
		}},
		{"a refused batch takes nothing", 1000, 100, []step{
			{at: 0, take: 101, want: false, tokens: 100},
			{at: 0, take: 60, want: true, tokens: 40},
			{at: 0, take: 41, want: false, tokens: 40},
		}},
		{"a batch larger than the burst never fits", 3000, 300, []step{
			{at: 0, take: 500, want: false, tokens: 300},
			{at: time.Hour, take: 500, want: false, tokens: 300},
			{at: time.Hour, take: 300, want: true, tokens: 0},
		}},
		{"exact at the boundary, no rounding", 3, 1, []step{
			{at: 0, take: 1, want: true, tokens: 0},
			{at: 333333333, take: 1, want: false, tokens: 0}, // 0.999999999 records
			{at: 333333334, take: 1, want: true, tokens: 0},
		}},
		{"step down to half drops the excess, back up refills at the new rate", 2000, 200, []step{
			{at: 0, set: 1000, burst: 100, tokens: 100},
			{at: 0, take: 100, want: true, tokens: 0},
			{at: 100 * time.Millisecond, take: 0, want: true, tokens: 100},
			{at: 100 * time.Millisecond, take: 100, want: true, tokens: 0},
			{at: 100 * time.Millisecond, set: 2000, burst: 200, tokens: 0},
			{at: 150 * time.Millisecond, take: 101, want: false, tokens: 100},
			{at: 200 * time.Millisecond, take: 200, want: true, tokens: 0},
		}},
		{"a time before the last one adds nothing", 1000, 100, []step{
			{at: time.Second, take: 100, want: true, tokens: 0},
			{at: 500 * time.Millisecond, take: 1, want: false, tokens: 0},
			{at: time.Second, take: 1, want: false, tokens: 0},
			{at: time.Second + time.Millisecond, take: 1, want: true, tokens: 0},
		}},
		{"a large rate over a long idle time does not overflow", 1 << 40, 1 << 20, []step{
			{at: 0, take: 1 << 20, want: true, tokens: 0},
			{at: 1000 * time.Hour, take: 1<<20 + 1, want: false, tokens: 1 << 20},
		}},
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBucket(t0, tc.rate, tc.burst)
			for i, s := range tc.steps {
				now := t0.Add(s.at)
				if s.set > 0 {
					b.set(now, s.set, s.burst)
				} else if got := b.take(now, s.take); got != s.want {
					t.Fatalf("step %d: take(%v, %d) = %v, want %v", i, s.at, s.take, got, s.want)
				}
				if got := b.tokens(now); got != s.tokens {
					t.Fatalf("step %d: %d records held at %v, want %d", i, got, s.at, s.tokens)
				}
			}
		})
	}
}

// TestRateLimitedReceiverScanBatch checks the record count and ids read
// from request bodies in the HTTP sink's formats, and that what is not a
// batch is refused.
func TestRateLimitedReceiverScanBatch(t *testing.T) {
	gen := func(from, n int) string {
		vals := make([]string, n)
		for i := range vals {
			vals[i] = string(generate.Value(int64(from+i), 100))
		}
		return "[" + strings.Join(vals, ",") + "]"
	}
	cases := []struct {
		name   string
		body   string
		ndjson bool
		n      int
		ids    []int64
		bad    bool
	}{
		{name: "empty array", body: "[]"},
		{name: "empty array with spaces", body: " [ \n] \n"},
		{name: "generated values", body: gen(7, 3), n: 3, ids: []int64{7, 8, 9}},
		{name: "nesting and brackets in strings", body: `[{"a":[1,{"b":"]}"}],"id":7},"x,\"]",null,12.5,true,[[]]]`, n: 6, ids: []int64{7}},
		{name: "negative id", body: `[{"id":-3,"x":1}]`, n: 1, ids: []int64{-3}},
		{name: "id not first", body: `[{"x":{"id":5},"id":6}]`, n: 1, ids: []int64{6}},
		{name: "string id is not an id", body: `[{"id":"7"}]`, n: 1},
		{name: "fractional id is not an id", body: `[{"id":7.5}]`, n: 1},
		{name: "ndjson", body: "{\"id\":1}\n\n{\"id\":2}\n\"s\"\n", ndjson: true, n: 3, ids: []int64{1, 2}},
		{name: "an object is not a batch", body: `{"id":1}`, bad: true},
		{name: "empty body", body: ``, bad: true},
		{name: "unterminated array", body: `[1,2`, bad: true},
		{name: "missing comma", body: `[1 2]`, bad: true},
		{name: "trailing comma", body: `[1,]`, bad: true},
		{name: "data after the array", body: `[1] x`, bad: true},
		{name: "unterminated string", body: `["abc]`, bad: true},
		{name: "ndjson line of two values", body: "{\"id\":1} 5\n", ndjson: true, bad: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ids []int64
			n, err := scanBatch([]byte(tc.body), tc.ndjson, func(id int64) { ids = append(ids, id) })
			if tc.bad {
				if err == nil {
					t.Fatalf("scanBatch(%q) = %d records, want an error", tc.body, n)
				}
				return
			}
			if err != nil {
				t.Fatalf("scanBatch(%q): %v", tc.body, err)
			}
			if n != tc.n || !slices.Equal(ids, tc.ids) {
				t.Fatalf("scanBatch(%q) = %d records, ids %v; want %d, %v", tc.body, n, ids, tc.n, tc.ids)
			}
		})
	}
}

// fakeClock is a settable clock for the gateway.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestRateLimitedReceiverGateway drives the gateway's handler with a fake
// clock: 200 for a batch that fits, 429 with Retry-After for one that does
// not (its records not counted), duplicates counted per worker, counters
// per second, a capacity change, and a bad body.
func TestRateLimitedReceiverGateway(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	g := newGatewayHandler(gatewayConfig{Capacity: 1000, Now: clock.Now}) // B = 100
	batch := func(from, n int) string {
		vals := make([]string, n)
		for i := range vals {
			vals[i] = string(generate.Value(int64(from+i), 100))
		}
		return "[" + strings.Join(vals, ",") + "]"
	}
	post := func(worker, body string, wantStatus int, wantRetryAfter string) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/ingest", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if worker != "" {
			req.Header.Set(gatewayWorkerHeader, worker)
		}
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, req)
		if rec.Code != wantStatus {
			t.Fatalf("status %d, want %d (%s)", rec.Code, wantStatus, rec.Body)
		}
		if got := rec.Header().Get("Retry-After"); got != wantRetryAfter {
			t.Fatalf("Retry-After %q, want %q", got, wantRetryAfter)
		}
	}

	// Second 0.
	post("w1", batch(0, 100), 200, "")   // the full bucket
	post("w1", batch(100, 50), 429, "1") // empty: refused, nothing counted
	clock.advance(50 * time.Millisecond) // 50 records earned
	post("w1", batch(100, 50), 200, "")
	clock.advance(10 * time.Millisecond)
	post("w1", batch(0, 10), 200, "") // ids 0–9 again: duplicates
	clock.advance(10 * time.Millisecond)
	post("w2", batch(0, 10), 200, "") // another worker's ids 0–9: not duplicates
	// Second 1.
	clock.advance(time.Second)
	post("w1", batch(150, 101), 429, "1") // larger than B: never fits
	post("w1", "not json", 400, "")
	g.setCapacity(2000) // B follows: 200
	clock.advance(100 * time.Millisecond)
	post("w1", batch(150, 200), 200, "")
	post("", `[1,2,3]`, 429, "1") // no ids, no worker, empty bucket

	secs := g.perSecond()
	want := []gatewayBin{
		{Accepted: 170, Dups: 10, Rejected: 50, Requests: 5, Throttled: 1},
		{Accepted: 200, Rejected: 104, Requests: 4, Throttled: 2, Oversize: 1, Bad: 1}, // the 101 came when B was 100
	}
	if !slices.Equal(secs, want) {
		t.Fatalf("per second:\n got %+v\nwant %+v", secs, want)
	}
	if got := secs[0].Goodput(); got != 160 {
		t.Errorf("goodput in second 0 = %d, want 160", got)
	}
	if got, want := g.window(0, 2*time.Second), (gatewayBin{Accepted: 370, Dups: 10, Rejected: 154, Requests: 9, Throttled: 3, Oversize: 1, Bad: 1}); got != want {
		t.Errorf("window 0–2s = %+v, want %+v", got, want)
	}
	if got := g.window(50*time.Millisecond, 100*time.Millisecond); got != (gatewayBin{}) {
		t.Errorf("window 50–100ms = %+v, want nothing: 50ms is inside tick 0", got)
	}
	if got, want := g.workerGoodput(0, time.Second), map[string]int64{"w1": 150, "w2": 10}; !maps.Equal(got, want) {
		t.Errorf("goodput per worker in second 0 = %v, want %v", got, want)
	}
	if got := g.requestSizes(); got[100] != 1 || got[50] != 2 || got[10] != 2 || got[101] != 1 || got[200] != 1 || got[3] != 1 {
		t.Errorf("request sizes %v", got)
	}

	// openUp accepts anything.
	g.openUp()
	post("w1", batch(400, 1000), 200, "")

	// Retry-After settings.
	for _, tc := range []struct {
		retryAfter int
		want       string
	}{{0, "1"}, {3, "3"}, {-1, ""}} {
		g = newGatewayHandler(gatewayConfig{Capacity: 10, Burst: 5, RetryAfter: tc.retryAfter, Now: clock.Now})
		post("w1", batch(0, 6), 429, tc.want)
	}
}
