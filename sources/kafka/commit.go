package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (s *Source) periodicCommits() {
	defer s.commitLoop.Done()
	t := time.NewTicker(s.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopCommits:
			return
		case <-t.C:
			if err := s.Checkpoint(context.Background()); err != nil {
				s.log.Warn("periodic commit failed; retried next interval", "err", err)
			}
		}
	}
}

// Checkpoint commits, for every owned partition, the lowest offset not yet
// done, if it advanced since the last commit. Before Run joined the group
// there is nothing to commit.
func (s *Source) Checkpoint(ctx context.Context) error {
	s.mu.Lock()
	offsets := map[tp]int64{}
	for k, tr := range s.parts {
		if off, ok := tr.Committable(); ok {
			offsets[k] = off
		}
	}
	s.mu.Unlock()
	return s.commitOffsets(ctx, offsets)
}

func (s *Source) commitOffsets(ctx context.Context, offsets map[tp]int64) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	req := map[string]map[int32]kgo.EpochOffset{}
	s.mu.Lock()
	cl := s.cl
	for k, off := range offsets {
		if prev, ok := s.committed[k]; ok && prev >= off {
			continue
		}
		if req[k.topic] == nil {
			req[k.topic] = map[int32]kgo.EpochOffset{}
		}
		req[k.topic][k.partition] = kgo.EpochOffset{Epoch: -1, Offset: off}
	}
	s.mu.Unlock()
	if len(req) == 0 || cl == nil {
		return nil
	}
	id := s.checkpointID.Add(1)
	meta, _ := json.Marshal(map[string]any{"checkpoint": id, "by": "spillway"})
	cctx := kgo.PreCommitFnContext(ctx, func(r *kmsg.OffsetCommitRequest) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i := range r.Topics {
			for j := range r.Topics[i].Partitions {
				p := &r.Topics[i].Partitions[j]
				m := string(meta)
				p.Metadata = &m
				// Sent: the broker may apply it even if its answer is lost.
				k := tp{r.Topics[i].Topic, p.Partition}
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
					errs = append(errs, fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, perr))
					continue
				}
				if eo, ok := req[t.Topic][p.Partition]; ok {
					k := tp{t.Topic, p.Partition}
					s.committed[k] = eo.Offset
					s.groupAt[k] = eo.Offset
					delete(s.sent, k)
				}
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("commit checkpoint %d: %w", id, errors.Join(errs...))
	}
	s.log.Debug("committed", "checkpoint", id, "offsets", req)
	return nil
}

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
