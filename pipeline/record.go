package pipeline

import (
	"sync"
	"sync/atomic"
	"time"
)

// Header is one Kafka-style record header.
type Header struct {
	Key   string
	Value []byte
}

// Origin says where a record entered the pipeline. Records from sources
// without offsets (file, generate) carry a synthetic, increasing offset.
type Origin struct {
	Topic     string
	Partition int32
	Offset    int64
}

// Acker is told when records it handed out are done: acknowledged by the
// sink, dead-lettered or dropped on purpose. Each offset is reported exactly
// once; implementations ignore offsets they no longer own (for example after
// a partition was revoked). Ack must be safe for concurrent use, must not
// keep offsets after returning (callers reuse the slice) and must not block
// for long: it runs on the sink's completion path.
//
// Records carry an Acker and an offset instead of a per-record closure so the
// hot path allocates nothing per record; Record.Ack is the "call exactly
// once" function that the pipeline and sinks use.
type Acker interface {
	Ack(offsets []int64)
}

// Abandoner is implemented by Ackers whose records may stop mattering
// before they are done: the Kafka source's, once the partition was revoked
// or lost (its new owner re-reads the records from the last commit).
// Sending such a record only makes a duplicate, so a sink may drop it
// instead, acknowledging it (the ack is ignored).
type Abandoner interface {
	Abandoned() bool
}

// Abandonment counts the moments a source's records may have become
// abandoned (see Abandoner): a source adds one after revoking or losing
// partitions. Sinks note the count when they buffer records and look for
// abandoned ones only when it has moved since, so the per-record check
// costs nothing while no partition moves. Each source has its own, so the
// jobs of one process do not disturb each other. The zero value is ready;
// methods are safe for concurrent use and on a nil *Abandonment (which
// never moves).
type Abandonment struct {
	n     atomic.Uint64
	watch atomic.Pointer[chan struct{}]
	mu    sync.Mutex
	next  chan struct{} // closed by the next Add; nil until Next asks
}

// Add records that some records may now be abandoned, wakes the watcher
// (Watch) and closes what Next returned.
func (a *Abandonment) Add() {
	a.mu.Lock()
	a.n.Add(1)
	if a.next != nil {
		close(a.next)
		a.next = nil
	}
	a.mu.Unlock()
	if ch := a.watch.Load(); ch != nil {
		select {
		case *ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// Next returns a channel closed by the next Add; on nil, one never
// closed.
func (a *Abandonment) Next() <-chan struct{} {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next == nil {
		a.next = make(chan struct{})
	}
	return a.next
}

// Watch makes Add send on ch without blocking: a sink that waits for
// something else looks for abandoned records at once. One watcher; a
// later call replaces it.
func (a *Abandonment) Watch(ch chan struct{}) {
	if a != nil {
		a.watch.Store(&ch)
	}
}

// Epoch returns the number of Add calls so far; 0 on nil.
func (a *Abandonment) Epoch() uint64 {
	if a == nil {
		return 0
	}
	return a.n.Load()
}

// Abandoning is the optional ability of a Source whose records may be
// abandoned; pipeline.New hands its Abandonment to a sink that is
// AbandonWatcher.
type Abandoning interface {
	Abandonment() *Abandonment
}

// AbandonWatcher is the optional ability of a Sink that drops abandoned
// records it still holds.
type AbandonWatcher interface {
	WatchAbandonment(a *Abandonment)
}

// Releaser is implemented by Ackers that can take records back undone: a
// sink that drops abandoned records it never sent releases them instead
// of acknowledging them, so that they are not counted as delivered (the
// Kafka source's partition being revoked: its next owner reads them
// again).
type Releaser interface {
	Release(offsets []int64)
}

// ReleaseAll gives recs back undone to their ackers that are Releasers and
// acknowledges the others, grouped as AckAll groups them.
func ReleaseAll(recs []Record) { ackRuns(recs, true) }

// Abandoned reports whether r's acker says r no longer needs delivering.
func (r Record) Abandoned() bool {
	a, ok := r.acker.(Abandoner)
	return ok && a.Abandoned()
}

// Record is the unit of data flowing from a source through operators into a
// sink. A Record is a value; copies share the backing arrays of Key, Value and
// Headers, which no stage may modify in place once the record was emitted.
type Record struct {
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time
	Origin    Origin

	acker Acker
}

// WithAcker returns r that reports completion to a. Sources call it once per
// record; operators use Fanout instead.
func (r Record) WithAcker(a Acker) Record {
	r.acker = a
	return r
}

// SetAcker is WithAcker in place, for sources filling a batch slice.
func (r *Record) SetAcker(a Acker) { r.acker = a }

// Ack marks r done. It must be called exactly once per record that reached a
// terminal state. A record without an acker (built by hand in a test) is a
// no-op.
func (r Record) Ack() {
	if r.acker != nil {
		r.acker.Ack([]int64{r.Origin.Offset})
	}
}

// Size is the number of payload bytes used for batch and buffer accounting.
func (r Record) Size() int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// Header returns the value of the last header named key and whether it exists.
func (r Record) Header(key string) ([]byte, bool) {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return r.Headers[i].Value, true
		}
	}
	return nil, false
}

// AckAll acknowledges every record in recs, grouping consecutive records
// that share an Acker into one call so a batch costs one lock per partition
// rather than one per record.
func AckAll(recs []Record) { ackRuns(recs, false) }

// ackRuns acks (or, with release, releases: ReleaseAll) recs one run of
// consecutive records that share an Acker at a time.
func ackRuns(recs []Record, release bool) {
	var buf [64]int64
	offs := buf[:0]
	var cur Acker
	flush := func() {
		if cur != nil && len(offs) > 0 {
			var r Releaser // only ReleaseAll looks for one: AckAll is the hot path
			if release {
				r, _ = cur.(Releaser)
			}
			if r != nil {
				r.Release(offs)
			} else {
				cur.Ack(offs)
			}
		}
		offs = buf[:0]
	}
	for i := range recs {
		a := recs[i].acker
		if a == nil {
			continue
		}
		if a != cur {
			flush()
			cur = a
		}
		offs = append(offs, recs[i].Origin.Offset)
		if len(offs) == cap(buf) {
			c := cur
			flush()
			cur = c
		}
	}
	flush()
}

// fanout acknowledges a parent record once all of its children are done.
type fanout struct {
	parent Acker
	offset int64
	left   atomic.Int64
}

func (f *fanout) Ack(offsets []int64) {
	// An empty call must not re-acknowledge a parent already acknowledged.
	if len(offsets) > 0 && f.left.Add(-int64(len(offsets))) == 0 {
		f.parent.Ack([]int64{f.offset})
	}
}

// Fanout gives each of children an acker that acknowledges parent only when
// all children are done. With no children the parent is acknowledged at once
// (the operator dropped it on purpose).
func Fanout(parent Record, children []Record) []Record {
	if len(children) == 0 {
		parent.Ack()
		return children
	}
	if len(children) == 1 || parent.acker == nil {
		// Every child carries the parent's origin and nothing else's acker,
		// whatever the operator copied into it.
		for i := range children {
			children[i].acker = parent.acker
			children[i].Origin = parent.Origin
		}
		return children
	}
	f := &fanout{parent: parent.acker, offset: parent.Origin.Offset}
	f.left.Store(int64(len(children)))
	for i := range children {
		children[i].acker = f
		children[i].Origin = parent.Origin
	}
	return children
}
