package kafka

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/pipeline"
)

// poll is Run's loop: it polls no more records than the sink has credit
// for (what it keeps at hand aside, hand.go), hands over what fits the
// sink's free bytes and each partition's share of its budget, keeps the
// rest at hand, and lets a rebalance through between polls.
func (s *Source) poll(ctx context.Context, cl *kgo.Client, emit pipeline.Emit) error {
	var (
		avgSize int64 // bytes per record in the last poll
		h       = newHand()
		done    = h.ackedFunc(s.recordsDone)
	)
	// keep is whether records may stay at hand: with credit, outside the
	// exactly-once mode (whose End commits the offsets of everything
	// polled, so everything polled is handed over; the poll was already
	// sized to the credit).
	keep := s.credit != nil && s.txn == nil
	for {
		if ctx.Err() != nil {
			if s.txn == nil { // a transaction still open is ended by Close
				cl.AllowRebalance()
			}
			return nil
		}
		if s.txn != nil {
			if err := s.endTxnIfDue(ctx); err != nil {
				return err
			}
		}
		limit := int64(s.cfg.MaxPollRecords)
		if s.credit != nil {
			free, err := s.waitCredit(ctx, cl)
			if err != nil {
				return nil // ctx ended while paused
			}
			if keep {
				// Take no more than a quarter of the byte budget, and no
				// more than the free bytes, at the recent record size, so
				// what is at hand plus the writer's buffer stays near the
				// budget.
				limit, _ = s.handRoom(h, avgSize)
			} else {
				limit = min(limit, free)
				if _, fb := s.credit.Free(); avgSize > 0 {
					_, capB := s.credit.Capacity()
					limit = min(limit, max(min(fb, capB/4)/avgSize, 1))
				}
			}
		}
		s.sweepHand(h)
		if h.empty() || !keep {
			pctx, endPoll := ctx, context.CancelFunc(func() {})
			if s.txn != nil {
				limit = s.txn.pollLimit(limit)
				pctx, endPoll = s.txn.pollContext(ctx)
			}
			s.task.Set(pipeline.Idle)
			fetches := cl.PollRecords(pctx, int(limit))
			endPoll()
			s.task.Set(pipeline.Busy)
			if ctx.Err() != nil || fetches.IsClientClosed() {
				if s.txn == nil { // a transaction still open is ended by Close
					cl.AllowRebalance()
				}
				return nil
			}
			if s.txn != nil && fetches.NumRecords() > 0 {
				// Polled records are committed by the transaction's End:
				// it must be open before any of them is produced.
				if err := s.txn.begin(fetches.NumRecords()); err != nil {
					return err
				}
			}
			avgSize = s.toHand(fetches, h, avgSize)
		}
		if keep {
			// Top up from what the client has buffered, without waiting:
			// the more partitions at hand, the better they interleave.
			// (A nil context is franz-go's way to poll without waiting; a
			// cancelled one returns nothing.)
			if n, ok := s.handRoom(h, avgSize); ok {
				//lint:ignore SA1012 see above
				avgSize = s.toHand(cl.PollRecords(nil, int(n)), h, avgSize)
			}
		}
		var changed <-chan struct{}
		if keep {
			// Before handOver reads the credit and the partitions'
			// records in the pipeline, so that no change is missed.
			changed = s.credit.Changed()
			select {
			case <-h.acked:
			default:
			}
		}
		batch, took := s.handOver(h, done)
		if len(batch) == 0 {
			if took == 0 && !h.empty() {
				// Every partition at hand has its share in the pipeline:
				// wait for the sink to free some, or for records of other
				// partitions.
				avgSize = s.waitHand(ctx, cl, h, avgSize, changed)
			}
			if s.txn == nil {
				cl.AllowRebalance()
			}
			continue
		}
		if err := emit(ctx, batch); err != nil {
			if s.txn == nil {
				cl.AllowRebalance()
			}
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if s.txn == nil {
			cl.AllowRebalance() // in the exactly-once mode, after the transaction's End
		}
	}
}

// handRoom is how many records of avgSize bytes may still be taken at hand
// (at least 1), and false when none may: what is at hand is bounded by a
// quarter of the sink's byte budget and by its free bytes.
func (s *Source) handRoom(h *hand, avgSize int64) (int64, bool) {
	_, fb := s.credit.Free()
	_, capB := s.credit.Capacity()
	room := min(fb, capB/4) - h.bytes
	if avgSize == 0 {
		return max(int64(s.cfg.MaxPollRecords)-h.n, 1), room > 0
	}
	return max(room/avgSize, 1), room > 0
}

// toHand logs the poll's errors and puts its records at hand. It returns
// the poll's bytes per record, or avgSize when it brought none.
func (s *Source) toHand(fetches kgo.Fetches, h *hand, avgSize int64) int64 {
	fetches.EachError(func(t string, p int32, err error) {
		var session *kgo.ErrGroupSession
		switch {
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		case errors.As(err, &session): // the group watch logged it
		case t == "": // not a partition's: the client's own (dial)
			s.log.Warn("kafka client error; it retries", "err", err)
		default:
			s.log.Warn("fetch error; the client retries", "topic", t, "partition", p, "err", err)
		}
	})
	var n, b int64
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 {
			return
		}
		k := tp{fp.Topic, fp.Partition}
		s.mu.Lock()
		tr := s.parts[k]
		s.mu.Unlock()
		if tr == nil {
			return // not ours any more: the new owner re-reads it
		}
		h.add(k, tr, fp.Records)
		n += int64(len(fp.Records))
		for _, r := range fp.Records {
			b += int64(recordSize(r))
		}
	})
	if n == 0 {
		return avgSize
	}
	return max(b/n, 1)
}

// sweepHand drops the records at hand of partitions that are not ours, or
// not under the same tracker, any more (revoked, lost or reassigned: the
// client fetches them again from the group's offset).
func (s *Source) sweepHand(h *hand) {
	if len(h.parts) == 0 {
		return
	}
	s.mu.Lock()
	for _, p := range h.parts {
		if s.parts[p.k] != p.tr {
			h.drop(p)
		}
	}
	s.mu.Unlock()
	h.compact()
}

// handOver moves records from h to batch: the partitions with the least
// in the pipeline first (ties in turn, the first one rotating), each up to
// its share of the sink's record budget less what it has in the pipeline,
// all of them up to the free records (max_poll_records at most) and bytes.
// Without credit, or in the exactly-once mode, everything at hand goes.
// took counts the records taken from h, including those not in batch
// (fetched again, or skipped as done by the commit's metadata).
func (s *Source) handOver(h *hand, done func()) (batch []pipeline.Record, took int) {
	if h.empty() {
		return nil, 0
	}
	roomR, roomB := h.n, int64(-1)
	share := int64(-1) // no limit
	if s.credit != nil && s.txn == nil {
		var fr int64
		fr, roomB = s.credit.Free()
		roomR = min(max(fr, 0), int64(s.cfg.MaxPollRecords))
		roomB = max(roomB, 0)
		capR, _ := s.credit.Capacity()
		// The active partitions: those with records at hand or in the
		// pipeline.
		active := int64(0)
		s.mu.Lock()
		for k, tr := range s.parts {
			n := int64(tr.Pending())
			if p := h.idx[k]; p != nil {
				p.pending = n
				active++
			} else if n > 0 {
				active++
			}
		}
		s.mu.Unlock()
		// Shares add up to one and a half budgets: a partition with a
		// batch in flight wants another one ready behind it while others
		// wait for a request slot, and exact shares made it send partial
		// batches (12 partitions, 8 slots: 0.77 of ordering none instead
		// of 0.81; twice the budget: 0.77, too few partitions buffered).
		share = max(capR*3/2/max(active, 1), 1)
	}
	ls := &lease{pool: &s.pool}
	batch = s.pool.get(int(min(roomR, h.n))) // Emit takes ownership; recycled by its lease
	var offs []int64
	cut := false
	order := make([]*handPart, 0, len(h.parts))
	for i := range h.parts {
		order = append(order, h.parts[(h.next+i)%len(h.parts)])
	}
	if share >= 0 {
		// Least first: credit freed by a partition's delivered batch goes
		// back to it rather than to whichever partition comes first, so
		// no partition is left without a batch ready (4 partitions: 0.45
		// of ordering none with partition order, 0.56 with key order,
		// against 0.42 and 0.45 in turn).
		slices.SortStableFunc(order, func(a, b *handPart) int { return cmp.Compare(a.pending, b.pending) })
	}
	for _, p := range order {
		if roomR <= 0 || roomB == 0 {
			break
		}
		want := min(int64(len(p.recs)), roomR)
		if share >= 0 {
			want = min(want, share-p.pending)
		}
		if want <= 0 {
			continue
		}
		take, b := 0, int64(0)
		for _, r := range p.recs[:want] {
			sz := int64(recordSize(r))
			if roomB >= 0 && sz > roomB && (take > 0 || len(batch) > 0) {
				cut = true
				break
			}
			if roomB >= 0 {
				roomB -= sz // the first record handed over always goes
			}
			take++
			b += sz
		}
		if take == 0 {
			continue
		}
		roomR -= int64(take)
		took += take
		recs := h.take(p, take, b)
		offs = offs[:0]
		for _, r := range recs {
			offs = append(offs, r.Offset)
		}
		// Records fetched again (the client reset its position) are
		// skipped: they were begun before.
		from, to := p.tr.BeginBatch(offs)
		recs = recs[from:to]
		s.mu.Lock()
		skip := s.skip[p.k]
		s.mu.Unlock()
		if len(skip) > 0 {
			recs = s.skipDone(p.k, p.tr, recs, skip) // named done by the commit's metadata
		}
		batch = appendRecords(batch, recs, &leaseAcker{tr: p.tr, lease: ls, done: done})
	}
	h.next++
	h.compact()
	if cut {
		s.cuts.Add(1)
	}
	if len(batch) > 0 {
		ls.arm(batch)
	}
	return batch, took
}

// waitHand waits, when the records at hand cannot be handed over yet, for
// the sink's credit to change (ch, taken before the credit was read), for
// records handed over to be done (h.acked: the sink may free its credit
// before the records' acks, say of a dead letter, arrive) or, while there
// is room at hand, for records of other partitions (put at hand). It
// returns toHand's record size.
func (s *Source) waitHand(ctx context.Context, cl *kgo.Client, h *hand, avgSize int64, ch <-chan struct{}) int64 {
	n, ok := s.handRoom(h, avgSize)
	if !ok {
		s.task.Set(pipeline.Backpressured)
		select {
		case <-ch:
		case <-h.acked:
		case <-ctx.Done():
		}
		s.task.Set(pipeline.Busy)
		return avgSize
	}
	pctx, cancel := context.WithCancel(ctx)
	stop := make(chan struct{})
	go func() { // ends with the poll
		defer close(stop)
		select {
		case <-ch:
			cancel()
		case <-h.acked:
			cancel()
		case <-pctx.Done():
		}
	}()
	s.task.Set(pipeline.Idle)
	fetches := cl.PollRecords(pctx, int(n))
	s.task.Set(pipeline.Busy)
	cancel()
	<-stop
	if fetches.IsClientClosed() {
		return avgSize
	}
	return s.toHand(fetches, h, avgSize)
}

// recordSize is pipeline.Record.Size for a fetched record, so the bytes the
// source hands over match the credit the sink takes for them.
func recordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// appendRecords converts rs in place at the end of batch: this runs once per
// record on the poll goroutine, so it avoids building intermediate copies of
// the (144-byte) Record.
func appendRecords(batch []pipeline.Record, rs []*kgo.Record, tr pipeline.Acker) []pipeline.Record {
	i := len(batch)
	batch = slices.Grow(batch, len(rs))[:i+len(rs)]
	for _, r := range rs {
		d := &batch[i]
		*d = pipeline.Record{
			Key: r.Key, Value: r.Value, Timestamp: r.Timestamp,
			Origin: pipeline.Origin{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset},
		}
		if len(r.Headers) > 0 {
			d.Headers = make([]pipeline.Header, len(r.Headers))
			for j, h := range r.Headers {
				d.Headers[j] = pipeline.Header{Key: h.Key, Value: h.Value}
			}
		}
		d.SetAcker(tr)
		i++
	}
	return batch
}

// waitCredit returns the free records once there is room for a poll,
// pausing the owned partitions while there is not.
func (s *Source) waitCredit(ctx context.Context, cl *kgo.Client) (int64, error) {
	fr, fb := s.credit.Free()
	capR, capB := s.credit.Capacity()
	partMax := min(s.fetchPart, capB/2)
	if fr > 0 && fb >= partMax {
		return fr, nil
	}
	s.mu.Lock()
	owned := map[string][]int32{}
	for k := range s.parts {
		owned[k.topic] = append(owned[k.topic], k.partition)
	}
	s.mu.Unlock()
	cl.PauseFetchPartitions(owned)
	s.task.Set(pipeline.Backpressured)
	s.pauses.Add(1)
	start := time.Now()
	s.log.Debug("sink out of credit; fetching paused", "free_records", fr, "free_bytes", fb)
	defer func() {
		cl.ResumeFetchPartitions(owned)
		s.pausedNs.Add(int64(time.Since(start)))
	}()
	wantR, wantB := int64(float64(capR)*s.cfg.ResumeAt), int64(float64(capB)*s.cfg.ResumeAt)
	for {
		ch := s.credit.Changed()
		fr, fb = s.credit.Free()
		if fr >= max(wantR, 1) && fb >= max(wantB, partMax) {
			return fr, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
