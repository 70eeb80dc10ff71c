package checkpoint_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/spillway-io/spillway/checkpoint"
)

// run executes a small script against p. Tokens, separated by spaces:
//
//	b5     Begin(5) must return true      b5!   Begin(5) must return false
//	B1,2=0:2 BeginBatch([1 2]) must return (0, 2)
//	a5,7   Ack([5 7])
//	c5     Committable() must be (5, true) c-    Committable() must report false
//	p3     Pending() must be 3
//	R5     Revoke() must return (5, true) R-    Revoke() must report false
//	i      Idle() must be closed           I     Idle() must not be closed
//	w      Withdraw()                      r5,7  Release([5 7])
//	g      Revoked() must be true          G     Revoked() must be false
func run(t *testing.T, p *checkpoint.Partition, script string) {
	t.Helper()
	for _, tok := range strings.Fields(script) {
		op, arg := tok[0], tok[1:]
		switch op {
		case 'b':
			want := !strings.HasSuffix(arg, "!")
			if got := p.Begin(num(t, strings.TrimSuffix(arg, "!"))); got != want {
				t.Fatalf("%s: Begin = %v, want %v", tok, got, want)
			}
		case 'B':
			list, want, _ := strings.Cut(arg, "=")
			f, e, _ := strings.Cut(want, ":")
			if from, to := p.BeginBatch(nums(t, list)); from != int(num(t, f)) || to != int(num(t, e)) {
				t.Fatalf("%s: BeginBatch = (%d, %d), want (%s, %s)", tok, from, to, f, e)
			}
		case 'a':
			p.Ack(nums(t, arg))
		case 'w':
			p.Withdraw()
		case 'r':
			p.Release(nums(t, arg))
		case 'g', 'G':
			if got := p.Revoked(); got != (op == 'g') {
				t.Fatalf("%s: Revoked = %v", tok, got)
			}
		case 'c':
			off, ok := p.Committable()
			if arg == "-" {
				if ok {
					t.Fatalf("%s: Committable = (%d, true), want false", tok, off)
				}
				continue
			}
			if want := num(t, arg); !ok || off != want {
				t.Fatalf("%s: Committable = (%d, %v), want (%d, true)", tok, off, ok, want)
			}
		case 'p':
			if got := p.Pending(); got != int(num(t, arg)) {
				t.Fatalf("%s: Pending = %d", tok, got)
			}
		case 'R':
			off, ok := p.Revoke()
			if arg == "-" {
				if ok {
					t.Fatalf("%s: Revoke = (%d, true), want false", tok, off)
				}
				continue
			}
			if want := num(t, arg); !ok || off != want {
				t.Fatalf("%s: Revoke = (%d, %v), want (%d, true)", tok, off, ok, want)
			}
		case 'i', 'I':
			if closed := isClosed(p.Idle()); closed != (op == 'i') {
				t.Fatalf("%s: Idle closed = %v", tok, closed)
			}
		default:
			t.Fatalf("bad token %q", tok)
		}
	}
}

func num(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("bad number %q", s)
	}
	return n
}

func nums(t *testing.T, s string) []int64 {
	t.Helper()
	if s == "" {
		return nil
	}
	var out []int64
	for _, f := range strings.Split(s, ",") {
		out = append(out, num(t, f))
	}
	return out
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestPartition(t *testing.T) {
	const big = 1 << 40
	cases := []struct {
		name   string
		start  int64
		script string
		done   [][2]int64 // DoneAbove at the end
	}{
		{"fresh with start", 7, "c7 p0 i", nil},
		{"fresh unknown start", -1, "c- p0 i", nil},
		{"unknown start set by first begin", -1, "b42 c42 a42 c43 b43 c43", nil},
		{"in order", 0, "b0 b1 b2 c0 p3 a0 c1 a1 c2 a2 c3 p0", nil},
		{"out of order never passes a gap", 0, "b0 b1 b2 b3 a3 c0 a1 c0 a2 c0 p1 a0 c4 p0", nil},
		{"out of order done above", 0, "b0 b1 b2 b3 b4 a1 a3 a4 c0", [][2]int64{{1, 1}, {3, 4}}},
		{"gaps between begun offsets are done", 0, "b0 b5 b9 a0 c5 a9 c5 p1 a5 c10", nil},
		{"gap ranges in done above", 0, "b0 b5 b9 a0 a9 c5", [][2]int64{{6, 9}}},
		{"gap below pending is not done above", 0, "b0 b5 b9 c0", [][2]int64{{1, 4}, {6, 8}}},
		{"gap with nothing pending jumps", 0, "b0 a0 c1 b10 c10 a10 c11", nil},
		{"first begin above start skips the gap", 5, "b9 c9 a9 c10", nil},
		{"double ack ignored", 0, "b0 b1 a1 a1 p1 c0 a0 c2 p0 a0 a1 p0 c2", nil},
		{"double ack in one call", 0, "b0 b1 a1,1,1 p1 c0 a0,0 p0 c2", nil},
		{"ack of never begun ignored", 0, "b0 b2 a1 p2 c0 a3 a-1 a99 p2 c0 a0 c2 a0 p1", nil},
		{"ack below committable ignored", 10, "b10 b11 a10 c11 a9 a10 p1 c11", nil},
		{"acks after revoke ignored", 0, "b0 b1 a0 c1 R1 c- a1 p1 c- b2! R-", nil},
		{"revoke before begin", 7, "R7 c- b7! R-", nil},
		{"revoke unknown start", -1, "R- c- b0!", nil},
		{"idle closes on last ack", 0, "i b0 b1 I a0 I a1 i b2 I a2 i", nil},
		{"idle after revoke with pending", 0, "b0 I R0 i b1! i", nil},
		{"begin rejects non-increasing", 0, "b5 b5! b4! b0! b6 c5 p2", nil},
		{"begin below start rejected", 5, "b3! b4! c5 b5 c5", nil},
		{"begin rejects negative and max", -1, "b-1! c- b9223372036854775807! c- b3 c3", nil},
		{"begin batch", 0, "B0,1,2=0:3 B2,3=1:2 B4,6,5,7=0:2 c0 p6 B=0:0 a0,1,2,3 c4 p2", [][2]int64{{5, 5}}},
		{"begin batch stops at duplicate inside", 0, "B0,1,1,2=0:2 p2 b2 p3", nil},
		{"begin batch skips a re-fetched prefix and begins the rest", 0, "B0,1,2=0:3 a0,1,2 c3 B1,2,3,4=2:4 p2 c3 a3,4 c5", nil},
		{"begin batch entirely re-fetched", 0, "B0,1,2=0:3 B0,1,2=3:3 p3", nil},
		{"begin batch after revoke", 0, "R0 B0,1=2:2", nil},
		{"large jump while pending", 0, fmt.Sprintf("b0 b%d c0 a%d c0 p1", big, big), [][2]int64{{1, big}}},
		{"large jump then ack low", 0, fmt.Sprintf("b0 b%d a0 c%d a%d c%d p0", big, big, big, big+1), nil},
		{"large jump idle", 0, fmt.Sprintf("b0 a0 b%d I a%d i c%d", big, big, big+1), nil},
		{"near max offset", 0, fmt.Sprintf("b0 b%d a%d c0 a0 c%d", int64(math.MaxInt64-1), int64(math.MaxInt64-1), int64(math.MaxInt64)), nil},
		{"word boundary 63 64", 60, "b60 b61 b62 b63 b64 b65 a60,61,62,64,65 c63 a63 c66", nil},
		{"word boundary 127 128", 126, "b126 b127 b128 b129 a126,128,129 c127", [][2]int64{{128, 129}}},
		{"gap across a word", 0, "b0 b63 b64 b200 b255 b256 a0,64,255 c63", [][2]int64{{64, 199}, {201, 255}}},
		{"ack spanning words at once", 0, "b0 b1 b70 b130 b191 b192 a192,191,130,70,1,0 c193 p0 i", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := checkpoint.NewPartition(tc.start)
			run(t, p, tc.script)
			if got := p.DoneAbove(); !reflect.DeepEqual(got, tc.done) {
				t.Errorf("DoneAbove = %v, want %v", got, tc.done)
			}
		})
	}
}

// TestPartitionWordBoundaries leaves a single hole at every position around
// multiples of 64 and checks the tracker stops exactly there.
func TestPartitionWordBoundaries(t *testing.T) {
	for _, base := range []int64{0, 1, 62, 63, 64, 65, 127, 128, 1<<20 - 1, 1 << 33} {
		for _, hole := range []int64{0, 1, 62, 63, 64, 65, 126, 127, 128, 129, 191, 192, 199} {
			t.Run(fmt.Sprintf("base=%d/hole=%d", base, hole), func(t *testing.T) {
				p := checkpoint.NewPartition(base)
				const n = 200
				for o := base; o < base+n; o++ {
					if !p.Begin(o) {
						t.Fatalf("Begin(%d) = false", o)
					}
				}
				for o := base + n - 1; o >= base; o-- { // reverse: worst case for advancing
					if o != base+hole {
						p.Ack([]int64{o})
					}
				}
				if off, _ := p.Committable(); off != base+hole {
					t.Fatalf("Committable = %d, want %d", off, base+hole)
				}
				var want [][2]int64
				if hole < n-1 {
					want = [][2]int64{{base + hole + 1, base + n - 1}}
				}
				if got := p.DoneAbove(); !reflect.DeepEqual(got, want) {
					t.Fatalf("DoneAbove = %v, want %v", got, want)
				}
				p.Ack([]int64{base + hole})
				if off, _ := p.Committable(); off != base+n || p.Pending() != 0 {
					t.Fatalf("after last ack Committable = %d pending %d, want %d 0", off, p.Pending(), base+n)
				}
			})
		}
	}
}

// TestPartitionIdleWakesWaiters checks a waiter blocked on Idle is released
// by the last Ack, and another by Revoke.
func TestPartitionIdleWakesWaiters(t *testing.T) {
	t.Run("last ack", func(t *testing.T) {
		p := checkpoint.NewPartition(0)
		p.BeginBatch([]int64{0, 1, 2})
		c1, c2 := p.Idle(), p.Idle()
		if c1 != c2 {
			t.Fatal("Idle while pending returned two different channels")
		}
		p.Ack([]int64{2, 0})
		if isClosed(c1) {
			t.Fatal("Idle closed with one offset pending")
		}
		p.Ack([]int64{1})
		<-c1
	})
	t.Run("revoke", func(t *testing.T) {
		p := checkpoint.NewPartition(0)
		p.Begin(0)
		c := p.Idle()
		p.Revoke()
		<-c
		if !isClosed(p.Idle()) {
			t.Fatal("Idle after Revoke is not closed: a drain would wait forever")
		}
	})
}

// TestPartitionConcurrent begins from one goroutine and acks from several,
// as the source and the sink's completion goroutines do. Run with -race.
func TestPartitionConcurrent(t *testing.T) {
	const n, workers = 20000, 8
	p := checkpoint.NewPartition(0)
	work := make(chan int64, 256)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for o := range work {
				p.Ack([]int64{o})
			}
		})
	}
	// The committable offset only ever moves forward.
	stop := make(chan struct{})
	var mon sync.WaitGroup
	mon.Go(func() {
		var last int64
		for {
			select {
			case <-stop:
				return
			default:
			}
			off, _ := p.Committable()
			if off < last {
				t.Errorf("Committable went back from %d to %d", last, off)
				return
			}
			last = off
		}
	})
	for o := int64(0); o < n; o++ {
		if o%3 == 0 {
			continue // a gap
		}
		if !p.Begin(o) {
			t.Errorf("Begin(%d) = false", o)
		}
		work <- o
	}
	close(work)
	wg.Wait()
	close(stop)
	mon.Wait()
	<-p.Idle()
	if off, ok := p.Committable(); !ok || off != n {
		t.Fatalf("Committable = (%d, %v), want (%d, true)", off, ok, n)
	}
}

// model is the reference the tracker is checked against: the offsets begun,
// in order, and a map of those not acked yet.
type model struct {
	started bool
	revoked bool
	next    int64
	begun   []int64 // every accepted offset, increasing
	pending map[int64]bool
	lowIdx  int // begun[:lowIdx] are all acked
}

func newModel(start int64) *model {
	m := &model{pending: map[int64]bool{}}
	if start >= 0 {
		m.started, m.next = true, start
	}
	return m
}

func (m *model) begin(o int64) bool {
	if m.revoked || o < 0 || o == math.MaxInt64 || (m.started && o < m.next) {
		return false
	}
	m.started = true
	m.next = o + 1
	m.begun = append(m.begun, o)
	m.pending[o] = true
	return true
}

func (m *model) ack(offs []int64) {
	if m.revoked {
		return
	}
	for _, o := range offs {
		delete(m.pending, o)
	}
}

// committable is the lowest begun offset not acked, or next when none is.
func (m *model) committable() int64 {
	for m.lowIdx < len(m.begun) && !m.pending[m.begun[m.lowIdx]] {
		m.lowIdx++
	}
	if m.lowIdx == len(m.begun) {
		return m.next
	}
	return m.begun[m.lowIdx]
}

// doneAbove is [committable, next) minus the pending offsets, as ranges.
func (m *model) doneAbove() [][2]int64 {
	var out [][2]int64
	cur := m.committable()
	for _, o := range m.begun[m.lowIdx:] {
		if !m.pending[o] {
			continue
		}
		if o > cur {
			out = append(out, [2]int64{cur, o - 1})
		}
		cur = o + 1
	}
	if cur < m.next {
		out = append(out, [2]int64{cur, m.next - 1})
	}
	return out
}

func (m *model) check(t *testing.T, p *checkpoint.Partition, step int) {
	t.Helper()
	off, ok := p.Committable()
	wantOK := m.started && !m.revoked
	if ok != wantOK {
		t.Fatalf("step %d: Committable ok = %v, want %v", step, ok, wantOK)
	}
	if m.revoked {
		return
	}
	if ok && off != m.committable() {
		t.Fatalf("step %d: Committable = %d, want %d (pending %v)", step, off, m.committable(), m.pending)
	}
	for o := range m.pending {
		if ok && off > o {
			t.Fatalf("step %d: Committable %d passes unacked offset %d", step, off, o)
		}
	}
	if got := p.Pending(); got != len(m.pending) {
		t.Fatalf("step %d: Pending = %d, want %d", step, got, len(m.pending))
	}
	if closed := isClosed(p.Idle()); closed != (len(m.pending) == 0) {
		t.Fatalf("step %d: Idle closed = %v with %d pending", step, closed, len(m.pending))
	}
	if got, want := p.DoneAbove(), m.doneAbove(); !reflect.DeepEqual(got, want) {
		t.Fatalf("step %d: DoneAbove = %v, want %v", step, got, want)
	}
}

// drive interprets data as operations on both p and m and checks them after
// each one. The first byte chooses the start offset.
func drive(t *testing.T, data []byte) {
	if len(data) == 0 {
		return
	}
	start := int64(data[0]) - 64 // negative: unknown
	if start < -1 {
		start = -1
	}
	data = data[1:]
	p, m := checkpoint.NewPartition(start), newModel(start)
	pick := func(i int) int64 { // an offset begun earlier, or a nearby one
		if len(m.begun) == 0 {
			return int64(i)
		}
		return m.begun[i%len(m.begun)] + int64(i%5) - 2*int64(i%2)
	}
	gap := func(b byte) int64 {
		switch {
		case b < 200:
			return int64(b % 4) // mostly dense
		case b < 250:
			return int64(b) // a word or more
		default:
			return int64(1) << (b - 220) // 2^30 .. 2^35
		}
	}
	step := 0
	for len(data) >= 2 && step < 1000 {
		op, arg := data[0], data[1]
		data = data[2:]
		step++
		switch op % 8 {
		case 0, 1, 2: // begin above next, maybe with a gap
			o := m.next + gap(arg)
			if !m.started {
				o = int64(arg)
			}
			if got, want := p.Begin(o), m.begin(o); got != want {
				t.Fatalf("step %d: Begin(%d) = %v, want %v", step, o, got, want)
			}
		case 3: // begin something not above next
			o := m.next - int64(arg%8) - 1
			if got, want := p.Begin(o), m.begin(o); got != want {
				t.Fatalf("step %d: Begin(%d) = %v, want %v", step, o, got, want)
			}
		case 4: // batch of increasing offsets, possibly with a bad one
			n := int(arg%16) + 1
			offs := make([]int64, 0, n)
			o := m.next
			if arg%5 == 0 {
				o -= int64(arg % 7) // the client fetched some offsets again
			}
			for i := range n {
				o += int64((int(arg) + i) % 3)
				if arg >= 240 && i == n/2 {
					o -= 2 // non-increasing in the middle
				}
				offs = append(offs, o)
				o++
			}
			wantFrom, wantTo := 0, len(offs)
			for i, o := range offs {
				if !m.begin(o) {
					if i == wantFrom {
						wantFrom++ // the skipped re-fetched prefix
						continue
					}
					wantTo = i
					break
				}
			}
			if from, to := p.BeginBatch(offs); from != wantFrom || to != wantTo {
				t.Fatalf("step %d: BeginBatch(%v) = (%d, %d), want (%d, %d)", step, offs, from, to, wantFrom, wantTo)
			}
		case 5, 6: // ack one or a few earlier offsets, duplicates and strangers included
			n := int(arg%4) + 1
			offs := make([]int64, n)
			for i := range offs {
				offs[i] = pick(int(arg) + i*7)
			}
			p.Ack(offs)
			m.ack(offs)
		case 7:
			if arg == 255 {
				wantOff, wantOK := m.committable(), m.started && !m.revoked
				off, ok := p.Revoke()
				m.revoked = true
				if ok != wantOK || (ok && off != wantOff) {
					t.Fatalf("step %d: Revoke = (%d, %v), want (%d, %v)", step, off, ok, wantOff, wantOK)
				}
			} else { // ack everything begun from the back
				for i := len(m.begun) - 1; i >= 0 && i >= len(m.begun)-int(arg%32); i-- {
					o := []int64{m.begun[i]}
					p.Ack(o)
					m.ack(o)
				}
			}
		}
		m.check(t, p, step)
	}
}

func FuzzPartition(f *testing.F) {
	f.Add([]byte{64, 0, 0, 0, 1, 5, 0, 5, 1})
	f.Add([]byte{0, 4, 20, 5, 3, 7, 10, 3, 1, 7, 255})
	f.Add([]byte{100, 0, 250, 0, 255, 5, 0, 5, 1, 7, 3})
	f.Add([]byte{64, 4, 245, 0, 210, 6, 9, 3, 2, 7, 31, 0, 0})
	f.Fuzz(drive)
}

// TestPartitionRandom runs the fuzz driver over seeded random inputs so the
// model check runs in every plain `go test`.
func TestPartitionRandom(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 42))
		data := make([]byte, 1+r.IntN(600))
		for i := range data {
			data[i] = byte(r.UintN(256))
		}
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) { drive(t, data) })
	}
}

// TestPartitionCommitPoint: the offset and ranges a commit records come
// from one view, and nothing once revoked.
// TestPartitionWithdraw: while a partition is being revoked nothing more
// is begun; offsets released undone stop being pending without becoming
// done, so Idle waits only for the others and the commit stops below the
// first released one; acks of in-flight offsets still count and a late
// ack of a released one does not.
func TestPartitionWithdraw(t *testing.T) {
	p := checkpoint.NewPartition(-1)
	run(t, p, "B0,1,2,3,4,5,6,7,8,9=0:10 a0,1,2 G w g b10! p7 I r5,6,7,8,9 p2 I a4 c3 p1 I a3 i c5 a5 c5 p0")
	if _, done, _ := p.CommitPoint(); len(done) != 0 {
		t.Errorf("done above the commit after releasing 5–9: %v, want none", done)
	}
	run(t, p, "R5")

	// A released offset below an acked one: the acked one travels as done
	// above the commit (the next owner skips it), the released one does not.
	q := checkpoint.NewPartition(-1)
	run(t, q, "B20,21,22=0:3 w r21 a22 a20 i c21")
	if _, done, _ := q.CommitPoint(); !reflect.DeepEqual(done, [][2]int64{{22, 22}}) {
		t.Errorf("done above the commit: %v, want [[22 22]]", done)
	}
}

func TestPartitionCommitPoint(t *testing.T) {
	p := checkpoint.NewPartition(-1)
	if _, _, ok := p.CommitPoint(); ok {
		t.Fatal("CommitPoint reports a point before any Begin")
	}
	p.BeginBatch([]int64{10, 11, 12, 14, 15})
	p.Ack([]int64{11, 15})
	off, done, ok := p.CommitPoint()
	if want := [][2]int64{{11, 11}, {13, 13}, {15, 15}}; off != 10 || !ok || !reflect.DeepEqual(done, want) {
		t.Fatalf("CommitPoint = %d %v %v, want 10 %v true", off, done, ok, want)
	}
	p.Revoke()
	if _, _, ok := p.CommitPoint(); ok {
		t.Fatal("CommitPoint reports a point after Revoke")
	}
}
