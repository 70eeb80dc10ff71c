package sinks

import (
	"hash/maphash"
	"time"

	"github.com/spillway-io/spillway/pipeline"
)

// Ordering modes, Config.Ordering.
const (
	// OrderNone lets any request overtake another: the most concurrency,
	// for destinations that do not care about order.
	OrderNone = "none"
	// OrderPartition keeps each source partition's records in order at
	// the destination: requests of different partitions are in flight
	// together, but a partition has at most one batch in flight or
	// waiting to be retried, and nothing newer of it is sent meanwhile.
	OrderPartition = "partition"
	// OrderKey keeps the records of each key in order (Confluent Parallel
	// Consumer's key mode): many batches of one partition may be in
	// flight, but two records with the same key are never in flight
	// together, nor reordered by a retry. Records without a key are not
	// ordered.
	OrderKey = "key"
)

// lane is what the ordering keeps in order: a partition, or a key within
// one. A key is known by its hash: two keys that collide share a lane,
// which costs concurrency, never order.
type lane struct {
	topic     string
	partition int32
	key       uint64 // OrderKey only
}

// laneSeed hashes keys into lanes.
var laneSeed = maphash.MakeSeed()

// lanes counts holders per lane.
type lanes map[lane]int

// This file is the ordered half of the buffer (Config.Ordering partition
// or key); buffer.go's take path is the unordered one. The lanes of a
// batch are held from the moment it is sent until its outcome is settled
// (its retries, if any, hold theirs while they wait), and a record whose
// lane is held waits, with every later record of its lane.

// laneOf is r's lane; false when r is not ordered (OrderNone, or a record
// without a key in OrderKey).
func (w *Writer) laneOf(r *pipeline.Record) (lane, bool) {
	switch w.cfg.Ordering {
	case OrderPartition:
		return lane{topic: r.Origin.Topic, partition: r.Origin.Partition}, true
	case OrderKey:
		if r.Key == nil {
			return lane{}, false
		}
		return lane{topic: r.Origin.Topic, partition: r.Origin.Partition, key: maphash.Bytes(laneSeed, r.Key)}, true
	}
	return lane{}, false
}

// ordered reports whether the writer keeps an order.
func (w *Writer) ordered() bool { return w.cfg.Ordering != OrderNone }

// lanesOf lists the distinct lanes of recs, in first-seen order (runs of
// one lane are counted once, a lane seen again later is listed again:
// callers add and remove the same list, so repeats cancel out).
func (w *Writer) lanesOf(recs []pipeline.Record) []lane {
	var out []lane
	for i := range recs {
		l, ok := w.laneOf(&recs[i])
		if ok && (len(out) == 0 || out[len(out)-1] != l) {
			out = append(out, l)
		}
	}
	return out
}

func (m lanes) add(ls []lane, d int) {
	for _, l := range ls {
		if m[l] += d; m[l] <= 0 {
			delete(m, l)
		}
	}
}

// splitLanes cuts chunk into runs of one lane (sub-slices, no copy) for
// OrderPartition, where records of a poll come in runs per partition: such
// a segment (oneLane) is taken or left whole. A chunk of more than
// maxRuns runs, 16 or one per 32 records (partitions interleaved record by
// record), stays whole and is scanned record by record, as in the other
// modes.
func (w *Writer) splitLanes(chunk []pipeline.Record, emit func(recs []pipeline.Record, oneLane bool)) {
	if w.cfg.Ordering != OrderPartition {
		emit(chunk, false)
		return
	}
	maxRuns := max(16, len(chunk)/32)
	runs := 1
	for i := 1; i < len(chunk) && runs <= maxRuns; i++ {
		if !samePartition(&chunk[i-1], &chunk[i]) {
			runs++
		}
	}
	if runs > maxRuns {
		emit(chunk, false)
		return
	}
	start := 0
	for i := 1; i < len(chunk); i++ {
		if !samePartition(&chunk[i-1], &chunk[i]) {
			emit(chunk[start:i:i], true)
			start = i
		}
	}
	emit(chunk[start:len(chunk):len(chunk)], true)
}

func samePartition(a, b *pipeline.Record) bool {
	return a.Origin.Partition == b.Origin.Partition && a.Origin.Topic == b.Origin.Topic
}

// freeLocked reports whether r may be sent: its lane is neither in flight
// nor held by a waiting retry.
func (w *Writer) freeLocked(r *pipeline.Record) bool {
	l, ok := w.laneOf(r)
	if !ok {
		return true
	}
	return w.inflightLanes[l] == 0 && w.waitingLanes[l] == 0
}

// dueRetryOrderedLocked is the index of the oldest retry that is due and
// free (no lane of it in flight, nor held by an older waiting retry), or
// -1.
func (w *Writer) dueRetryOrderedLocked(now time.Time) int {
	if now.Before(w.holdUntil) {
		return -1
	}
	var older lanes // lanes of older retries that stay
	for i := range w.retries {
		r := &w.retries[i]
		if !now.Before(r.notBefore) && w.retryFreeLocked(r.recs, older) {
			return i
		}
		if older == nil {
			older = lanes{}
		}
		older.add(w.lanesOf(r.recs), 1)
	}
	return -1
}

// retryFreeLocked is freeLocked for a retry's records, which holds its own
// lanes in waitingLanes: only in-flight ones and older retries count.
func (w *Writer) retryFreeLocked(recs []pipeline.Record, older lanes) bool {
	for i := range recs {
		l, ok := w.laneOf(&recs[i])
		if ok && (w.inflightLanes[l] > 0 || older[l] > 0) {
			return false
		}
	}
	return true
}

// eligible is what a scan of new records found sendable now.
type eligible struct {
	n, bytes int
	full     bool      // a batch's worth by count, bytes or the admissions' limit
	oldest   time.Time // when the oldest of them was buffered
	segs     int       // segments they come from
	prefix   int       // queue index of the first such segment when they are a prefix of it, else -1
}

// scanNewLocked walks the buffered records oldest first, in order mode,
// and counts those that may be sent now, up to one batch of at most
// maxSize records. A record whose lane is held waits, and so does every
// later record of its lane. With take it also removes them from the queue
// and returns them as one batch: a sub-slice when they are a prefix of one
// segment, a copy otherwise.
func (w *Writer) scanNewLocked(maxSize int, take bool) (segment, eligible) {
	e := eligible{prefix: -1}
	var batch segment
	// Records looked at, bounded so that a buffer full of records whose
	// lanes are busy costs a bounded scan: those further back wait. Only
	// candidates count: a segment found wholly held (in key order, a long
	// run of one partition whose keys are all in flight) gives its records
	// back to the window and is marked, so that scans skip it until a lane
	// is released; it would otherwise use up the window and hide the free
	// records behind it. A scan thus reads each held record at most once
	// per release, and then the window's worth of candidates.
	window := max(4*maxSize, 2048)
	known := w.laneFrees + 1
	for si := w.head; si < len(w.queue) && !e.full && window > 0; si++ {
		seg := &w.queue[si]
		if len(seg.recs) == 0 || seg.heldAt == known {
			continue // a hole left by an earlier take, or known held
		}
		perRecord := !seg.oneLane
		if seg.oneLane && !w.freeLocked(&seg.recs[0]) {
			window--
			continue
		}
		if perRecord {
			window -= len(seg.recs)
		}
		// A record whose lane is held leaves every later record of its
		// lane behind too: the lane stays held for the whole scan.
		k, b, kept := 0, 0, 0 // taken, their bytes, and records left in seg
		prefix := true        // the taken ones are seg.recs[:k]
		for j := range seg.recs {
			r := &seg.recs[j]
			if e.full || (perRecord && !w.freeLocked(r)) {
				if take {
					seg.recs[kept] = *r // compact in place: taken ones were copied out
				}
				kept++
				continue
			}
			sz := r.Size()
			if e.n > 0 && e.bytes+sz > w.cfg.MaxBatchBytes {
				e.full = true
				if take {
					seg.recs[kept] = *r
				}
				kept++
				continue
			}
			if e.n == 0 || seg.enq.Before(e.oldest) {
				e.oldest = seg.enq
			}
			if kept > 0 {
				prefix = false
			}
			if take {
				if batch.recs == nil {
					batch.seq, batch.enq, batch.epoch = seg.seq+uint64(j), seg.enq, seg.epoch
					batch.recs = make([]pipeline.Record, 0, min(maxSize, w.bufCount))
				}
				batch.recs = append(batch.recs, *r)
				batch.bytes += sz
			}
			k++
			b += sz
			e.n++
			e.bytes += sz
			if e.n >= maxSize || e.bytes >= w.cfg.MaxBatchBytes {
				e.full = true
			}
		}
		if k > 0 {
			if e.segs++; e.segs == 1 && prefix {
				e.prefix = si
			}
		} else if perRecord && !e.full {
			seg.heldAt = known // every record of it is held
			window += len(seg.recs)
		}
		if take && k > 0 {
			clear(seg.recs[kept:]) // keep no reference to records sent
			seg.recs = seg.recs[:kept]
			seg.bytes -= b
			w.bufCount -= k
			w.bufBytes -= b
		}
	}
	if take {
		w.advanceHeadLocked()
	}
	return batch, e
}

// advanceHeadLocked moves the queue's head past emptied segments.
func (w *Writer) advanceHeadLocked() {
	for w.head < len(w.queue) && len(w.queue[w.head].recs) == 0 {
		w.queue[w.head] = segment{}
		w.head++
	}
	w.compactQueueLocked()
}

// takeOrderedLocked is takeLocked in order mode.
func (w *Writer) takeOrderedLocked(now time.Time, limit int) (segment, bool) {
	if i := w.dueRetryOrderedLocked(now); i >= 0 {
		return w.takeRetryLocked(i, limit), true
	}
	if w.bufCount == 0 || !w.newMayPassLocked(now) {
		return segment{}, false
	}
	maxSize := w.cfg.MaxBatchSize
	if limit > 0 {
		maxSize = min(maxSize, limit)
	}
	_, e := w.scanNewLocked(maxSize, false)
	if e.n == 0 || !(w.flushing > 0 || e.full || w.bufferFullLocked() || now.Sub(e.oldest) >= w.cfg.MaxTimeInBuffer) {
		return segment{}, false
	}
	if e.segs == 1 && e.prefix >= 0 {
		// The common case, the first records of one segment (in partition
		// order a segment has one lane), goes as a sub-slice.
		seg := &w.queue[e.prefix]
		batch := segment{recs: seg.recs[:e.n:e.n], bytes: e.bytes, seq: seg.seq, enq: seg.enq, epoch: seg.epoch}
		seg.recs = seg.recs[e.n:]
		seg.bytes -= e.bytes
		seg.seq += uint64(e.n)
		w.bufCount -= e.n
		w.bufBytes -= e.bytes
		w.advanceHeadLocked()
		return batch, true
	}
	batch, _ := w.scanNewLocked(maxSize, true)
	return batch, true
}

// bufferFullLocked reports whether the buffer holds a batch's worth, by
// count or bytes: what makes a batch due in unordered mode. In order mode
// the records of free lanes then go at once, however few: the rest wait
// for their lanes, not for more records to batch with, and waiting for
// max_time_in_buffer would leave request slots idle while lanes free up
// one by one.
func (w *Writer) bufferFullLocked() bool {
	return w.bufCount >= w.cfg.MaxBatchSize || w.bufBytes >= w.cfg.MaxBatchBytes
}

// nextDeadlineOrderedLocked is nextDeadlineLocked in order mode: only
// times still to come count, as a record that is due but held waits for
// its lane, which an event frees.
func (w *Writer) nextDeadlineOrderedLocked(now time.Time) time.Time {
	var next time.Time
	later := func(t time.Time) {
		if t.Before(w.holdUntil) {
			t = w.holdUntil
		}
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for i := range w.retries {
		later(w.retries[i].notBefore)
	}
	if w.bufCount > 0 && len(w.retries) < w.cfg.MaxInFlightRequests {
		if _, e := w.scanNewLocked(w.cfg.MaxBatchSize, false); e.n > 0 {
			later(e.oldest.Add(w.cfg.MaxTimeInBuffer))
		}
	}
	return next
}

// holdLanesLocked marks batch's lanes in flight until releaseLanesLocked
// is given the list it returns (read now: once acknowledged, the records
// may be recycled by the source).
func (w *Writer) holdLanesLocked(recs []pipeline.Record) []lane {
	if !w.ordered() {
		return nil
	}
	ls := w.lanesOf(recs)
	w.inflightLanes.add(ls, 1)
	return ls
}

func (w *Writer) releaseLanesLocked(ls []lane) {
	w.inflightLanes.add(ls, -1)
	w.laneFrees++ // segments found held may have free records now
}
