package kafka

import (
	"context"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/checkpoint"
)

// Lost partitions and what survives a lost group session.
//
// franz-go ends the group session ("lost") on any heartbeat, join or sync
// error other than REBALANCE_IN_PROGRESS, including transport errors. With
// the classic protocol a single unreachable coordinator is enough: the
// heartbeat's request is retried once, the retry has to look the
// coordinator up again (FindCoordinator), and a refused dial there is not
// retried (franz-go v1.22.3, client.go retryable.Request: shouldRetry
// excludes non-timeout dial errors, shouldRetryNext needs another broker).
// So a broker restart loses the session within a heartbeat interval plus
// ~0.3 s, long before the broker would expire the member, even though the
// broker may still count the member in (a real Kafka reloads the group's
// members from __consumer_offsets after a restart; kfake does not).
//
// Dropping the partitions' trackers at that point throws away everything
// delivered since the last commit: the session is lost while the broker is
// down, when no commit can succeed. Instead a lost partition's tracker is
// held, not revoked: its records in flight keep going and their acks are
// recorded, but nothing is committed for it. When the group assigns the
// partition to this worker again, the tracker is resumed only with proof
// that nobody moved the partition on meanwhile: the group's committed
// offset, which franz-go fetches for the new assignment (resume), must
// equal the one this worker last knew (groupAt: what it last committed, or
// what the group held when the tracker started, "none" included), or one
// it sent in a commit whose answer was lost. Then
//
//   - every record below the tracker's committable offset is done: below
//     the offset the tracker started from by the commit that set it (or
//     never to be read, below a reset start), above it by our own acks;
//   - committing it cannot move the group backwards, since the group is
//     still where we left it;
//   - the records fetched again from the committed offset up to the
//     tracker's highest begun one are skipped (checkpoint.BeginBatch):
//     each is delivered or still in flight here.
//
// Otherwise (another commit happened, the partition went to another
// member, no commit of ours to compare with, the source is closing) the
// held tracker is revoked as before: its buffered records are abandoned
// and the new owner re-reads from the group's commit.

// heldPart is a lost partition's tracker awaiting the group's verdict.
type heldPart struct {
	tr *checkpoint.Partition
	// skip are the tracker's done ranges from commit metadata it had not
	// reached yet (skip.go), given back with it.
	skip [][2]int64
	// candidate is set when a new session assigned the partition back:
	// resume decides. A candidate still held at the next assignment never
	// got its offsets (the session ended first) and is dropped.
	candidate bool
}

func (s *Source) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := map[tp]bool{}
	for t, ps := range assigned {
		for _, p := range ps {
			k := tp{t, p}
			in[k] = true
			if old := s.parts[k]; old != nil {
				old.Revoke() // not expected: franz-go assigns only what it added
			}
			s.parts[k] = checkpoint.NewPartition(-1)
			delete(s.skip, k) // resume sets the fresh tracker's
		}
	}
	s.dropHeldLocked(func(k tp, h *heldPart) bool {
		if in[k] && !h.candidate {
			h.candidate = true
			return false
		}
		return true
	})
	s.log.Info("partitions assigned", "partitions", fmtParts(assigned))
	s.gw.assigned()
}

// lost holds the lost partitions' trackers (see above) or, when they cannot
// be resumed, forgets them without committing: another member may own them.
// franz-go also calls it with nothing lost when the client closes after
// losing its session; that is not worth a warning.
func (s *Source) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.txn != nil {
		// Nothing is held: the session aborts the transaction that was
		// open and rewinds to the last commit (txn.go).
		s.dropTxnPartsLocked(lost)
		if len(lost) > 0 {
			s.log.Warn("partitions lost (group session ended); the next transaction is aborted and they are read again from the last commit",
				"partitions", fmtParts(lost))
		}
		return
	}
	var heldParts, dropped map[string][]int32
	for t, ps := range lost {
		for _, p := range ps {
			k := tp{t, p}
			tr := s.parts[k]
			if tr == nil {
				continue
			}
			delete(s.parts, k)
			skip := s.skip[k]
			delete(s.skip, k)
			if _, ok := s.groupAt[k]; ok && !s.closing && s.held[k] == nil {
				s.held[k] = &heldPart{tr: tr, skip: skip}
				heldParts = addPart(heldParts, k)
				continue
			}
			// A tracker whose offsets never came (assigned, then lost
			// before resume ran) began nothing: there is nothing to hold,
			// and an older held tracker for the partition stays.
			tr.Revoke()
			if s.held[k] == nil {
				dropped = addPart(dropped, k)
			}
		}
	}
	if len(dropped) > 0 {
		s.abandon.Add()
		s.log.Warn("partitions lost (group session ended); nothing committed for them, the new owner re-reads from the last commit",
			"partitions", fmtParts(dropped))
	}
	if len(heldParts) > 0 {
		s.log.Warn("partitions lost (group session ended); their records in flight are kept and nothing is committed for them until the group assigns them back unchanged",
			"partitions", fmtParts(heldParts))
	}
}

// resume is franz-go's AdjustFetchOffsetsFn: it sees the group's committed
// offsets for a new assignment before fetching starts, and resumes the held
// trackers whose partition the group still has at this worker's last
// commit (see above). A fresh tracker gets the done offsets that the
// commit's metadata names (skip.go). The offsets are returned unchanged.
func (s *Source) resume(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	stored := s.storedFor(ctx, offsets)
	s.mu.Lock()
	defer s.mu.Unlock()
	var resumed, dropped, skipping, ahead map[string][]int32
	var skipN int64
	for t, ps := range offsets {
		for p, o := range ps {
			k := tp{t, p}
			at := o.EpochOffset().Offset
			h := s.held[k]
			if h != nil && h.candidate {
				delete(s.held, k)
				if s.unchangedLocked(k, at) && s.parts[k] != nil {
					s.parts[k].Revoke() // the fresh tracker assigned made; nothing begun on it yet
					s.parts[k] = h.tr
					if len(h.skip) > 0 {
						s.skip[k] = h.skip
					}
					resumed = addPart(resumed, k)
					continue
				}
				h.tr.Revoke()
				dropped = addPart(dropped, k)
			}
			s.groupAt[k] = at // the fresh tracker starts here
			if st, ok := stored[k]; ok && st+1 > at {
				// The destination holds more than the group committed: start
				// after it, and let the next commit say so (lag and
				// autoscaling read the group's offset).
				ps[p] = kgo.NewOffset().At(st + 1)
				if s.parts[k] != nil {
					s.parts[k].Revoke() // the fresh tracker assigned made; nothing begun on it yet
					s.parts[k] = checkpoint.NewPartition(st + 1)
				}
				ahead = addPart(ahead, k)
				continue
			}
			if fd, ok := s.fetchedDone[k]; ok && fd.offset == at && s.parts[k] != nil {
				s.skip[k] = fd.done
				skipping = addPart(skipping, k)
				for _, r := range fd.done {
					skipN += r[1] - r[0] + 1
				}
			}
		}
	}
	s.fetchedDone = nil
	if len(ahead) > 0 {
		s.log.Info("partitions start after the offsets the destination stored, ahead of the group's commit",
			"partitions", fmtParts(ahead))
	}
	if len(skipping) > 0 {
		s.log.Info("the group's last commit names records above its offsets as done; they are skipped",
			"partitions", fmtParts(skipping), "records", skipN)
	}
	if len(dropped) > 0 {
		s.abandon.Add()
		s.log.Warn("partitions assigned back after a lost session had moved on; the work held for them is dropped and re-read from the group's commit",
			"partitions", fmtParts(dropped))
	}
	if len(resumed) > 0 {
		s.log.Info("partitions assigned back unchanged after a lost session; the work held for them is kept",
			"partitions", fmtParts(resumed))
	}
	return offsets, nil
}

// unchangedLocked reports whether the group's offset at for k is one this
// worker knew or set: the one it last knew, or one it sent in a commit
// whose answer it did not get (the broker may have applied it before it
// went down). The caller holds s.mu.
func (s *Source) unchangedLocked(k tp, at int64) bool {
	if known, ok := s.groupAt[k]; ok && at == known {
		return true
	}
	return slices.Contains(s.sent[k], at)
}

// dropHeldLocked revokes the held trackers for which drop (nil: all)
// returns true. The caller holds s.mu.
func (s *Source) dropHeldLocked(drop func(tp, *heldPart) bool) {
	var dropped map[string][]int32
	for k, h := range s.held {
		if drop == nil || drop(k, h) {
			h.tr.Revoke()
			delete(s.held, k)
			dropped = addPart(dropped, k)
		}
	}
	if len(dropped) > 0 {
		s.abandon.Add()
		if drop != nil {
			s.log.Warn("partitions lost earlier went to another member; nothing committed for them, the new owner re-reads from the last commit",
				"partitions", fmtParts(dropped))
		}
	}
}

func addPart(m map[string][]int32, k tp) map[string][]int32 {
	if m == nil {
		m = map[string][]int32{}
	}
	m[k.topic] = append(m[k.topic], k.partition)
	return m
}
