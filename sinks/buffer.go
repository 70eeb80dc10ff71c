package sinks

import (
	"slices"
	"time"

	"github.com/spillway-io/spillway/pipeline"
)

// segment is a run of buffered records that travel together: the records of
// one Write chunk, or the failed entries of one request waiting to be
// retried as the same batch. Buffering whole segments instead of single
// records keeps the hot path to one copy per record and lets a batch be a
// sub-slice of a segment.
type segment struct {
	recs      []pipeline.Record
	bytes     int
	seq       uint64    // position of recs[0] in write order; orders retries
	enq       time.Time // when the oldest record was buffered
	attempts  int       // deliveries tried so far (all records of a segment share it)
	failures  []int     // per record, non-throttled failed attempts, capped by MaxAttempts; nil: none yet
	notBefore time.Time // retry backoff
	retry     bool
	epoch     uint64 // the source's Abandonment epoch when the oldest record was buffered
	oneLane   bool   // all records of one ordering lane (see splitLanes)
	// heldAt is Writer.laneFrees+1 when an ordered scan found every
	// record held (0: not known); it stays so until a lane is released.
	heldAt uint64
}

// dueLocked reports whether takeLocked would return a batch now, unordered
// (order mode: takeOrderedLocked).
func (w *Writer) dueLocked(now time.Time) bool {
	if w.dueRetryLocked(now) >= 0 {
		return true
	}
	if w.bufCount == 0 || !w.newMayPassLocked(now) {
		return false
	}
	front := &w.queue[w.head]
	return w.flushing > 0 || w.bufCount >= w.cfg.MaxBatchSize || w.bufBytes >= w.cfg.MaxBatchBytes ||
		now.Sub(front.enq) >= w.cfg.MaxTimeInBuffer
}

// dueRetryLocked is the index of the oldest retry whose backoff has
// passed, or -1. None is due while a throttled answer's wait runs.
func (w *Writer) dueRetryLocked(now time.Time) int {
	if now.Before(w.holdUntil) {
		return -1
	}
	for i := range w.retries {
		if !now.Before(w.retries[i].notBefore) {
			return i
		}
	}
	return -1
}

// newMayPassLocked reports whether new records may be sent while retries
// wait out their backoff. A retry of a failed request does not hold the
// writer up: other batches keep the request slots busy. But none is sent
// while a throttled answer's wait runs (the destination asked to wait),
// nor while max_in_flight_requests retries wait (a destination failing
// most requests is not fed more, and newer records do not use up their
// attempts in an outage the breaker has not yet seen).
func (w *Writer) newMayPassLocked(now time.Time) bool {
	return !now.Before(w.holdUntil) && len(w.retries) < w.cfg.MaxInFlightRequests
}

// takeLocked removes the next batch, of at most limit records (0: no
// bound), if one is due. Retries go first, oldest first, once their
// backoff has passed, each whole unless limit is smaller (a probe). New
// records go as a full batch, an aged one, or anything during a flush,
// when newMayPassLocked lets them pass the retries that wait.
func (w *Writer) takeLocked(now time.Time, limit int) (segment, bool) {
	if w.ordered() {
		return w.takeOrderedLocked(now, limit)
	}
	if !w.dueLocked(now) {
		return segment{}, false
	}
	if i := w.dueRetryLocked(now); i >= 0 {
		return w.takeRetryLocked(i, limit), true
	}
	if w.bufCount == 0 {
		return segment{}, false
	}
	maxSize := w.cfg.MaxBatchSize
	if limit > 0 {
		maxSize = min(maxSize, limit)
	}
	front := &w.queue[w.head]
	batch := segment{seq: front.seq, enq: front.enq, epoch: front.epoch}
	for w.head < len(w.queue) && len(batch.recs) < maxSize {
		seg := &w.queue[w.head]
		room := maxSize - len(batch.recs)
		if len(seg.recs) <= room && batch.bytes+seg.bytes <= w.cfg.MaxBatchBytes {
			// The whole segment fits: the common case takes it without copying.
			if batch.recs == nil {
				batch.recs = seg.recs
			} else {
				batch.recs = append(batch.recs[:len(batch.recs):len(batch.recs)], seg.recs...)
			}
			batch.bytes += seg.bytes
			w.queue[w.head] = segment{}
			w.head++
			continue
		}
		if len(batch.recs) > 0 {
			// Send what we have rather than split the next segment: a
			// split costs a copy, and leaves every later batch misaligned.
			break
		}
		// A segment alone exceeds the byte limit (or the admissions' batch
		// size): send a prefix that fits, as a sub-slice. At least one
		// record always fits, as max_record_bytes <= max_batch_bytes.
		k, b := 0, 0
		for k < len(seg.recs) && k < room {
			sz := seg.recs[k].Size()
			if b+sz > w.cfg.MaxBatchBytes && k > 0 {
				break
			}
			b += sz
			k++
		}
		batch.recs, batch.bytes = seg.recs[:k:k], b
		seg.recs = seg.recs[k:]
		seg.bytes -= b
		seg.seq += uint64(k)
		break
	}
	w.bufCount -= len(batch.recs)
	w.bufBytes -= batch.bytes
	w.compactQueueLocked()
	return batch, true
}

// takeRetryLocked removes retries[i] and returns it, or only its first
// limit records when limit is smaller (a probe; 0: no bound).
func (w *Writer) takeRetryLocked(i, limit int) segment {
	r := w.retries[i]
	w.waitingLanes.add(w.lanesOf(r.recs), -1) // taken: it holds in-flight lanes instead
	if limit > 0 && len(r.recs) > limit {
		// Send a prefix; the rest stays first in line. (The prefix's
		// composition differs from the failed request's, so its
		// idempotency key does too: at-least-once allows the duplicate.)
		probe := r
		probe.recs = r.recs[:limit:limit]
		probe.failures = nil
		if r.failures != nil {
			probe.failures = r.failures[:limit:limit]
		}
		probe.bytes = 0
		for i := range probe.recs {
			probe.bytes += probe.recs[i].Size()
		}
		rest := &w.retries[i]
		rest.recs = r.recs[limit:]
		if r.failures != nil {
			rest.failures = r.failures[limit:]
		}
		rest.bytes -= probe.bytes
		rest.seq += uint64(limit)
		w.waitingLanes.add(w.lanesOf(rest.recs), 1)
		return probe
	}
	w.retries = slices.Delete(w.retries, i, i+1)
	return r
}

// compactQueueLocked reclaims the queue's consumed front.
func (w *Writer) compactQueueLocked() {
	if w.head == len(w.queue) {
		w.queue, w.head = w.queue[:0], 0
	} else if w.head > 1024 && w.head*2 > len(w.queue) {
		n := copy(w.queue, w.queue[w.head:])
		clear(w.queue[n:])
		w.queue, w.head = w.queue[:n], 0
	}
}

// untakeLocked puts back a batch takeLocked returned that an admission
// refused: first in line again, as one segment.
func (w *Writer) untakeLocked(batch segment) {
	if batch.retry {
		w.pushRetryLocked(batch)
		return
	}
	w.bufCount += len(batch.recs)
	w.bufBytes += batch.bytes
	var segs []segment
	if w.cfg.Ordering == OrderPartition {
		// Back as segments of one lane each, as the ordered scan expects.
		seq := batch.seq
		w.splitLanes(batch.recs, func(recs []pipeline.Record, oneLane bool) {
			seg := segment{recs: recs, seq: seq, enq: batch.enq, epoch: batch.epoch, oneLane: oneLane}
			for i := range recs {
				seg.bytes += recs[i].Size()
			}
			seq += uint64(len(recs))
			segs = append(segs, seg)
		})
	} else {
		segs = []segment{batch}
	}
	if w.head >= len(segs) {
		w.head -= len(segs)
		copy(w.queue[w.head:], segs)
	} else {
		w.queue = slices.Insert(w.queue, w.head, segs...)
	}
}

// pushRetryLocked queues a failed segment for retry, keeping retries in
// write order so the oldest records are retried first.
func (w *Writer) pushRetryLocked(r segment) {
	w.waitingLanes.add(w.lanesOf(r.recs), 1)
	i := len(w.retries)
	for i > 0 && w.retries[i-1].seq > r.seq {
		i--
	}
	w.retries = append(w.retries, segment{})
	copy(w.retries[i+1:], w.retries[i:])
	w.retries[i] = r
}

// nextDeadlineLocked is when the next batch falls due if nothing else
// happens: a retry's backoff ends, the oldest record reaches
// max_time_in_buffer, or a throttled answer's wait ends for new records
// that are due. It is zero when only an event can make one due.
func (w *Writer) nextDeadlineLocked(now time.Time) time.Time {
	if w.inflight >= w.cfg.MaxInFlightRequests {
		return time.Time{}
	}
	if w.ordered() {
		return w.nextDeadlineOrderedLocked(now)
	}
	var next time.Time
	for i := range w.retries {
		if nb := w.retries[i].notBefore; next.IsZero() || nb.Before(next) {
			next = nb
		}
	}
	if !next.IsZero() && next.Before(w.holdUntil) {
		next = w.holdUntil
	}
	if w.bufCount == 0 || len(w.retries) >= w.cfg.MaxInFlightRequests {
		return next // new records wait for a retry to be taken
	}
	d := w.queue[w.head].enq.Add(w.cfg.MaxTimeInBuffer)
	if w.flushing > 0 || w.bufCount >= w.cfg.MaxBatchSize || w.bufBytes >= w.cfg.MaxBatchBytes {
		d = now
	}
	if d.Before(w.holdUntil) {
		d = w.holdUntil
	}
	if next.IsZero() || d.Before(next) {
		next = d
	}
	return next
}

// sweepAbandonedLocked drops the abandoned records from the whole buffer:
// new records once each time the source's Abandonment moves, and retries
// buffered before it moved (also those that came back from a request in
// flight then). A partition being revoked waits only for its records in
// flight; those still buffered behind records the rate holds back, or
// waiting out a retry's backoff, would otherwise be dropped only when they
// reach the front.
func (w *Writer) sweepAbandonedLocked() {
	epoch := w.abandon.Epoch()
	if epoch != w.swept {
		w.swept = epoch
		w.sweepQueueLocked(epoch)
	}
	for i := 0; i < len(w.retries); {
		r := &w.retries[i]
		if r.epoch == epoch {
			i++
			continue
		}
		lanes := w.lanesOf(r.recs)
		n := len(r.recs)
		empty := w.dropAbandonedLocked(r)
		if len(r.recs) != n {
			w.waitingLanes.add(lanes, -1)
			if empty {
				w.retries = slices.Delete(w.retries, i, i+1)
				continue
			}
			w.waitingLanes.add(w.lanesOf(r.recs), 1)
		}
		i++
	}
}

// sweepQueueLocked drops the abandoned records from the new records.
func (w *Writer) sweepQueueLocked(epoch uint64) {
	for i := w.head; i < len(w.queue); i++ {
		seg := &w.queue[i]
		if seg.epoch == epoch || len(seg.recs) == 0 {
			continue
		}
		n, b := len(seg.recs), seg.bytes
		if w.dropAbandonedLocked(seg) || len(seg.recs) != n {
			w.bufCount -= n - len(seg.recs)
			w.bufBytes -= b - seg.bytes
			seg.heldAt = 0
		}
	}
	w.advanceHeadLocked()
}

// dropAbandonedLocked removes from batch the records whose partition moved
// (or is moving) to another owner since they were buffered
// (pipeline.Abandoner): the owner re-reads them from the last commit, so
// sending them would only make duplicates. They are given back undone
// (pipeline.ReleaseAll) and their credit returns. It reports whether the
// batch is now empty. It runs only when a partition moved since the batch
// was buffered, so it may allocate.
func (w *Writer) dropAbandonedLocked(batch *segment) bool {
	batch.epoch = w.abandon.Epoch()
	keep := 0
	for i := range batch.recs {
		if !batch.recs[i].Abandoned() {
			keep++
		}
	}
	if keep == len(batch.recs) {
		return false
	}
	kept := make([]pipeline.Record, 0, keep)
	var failures []int
	if batch.failures != nil {
		failures = make([]int, 0, keep)
	}
	var dropped []pipeline.Record
	bytes := 0
	for i, r := range batch.recs {
		if r.Abandoned() {
			dropped = append(dropped, r)
			continue
		}
		kept = append(kept, r)
		bytes += r.Size()
		if failures != nil {
			failures = append(failures, batch.failures[i])
		}
	}
	n, b := w.creditOf(dropped)
	pipeline.ReleaseAll(dropped) // dropped must not be read after this
	w.stats.Abandoned.Add(int64(n))
	w.stats.Buffered.Add(-int64(n))
	w.stats.BufferedBytes.Add(-b)
	w.credits.Release(int64(n))
	w.bcredit.Release(b)
	w.signalLocked()
	w.log.Debug("records of moved partitions not sent", "records", n)
	batch.recs, batch.failures, batch.bytes = kept, failures, bytes
	return len(kept) == 0
}
