package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/spillway-io/spillway/checkpoint"
)

// runCommits commits what is done until Close stops it (see commitLoop).
func (s *Source) runCommits() {
	defer s.commitLoop.Done()
	commitLoop(s.stopCommits, s.acked, s.cfg.CheckpointInterval, s.cfg.CommitDelay, func(periodic bool) {
		err := s.Checkpoint(context.Background())
		switch {
		case err == nil:
		case periodic:
			s.log.Warn("periodic commit failed; retried next interval", "err", err)
		default:
			// Retried by the next acks or the next interval, which logs
			// it: during an outage acks may come often.
			s.log.Debug("commit after acks failed; retried", "err", err)
		}
	})
}

// commitLoop calls commit delay after a signal on acked (signals meanwhile
// share the call; calls never overlap) and every interval (periodic), until
// stop is closed.
func commitLoop(stop <-chan struct{}, acked <-chan struct{}, interval, delay time.Duration, commit func(periodic bool)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	linger := time.NewTimer(delay)
	linger.Stop()
	defer linger.Stop()
	lingering := false
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			commit(true)
		case <-acked:
			if !lingering {
				linger.Reset(delay)
				lingering = true
			}
		case <-linger.C:
			lingering = false
			commit(false)
		}
	}
}

// recordsDone tells the commit loop that records were done. It never
// blocks: one signal waiting is enough.
func (s *Source) recordsDone() {
	select {
	case s.acked <- struct{}{}:
	default:
	}
}

// commitPoint is what a commit records for a partition: the offset, and
// the done offsets above it for the metadata.
type commitPoint struct {
	offset int64
	done   [][2]int64
}

// Checkpoint commits, for every owned partition, the lowest offset not yet
// done with the done offsets above it in the metadata, if either changed
// since the last commit. Before Run joined the group there is nothing to
// commit. In the exactly-once mode commits are the transactions' own
// (txn.go) and Checkpoint does nothing.
func (s *Source) Checkpoint(ctx context.Context) error {
	if s.txn != nil {
		return nil
	}
	s.mu.Lock()
	points := map[tp]commitPoint{}
	for k, tr := range s.parts {
		if off, done, ok := tr.CommitPoint(); ok {
			points[k] = commitPoint{off, s.withSkipLocked(k, done)}
		}
	}
	s.mu.Unlock()
	return s.commitOffsets(ctx, points)
}

func (s *Source) commitOffsets(ctx context.Context, points map[tp]commitPoint) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	req := map[string]map[int32]kgo.EpochOffset{}
	id := s.checkpointID.Load() + 1
	meta := map[tp]string{}
	limit := checkpoint.MetadataLimit
	plain := s.plainMeta.Load()
	s.mu.Lock()
	cl := s.cl
	for k, pt := range points {
		if plain {
			pt.done = nil
			points[k] = pt
		}
		if prev, ok := s.committed[k]; ok && (prev > pt.offset || prev == pt.offset && slices.Equal(s.committedDone[k], pt.done)) {
			continue
		}
		if req[k.topic] == nil {
			req[k.topic] = map[int32]kgo.EpochOffset{}
		}
		req[k.topic][k.partition] = kgo.EpochOffset{Epoch: -1, Offset: pt.offset}
		meta[k] = checkpoint.Metadata{Checkpoint: id, Done: pt.done}.Encode(pt.offset, limit)
	}
	s.mu.Unlock()
	if len(req) == 0 || cl == nil {
		return nil
	}
	s.checkpointID.Store(id) // under commitMu: ids increase
	s.commits.Add(1)
	cctx := kgo.PreCommitFnContext(ctx, func(r *kmsg.OffsetCommitRequest) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i := range r.Topics {
			for j := range r.Topics[i].Partitions {
				p := &r.Topics[i].Partitions[j]
				k := tp{r.Topics[i].Topic, p.Partition}
				m := meta[k]
				p.Metadata = &m
				// Sent: the broker may apply it even if its answer is lost.
				if sent := s.sent[k]; len(sent) == 0 || sent[len(sent)-1] < p.Offset {
					s.sent[k] = append(sent, p.Offset)
				}
			}
		}
		return nil
	})
	var errs []error
	cl.CommitOffsetsSync(cctx, req, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil {
					if errors.Is(perr, kerr.OffsetMetadataTooLarge) && s.plainMeta.CompareAndSwap(false, true) {
						s.log.Warn("the broker refuses commit metadata of this size (offset.metadata.max.bytes); committing offsets only, so records done above a commit are delivered again after a crash",
							"topic", t.Topic, "partition", p.Partition, "bytes", len(meta[tp{t.Topic, p.Partition}]))
					}
					errs = append(errs, fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, perr))
					continue
				}
				if eo, ok := req[t.Topic][p.Partition]; ok {
					k := tp{t.Topic, p.Partition}
					s.committed[k] = eo.Offset
					s.committedDone[k] = points[k].done
					s.groupAt[k] = eo.Offset
					delete(s.sent, k)
				}
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("commit checkpoint %d: %w", id, errors.Join(errs...))
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		byPart := map[string]string{}
		for k, m := range meta {
			byPart[fmt.Sprintf("%s/%d", k.topic, k.partition)] = m
		}
		s.log.Debug("committed", "checkpoint", id, "offsets", req, "metadata", byPart)
	}
	return nil
}

// Commits returns how many commit requests the source sent.
func (s *Source) Commits() int64 { return s.commits.Load() }

// Committed returns the last offsets this worker committed, by topic and
// partition.
func (s *Source) Committed() map[string]map[int32]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[int32]int64{}
	for k, v := range s.committed {
		if out[k.topic] == nil {
			out[k.topic] = map[int32]int64{}
		}
		out[k.topic][k.partition] = v
	}
	return out
}
