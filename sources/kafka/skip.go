package kafka

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/spillway-io/spillway/checkpoint"
)

// Skipping what a commit's metadata names as done.
//
// Each commit carries, in its metadata, the offsets done above the committed
// one (checkpoint.Metadata): records completed out of order, and those done
// since the commit before, up to the moment it was made. When a partition
// is assigned, franz-go fetches the group's commits (fetched sees them with
// their metadata) and then asks resume where to start: a fresh tracker
// starts at the committed offset and skips the offsets the metadata names,
// so that after a crash only the records that were not done when the last
// commit was made are delivered again, not everything above the committed
// offset. A skipped record is begun and acknowledged at once, so the
// tracker's committable offset moves past it as if it had been delivered
// again. Metadata written by anything else (another client, an older
// Spillway) names nothing and the partition is re-read from the committed
// offset.

// committedDone is a fetched commit's offset and the done offsets its
// metadata names above it.
type committedDone struct {
	offset int64
	done   [][2]int64
}

// fetched is franz-go's OnOffsetsFetched: it keeps, for resume, the done
// offsets named by the metadata of the group's commits for a new
// assignment. Foreign or malformed metadata is ignored (logged once, at
// debug).
func (s *Source) fetched(_ context.Context, _ *kgo.Client, resp *kmsg.OffsetFetchResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fetchedDone = map[tp]committedDone{}
	if s.txn != nil {
		return nil // transactions commit nothing done above their offsets (txn.go)
	}
	add := func(topic string, partition int32, offset int64, meta *string, code int16) {
		if topic == "" || code != 0 || offset < 0 || meta == nil || *meta == "" {
			return
		}
		m, err := checkpoint.ParseMetadata(*meta, offset)
		if err != nil {
			if s.metaIgnored.CompareAndSwap(false, true) {
				s.log.Debug("commit metadata ignored; the partition is re-read from the committed offset",
					"topic", topic, "partition", partition, "foreign", errors.Is(err, checkpoint.ErrForeignMetadata), "err", err)
			}
			return
		}
		if len(m.Done) > 0 {
			s.fetchedDone[tp{topic, partition}] = committedDone{offset, m.Done}
		}
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			add(t.Topic, p.Partition, p.Offset, p.Metadata, p.ErrorCode)
		}
	}
	for _, g := range resp.Groups {
		if g.Group != s.cfg.Group {
			continue
		}
		for _, t := range g.Topics {
			for _, p := range t.Partitions {
				add(t.Topic, p.Partition, p.Offset, p.Metadata, p.ErrorCode)
			}
		}
	}
	return nil
}

// skipDone removes from recs (in place) the records that k's skip ranges
// name, acknowledges them on tr, and forgets the ranges recs went past. It
// returns the records to deliver. recs are increasing offsets tr just
// began.
func (s *Source) skipDone(k tp, tr *checkpoint.Partition, recs []*kgo.Record, skip [][2]int64) []*kgo.Record {
	if len(recs) == 0 {
		return recs
	}
	last := recs[len(recs)-1].Offset
	keep := recs[:0]
	var skipped []int64
	i := 0 // skip[i] is the first range not below the current offset
	for _, r := range recs {
		for i < len(skip) && skip[i][1] < r.Offset {
			i++
		}
		if i < len(skip) && skip[i][0] <= r.Offset {
			skipped = append(skipped, r.Offset)
			continue
		}
		keep = append(keep, r)
	}
	for i < len(skip) && skip[i][1] <= last {
		i++ // wholly at or below the last offset seen: done with it
	}
	s.mu.Lock()
	if s.parts[k] == tr {
		if i == len(skip) {
			delete(s.skip, k)
		} else {
			s.skip[k] = skip[i:]
		}
	}
	s.mu.Unlock()
	if len(skipped) > 0 {
		tr.Ack(skipped)
		s.skipped.Add(int64(len(skipped)))
		s.recordsDone()
	}
	return keep
}

// Skipped returns how many fetched records the source skipped because a
// commit's metadata named them done.
func (s *Source) Skipped() int64 { return s.skipped.Load() }

// withSkipLocked adds to done, the done offsets k's tracker reports above
// its committable one, the ranges still to skip: the tracker has not
// reached them, and a commit that left them out would make the next owner
// deliver them again. The caller holds s.mu.
func (s *Source) withSkipLocked(k tp, done [][2]int64) [][2]int64 {
	sk := s.skip[k]
	if len(sk) == 0 {
		return done
	}
	return unionRanges(done, sk)
}

// unionRanges returns the union of two lists of increasing, disjoint
// [first, last] ranges, increasing and disjoint, adjacent ranges merged.
func unionRanges(a, b [][2]int64) [][2]int64 {
	out := make([][2]int64, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		var r [2]int64
		if len(b) == 0 || len(a) > 0 && a[0][0] <= b[0][0] {
			r, a = a[0], a[1:]
		} else {
			r, b = b[0], b[1:]
		}
		if n := len(out); n > 0 && r[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}
