// Package checkpoint tracks which offsets of a partition are done and
// computes what may be committed: the lowest offset not yet done. Records
// complete out of order when several batches are in flight; the tracker makes
// sure a commit never passes a gap. The offsets done above the committed
// one travel in the commit's metadata (Metadata), so that the next owner of
// the partition can skip them instead of delivering them again.
package checkpoint

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
)

// Partition tracks the offsets of one assigned partition from the moment it
// was assigned until it is revoked. It is safe for concurrent use: the
// source calls Begin from its poll loop while sinks call Ack from completion
// goroutines.
//
// Offsets are begun in increasing order. Offsets skipped between two begun
// offsets (compacted away, transaction markers) count as done. Acks of
// offsets never begun, acked twice, or arriving after Revoke are ignored.
//
// Memory and time are proportional to the begun offsets between the
// committable one and the highest begun one, never to the width of the
// offset range: a jump of any size costs nothing.
type Partition struct {
	mu   sync.Mutex
	low  int64 // lowest offset not done; the committable offset
	next int64 // one past the highest begun offset
	// offs[head:] are the begun offsets from low on, increasing, and done
	// says which of them were acked. When head < len(offs), offs[head] == low
	// and is not done; offsets between two entries are gaps, which are done.
	offs    []int64
	done    []bool
	head    int
	pending int // begun and not done
	started bool
	revoked bool
	// withdrawn: being revoked (Withdraw); nothing more is begun.
	withdrawn bool
	// released are begun offsets given back undone (Release): neither
	// pending nor done, so the committable offset stops below them.
	released map[int64]struct{}
	gone     atomic.Bool   // withdrawn or revoked, readable without the lock
	idle     chan struct{} // closed when pending drops to zero; nil when nobody waits
}

// NewPartition returns a tracker whose committable offset is start, the
// offset the consumer resumes from. Use -1 when unknown: the first Begin
// then sets it.
func NewPartition(start int64) *Partition {
	p := &Partition{}
	if start >= 0 {
		p.low, p.next, p.started = start, start, true
	}
	return p
}

// Begin registers offsets that are about to enter the pipeline. They must be
// increasing and above every offset begun before; lower ones are ignored and
// reported by the return value (false), which the caller should treat as a
// duplicate delivery and not process. Negative offsets, math.MaxInt64 and
// offsets begun after Revoke are rejected too.
func (p *Partition) Begin(offset int64) bool {
	p.mu.Lock()
	ok := p.beginLocked(offset)
	p.mu.Unlock()
	return ok
}

// BeginBatch is Begin for many increasing offsets under one lock. It returns
// the range offsets[from:to] it began. A leading run of offsets below the
// next expected one is skipped (from counts it): the client fetched them
// again, for example after resetting its position, and they were begun
// before. Everything after that run is begun, up to the first offset that
// is rejected (out of order, or the tracker was revoked: from == to).
//
// Skipping only the duplicate prefix matters: a batch that straddles the
// next expected offset also carries new records, and dropping those would
// leave a gap the tracker counts as done, committing records never sent.
func (p *Partition) BeginBatch(offsets []int64) (from, to int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, o := range offsets {
		if !p.beginLocked(o) {
			if i == from {
				from++ // nothing begun yet: still in the skipped prefix
				continue
			}
			return from, i
		}
	}
	return from, len(offsets)
}

func (p *Partition) beginLocked(offset int64) bool {
	if p.revoked || p.withdrawn || offset < 0 || offset == math.MaxInt64 {
		return false
	}
	if !p.started {
		p.low, p.next, p.started = offset, offset, true
	}
	if offset < p.next {
		return false
	}
	if p.pending == 0 {
		// Nothing outstanding: everything below offset is done, including
		// the gap [next, offset) that was never delivered.
		p.offs, p.done, p.head = p.offs[:0], p.done[:0], 0
		p.low = offset
	}
	p.offs = append(p.offs, offset)
	p.done = append(p.done, false)
	p.next = offset + 1
	p.pending++
	return true
}

// indexLocked returns the position of offset o in offs, or -1 when o was
// not begun (a gap, or outside [low, next)).
func (p *Partition) indexLocked(o int64) int {
	if o < p.low || o >= p.next || p.head == len(p.offs) {
		return -1
	}
	// Dense offsets (the usual case) are found without searching.
	if d := o - p.offs[p.head]; d < int64(len(p.offs)-p.head) {
		if i := p.head + int(d); p.offs[i] == o {
			return i
		}
	}
	i, found := slices.BinarySearch(p.offs[p.head:], o)
	if !found {
		return -1
	}
	return p.head + i
}

// advanceLocked moves low past the done offsets at the front and releases
// their slots.
func (p *Partition) advanceLocked() {
	for p.head < len(p.offs) && p.done[p.head] {
		p.head++
	}
	if p.head == len(p.offs) {
		p.offs, p.done, p.head = p.offs[:0], p.done[:0], 0
		p.low = p.next
		return
	}
	p.low = p.offs[p.head]
	// Compact once the dead prefix is at least half of the slice, so memory
	// follows what is outstanding, at amortised O(1) per offset.
	if p.head >= 64 && p.head >= len(p.offs)/2 {
		n := copy(p.offs, p.offs[p.head:])
		copy(p.done, p.done[p.head:])
		p.offs, p.done, p.head = p.offs[:n], p.done[:n], 0
	}
}

// Ack marks offsets done. It implements pipeline.Acker and does not keep
// offsets.
func (p *Partition) Ack(offsets []int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.revoked {
		return
	}
	moved := false
	for _, o := range offsets {
		i, ok := p.outstandingLocked(o)
		if !ok {
			continue
		}
		p.done[i] = true
		p.pending--
		moved = moved || i == p.head
	}
	if moved {
		p.advanceLocked()
	}
	p.wakeIdleLocked()
}

// outstandingLocked returns the position of offset o in offs if o is
// pending: begun, neither done nor released.
func (p *Partition) outstandingLocked(o int64) (int, bool) {
	i := p.indexLocked(o)
	if i < 0 || p.done[i] {
		return i, false
	}
	if p.released != nil {
		if _, ok := p.released[o]; ok {
			return i, false
		}
	}
	return i, true
}

// wakeIdleLocked closes the channel Idle returned once nothing is pending.
func (p *Partition) wakeIdleLocked() {
	if p.pending == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
}

// Committable returns the offset to commit (the lowest offset not done, the
// next one the group should consume) and false if nothing was begun or the
// partition was revoked.
func (p *Partition) Committable() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.low, p.started && !p.revoked
}

// Pending returns how many begun offsets are not done.
func (p *Partition) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

// Idle returns a channel closed once no begun offset is pending or the
// partition was revoked, whichever comes first.
func (p *Partition) Idle() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == 0 || p.revoked {
		c := make(chan struct{})
		close(c)
		return c
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	return p.idle
}

// Revoke stops the tracker: later Begin and Ack calls are ignored, Idle
// channels are closed and Committable reports false. It returns the last
// committable offset, and false if nothing was begun or it was already
// revoked.
func (p *Partition) Revoke() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	started := p.started && !p.revoked
	p.revoked = true
	p.gone.Store(true)
	if p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	return p.low, started
}

// Withdraw starts revoking the partition: nothing more is begun, and
// Revoked reports true, so that a sink drops the records it has not sent
// yet and gives them back with Release, while acks of those in flight
// still count. The revocation then waits for Idle (only what is in flight)
// and ends with Revoke.
func (p *Partition) Withdraw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.withdrawn = true
	p.gone.Store(true)
}

// Release gives begun offsets back undone: they stop being pending, so
// Idle no longer waits for them, but the committable offset never passes
// them (the partition's next owner reads them again). A later Ack of a
// released offset is ignored. It implements pipeline.Releaser.
func (p *Partition) Release(offsets []int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.revoked {
		return
	}
	for _, o := range offsets {
		if _, ok := p.outstandingLocked(o); !ok {
			continue
		}
		if p.released == nil {
			p.released = map[int64]struct{}{}
		}
		p.released[o] = struct{}{}
		p.pending--
	}
	p.wakeIdleLocked()
}

// Revoked reports whether Withdraw or Revoke was called: the records not
// yet sent need not be. It does not take the lock, so a sink may ask it
// for every record it is about to send.
func (p *Partition) Revoked() bool { return p.gone.Load() }

// DoneAbove returns the done offsets above the committable one as
// [first, last] ranges, in order: what a restarted worker could skip. Gaps
// between begun offsets are part of the ranges. It is the input for compact
// commit metadata in the style of Confluent's Parallel Consumer; its cost is
// proportional to the begun offsets outstanding, not to the offset range.
func (p *Partition) DoneAbove() [][2]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.doneAboveLocked()
}

// CommitPoint returns Committable's offset and DoneAbove's ranges from one
// consistent view: what a commit of the partition records (see Metadata).
// ok is false if nothing was begun or the partition was revoked.
func (p *Partition) CommitPoint() (offset int64, done [][2]int64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started || p.revoked {
		return p.low, nil, false
	}
	return p.low, p.doneAboveLocked(), true
}

func (p *Partition) doneAboveLocked() [][2]int64 {
	var out [][2]int64
	cur := p.low // first offset not yet placed in a range or known pending
	for i := p.head; i < len(p.offs); i++ {
		if p.done[i] {
			continue
		}
		if o := p.offs[i]; o > cur {
			out = append(out, [2]int64{cur, o - 1})
		}
		cur = p.offs[i] + 1
	}
	if cur < p.next {
		out = append(out, [2]int64{cur, p.next - 1})
	}
	return out
}
