package kafka

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/pipeline"
)

// poll is Run's loop: it polls no more records than the sink has credit
// for, hands over what fits the sink's free bytes, rewinds the rest, and
// lets a rebalance through between polls.
func (s *Source) poll(ctx context.Context, cl *kgo.Client, emit pipeline.Emit) error {
	var (
		offs    []int64
		batch   []pipeline.Record
		avgSize int64 // bytes per record in the last poll
		fps     []kgo.FetchTopicPartition
		polls   int
	)
	for {
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
			limit = min(limit, free)
			// Take no more than the free bytes hold at the recent record
			// size, so the poll in hand does not overshoot the budget.
			// A poll takes at most a quarter of the budget, so the records
			// in hand plus the writer's buffer stay near the budget.
			if _, fb := s.credit.Free(); avgSize > 0 {
				_, capB := s.credit.Capacity()
				limit = min(limit, max(min(fb, capB/4)/avgSize, 1))
			}
		}
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
		batch = s.pool.get(fetches.NumRecords()) // Emit takes ownership; recycled by its lease
		ls := &lease{pool: &s.pool}
		// Hand over no more bytes than the sink has room for, so emit does
		// not block holding the poll: a rebalance waits for AllowRebalance,
		// and a sink that frees nothing (breaker open) would hold it past the
		// rebalance timeout. The rest is fetched again (cut).
		room := int64(-1)
		// In the exactly-once mode nothing is cut: End commits the
		// offsets of everything polled, so everything polled is handed
		// over (the poll was already sized to the credit).
		if s.credit != nil && s.txn == nil {
			_, room = s.credit.Free()
			room = max(room, 0)
		}
		var taken, takenBytes int64 // for the record size estimate
		var cuts map[string]map[int32]kgo.EpochOffset
		// When the room runs out, the partitions handed over first win, so
		// the first one rotates from poll to poll: a fixed order would
		// starve the last partitions of every cut poll.
		fps = fps[:0]
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) { fps = append(fps, fp) })
		polls++
		for i := range fps {
			fp := fps[(i+polls)%len(fps)]
			if len(fp.Records) == 0 {
				continue
			}
			k := tp{fp.Topic, fp.Partition}
			s.mu.Lock()
			tr, skip := s.parts[k], s.skip[k]
			s.mu.Unlock()
			if tr == nil {
				continue // not ours any more: the new owner re-reads it
			}
			take := len(fp.Records)
			if room >= 0 {
				take = 0
				for _, r := range fp.Records {
					sz := int64(recordSize(r))
					if sz > room && (take > 0 || len(batch) > 0) {
						break
					}
					room -= sz // the first record of a poll always goes
					take++
					takenBytes += sz
				}
				taken += int64(take)
				if take < len(fp.Records) {
					room = 0 // later partitions are cut at their first record
					if cuts == nil {
						cuts = map[string]map[int32]kgo.EpochOffset{}
					}
					if cuts[fp.Topic] == nil {
						cuts[fp.Topic] = map[int32]kgo.EpochOffset{}
					}
					r := fp.Records[take]
					cuts[fp.Topic][fp.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
				}
			}
			offs = offs[:0]
			for _, r := range fp.Records[:take] {
				offs = append(offs, r.Offset)
			}
			// Records fetched again (the client reset its position) are
			// skipped: they were begun before.
			from, to := tr.BeginBatch(offs)
			recs := fp.Records[from:to]
			if len(skip) > 0 {
				recs = s.skipDone(k, tr, recs, skip) // named done by the commit's metadata
			}
			batch = appendRecords(batch, recs, &leaseAcker{tr: tr, lease: ls, done: s.recordsDone})
		}
		clear(fps) // do not keep the poll's records alive
		if cuts != nil {
			// Rewind the partitions that did not fit to their first record
			// not handed over; franz-go drops what it buffered beyond it.
			cl.SetOffsets(cuts)
			s.cuts.Add(1)
		}
		if taken > 0 {
			avgSize = max(takenBytes/taken, 1)
		}
		if len(batch) > 0 {
			ls.arm(batch)
			if err := emit(ctx, batch); err != nil {
				if s.txn == nil {
					cl.AllowRebalance()
				}
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		if s.txn == nil {
			cl.AllowRebalance() // in the exactly-once mode, after the transaction's End
		}
	}
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
