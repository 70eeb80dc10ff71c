package pipeline_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
)

// counter is an Acker that counts acknowledgements per offset.
type counter struct {
	mu    sync.Mutex
	n     map[int64]int
	calls int
}

func newCounter() *counter { return &counter{n: map[int64]int{}} }

func (c *counter) Ack(offs []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	for _, o := range offs {
		c.n[o]++
	}
}

func (c *counter) count(o int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[o]
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := 0
	for _, n := range c.n {
		s += n
	}
	return s
}

// exactlyOnce fails unless each of offs was acknowledged exactly once and
// nothing else was.
func (c *counter) exactlyOnce(t *testing.T, offs ...int64) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range offs {
		if c.n[o] != 1 {
			t.Errorf("offset %d acknowledged %d times, want 1", o, c.n[o])
		}
	}
	for o, n := range c.n {
		if !slices.Contains(offs, o) && n != 0 {
			t.Errorf("offset %d acknowledged %d times, want 0", o, n)
		}
	}
}

func rec(a pipeline.Acker, off int64, value string) pipeline.Record {
	r := pipeline.Record{Value: []byte(value), Origin: pipeline.Origin{Topic: "t", Partition: 0, Offset: off}}
	if a == nil {
		return r
	}
	return r.WithAcker(a)
}

func recs(a pipeline.Acker, from, n int64) []pipeline.Record {
	out := make([]pipeline.Record, 0, n)
	for o := from; o < from+n; o++ {
		out = append(out, rec(a, o, fmt.Sprint("v", o)))
	}
	return out
}

func TestRecordAck(t *testing.T) {
	c := newCounter()
	r := rec(c, 7, "x")
	cp := r // a copy shares the acker
	cp.Ack()
	c.exactlyOnce(t, 7)
	rec(nil, 8, "x").Ack() // no acker: no-op, no panic
	pipeline.Record{}.Ack()
}

func TestRecordSizeAndHeader(t *testing.T) {
	r := pipeline.Record{
		Key:   []byte("kk"),
		Value: []byte("vvv"),
		Headers: []pipeline.Header{
			{Key: "a", Value: []byte("1")},
			{Key: "b", Value: []byte("22")},
			{Key: "a", Value: []byte("333")},
		},
	}
	if got, want := r.Size(), 2+3+(1+1)+(1+2)+(1+3); got != want {
		t.Errorf("Size = %d, want %d", got, want)
	}
	if v, ok := r.Header("a"); !ok || string(v) != "333" {
		t.Errorf(`Header("a") = %q, %v; want the last one, "333"`, v, ok)
	}
	if _, ok := r.Header("zz"); ok {
		t.Error(`Header("zz") found`)
	}
	if (pipeline.Record{}).Size() != 0 {
		t.Error("empty record has a size")
	}
}

func TestAckAll(t *testing.T) {
	a, b := newCounter(), newCounter()
	var in []pipeline.Record
	in = append(in, recs(a, 0, 3)...)
	in = append(in, rec(nil, 99, "no acker"))
	in = append(in, recs(b, 10, 2)...)
	in = append(in, recs(a, 3, 200)...) // longer than the 64-offset chunk
	pipeline.AckAll(in)
	want := []int64{}
	for o := range int64(203) {
		want = append(want, o)
	}
	a.exactlyOnce(t, want...)
	b.exactlyOnce(t, 10, 11)
	// Consecutive records of one acker are grouped: [0,3) and [3,203) in
	// chunks of at most 64, never one call per record.
	if a.calls > 1+(200+63)/64+1 {
		t.Errorf("acker a called %d times for 203 records", a.calls)
	}
	if b.calls != 1 {
		t.Errorf("acker b called %d times, want 1", b.calls)
	}
	pipeline.AckAll(nil)
}

func TestFanout(t *testing.T) {
	t.Run("no children acks the parent", func(t *testing.T) {
		c := newCounter()
		out := pipeline.Fanout(rec(c, 5, "p"), nil)
		if len(out) != 0 {
			t.Fatalf("got %d children", len(out))
		}
		c.exactlyOnce(t, 5)
	})
	t.Run("one child takes the parent's place", func(t *testing.T) {
		c := newCounter()
		out := pipeline.Fanout(rec(c, 5, "p"), []pipeline.Record{{Value: []byte("child")}})
		if out[0].Origin.Offset != 5 || out[0].Origin.Topic != "t" {
			t.Errorf("child origin = %+v, want the parent's", out[0].Origin)
		}
		c.exactlyOnce(t)
		out[0].Ack()
		c.exactlyOnce(t, 5)
	})
	t.Run("parent acked once all children are done", func(t *testing.T) {
		c := newCounter()
		kids := []pipeline.Record{{Value: []byte("a")}, {Value: []byte("b")}, {Value: []byte("c")}}
		out := pipeline.Fanout(rec(c, 5, "p"), kids)
		for i, k := range out {
			if k.Origin.Offset != 5 {
				t.Errorf("child %d origin offset = %d, want 5", i, k.Origin.Offset)
			}
		}
		out[2].Ack()
		out[0].Ack()
		if c.count(5) != 0 {
			t.Fatal("parent acknowledged with a child pending")
		}
		pipeline.AckAll(out[1:2])
		c.exactlyOnce(t, 5)
	})
	t.Run("children acked together through AckAll", func(t *testing.T) {
		c := newCounter()
		out := pipeline.Fanout(rec(c, 5, "p"), make([]pipeline.Record, 100))
		pipeline.AckAll(out)
		c.exactlyOnce(t, 5)
	})
	t.Run("children acked concurrently", func(t *testing.T) {
		c := newCounter()
		out := pipeline.Fanout(rec(c, 5, "p"), make([]pipeline.Record, 64))
		var wg sync.WaitGroup
		for _, k := range out {
			wg.Go(k.Ack)
		}
		wg.Wait()
		c.exactlyOnce(t, 5)
	})
	t.Run("parent without acker", func(t *testing.T) {
		other := newCounter()
		out := pipeline.Fanout(rec(nil, 5, "p"), []pipeline.Record{rec(other, 1, "a"), rec(other, 2, "b")})
		for i, k := range out {
			if k.Origin.Offset != 5 {
				t.Errorf("child %d origin offset = %d, want the parent's 5", i, k.Origin.Offset)
			}
			k.Ack() // must not panic or reach an acker the parent did not have
		}
		other.exactlyOnce(t)
	})
}
