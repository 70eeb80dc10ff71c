// Package checkpoint tracks which offsets of a partition are done and
// computes what may be committed: the lowest offset not yet done. Records
// complete out of order when several batches are in flight; the tracker makes
// sure a commit never passes a gap.
package checkpoint

import (
	"math/bits"
	"sync"
)

// Partition tracks the offsets of one assigned partition from the moment it
// was assigned until it is revoked. It is safe for concurrent use: the
// source calls Begin from its poll loop while sinks call Ack from completion
// goroutines.
//
// Offsets are begun in increasing order. Offsets skipped between two begun
// offsets (compacted away, transaction markers) count as done. Acks of
// offsets never begun, acked twice, or arriving after Revoke are ignored.
type Partition struct {
	mu      sync.Mutex
	low     int64    // lowest offset not done; the committable offset
	next    int64    // one past the highest begun offset
	wbase   int64    // offset of bit 0 of words[0]; a multiple of 64
	words   []uint64 // done bits for [wbase, next)
	pending int      // begun and not done
	started bool
	revoked bool
	idle    chan struct{} // closed when pending drops to zero; nil when nobody waits
}

// NewPartition returns a tracker whose committable offset is start, the
// offset the consumer resumes from. Use -1 when unknown: the first Begin
// then sets it.
func NewPartition(start int64) *Partition {
	p := &Partition{}
	if start >= 0 {
		p.reset(start)
	}
	return p
}

func (p *Partition) reset(start int64) {
	p.low, p.next = start, start
	p.wbase = start &^ 63
	p.words = p.words[:0]
	p.started = true
}

// Begin registers offsets that are about to enter the pipeline. They must be
// increasing and above every offset begun before; lower ones are ignored and
// reported by the return value (false), which the caller should treat as a
// duplicate delivery and not process.
func (p *Partition) Begin(offset int64) bool {
	p.mu.Lock()
	ok := p.beginLocked(offset)
	p.mu.Unlock()
	return ok
}

// BeginBatch is Begin for many increasing offsets under one lock. It returns
// how many leading offsets were accepted; it stops at the first rejected one.
func (p *Partition) BeginBatch(offsets []int64) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, o := range offsets {
		if !p.beginLocked(o) {
			return i
		}
	}
	return len(offsets)
}

func (p *Partition) beginLocked(offset int64) bool {
	if p.revoked || offset < 0 {
		return false
	}
	if !p.started {
		p.reset(offset)
	}
	if offset < p.next {
		return false
	}
	if p.pending == 0 && p.low == p.next {
		// Nothing outstanding: jump over any gap without walking it.
		p.reset(offset)
	}
	// Offsets in [next, offset) were never delivered: they are done.
	for o := p.next; o < offset; o++ {
		p.setLocked(o)
	}
	p.next = offset + 1
	p.pending++
	p.advanceLocked()
	return true
}

func (p *Partition) setLocked(o int64) bool {
	i := int((o - p.wbase) >> 6)
	for i >= len(p.words) {
		p.words = append(p.words, 0)
	}
	m := uint64(1) << uint((o-p.wbase)&63)
	if p.words[i]&m != 0 {
		return false
	}
	p.words[i] |= m
	return true
}

func (p *Partition) advanceLocked() {
	for p.low < p.next {
		i := int((p.low - p.wbase) >> 6)
		if i >= len(p.words) {
			return
		}
		w := p.words[i] >> uint((p.low-p.wbase)&63)
		run := int64(bits.TrailingZeros64(^w)) // done offsets starting at low in this word
		if run == 0 {
			return
		}
		p.low += run
		if p.low > p.next {
			p.low = p.next
		}
	}
	// Drop whole words below low.
	drop := int((p.low - p.wbase) >> 6)
	if drop > 0 {
		n := copy(p.words, p.words[drop:])
		p.words = p.words[:n]
		p.wbase += int64(drop) << 6
	}
}

// Ack marks offsets done. It implements pipeline.Acker.
func (p *Partition) Ack(offsets []int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.revoked {
		return
	}
	moved := false
	for _, o := range offsets {
		if o < p.low || o >= p.next {
			continue
		}
		if p.setLocked(o) {
			p.pending--
			moved = moved || o == p.low
		}
	}
	if moved {
		p.advanceLocked()
	}
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

// Idle returns a channel closed once no begun offset is pending.
func (p *Partition) Idle() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	return p.idle
}

// Revoke stops the tracker: later Begin and Ack calls are ignored and
// Committable reports false. It returns the last committable offset.
func (p *Partition) Revoke() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	started := p.started && !p.revoked
	p.revoked = true
	if p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	return p.low, started
}

// DoneAbove returns the done offsets above the committable one as
// [first, last] ranges, in order: what a restarted worker could skip. It is
// the input for compact commit metadata in the style of Confluent's Parallel
// Consumer.
func (p *Partition) DoneAbove() [][2]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out [][2]int64
	in := false
	for o := p.low; o < p.next; o++ {
		i := int((o - p.wbase) >> 6)
		done := i < len(p.words) && p.words[i]&(uint64(1)<<uint((o-p.wbase)&63)) != 0
		switch {
		case done && !in:
			out = append(out, [2]int64{o, o})
			in = true
		case done:
			out[len(out)-1][1] = o
		case !done:
			in = false
		}
	}
	return out
}
