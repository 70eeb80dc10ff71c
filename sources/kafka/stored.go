package kafka

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// StoredOffsets reads, for one topic, the last offset per partition a
// destination wrote in the same transaction as the records (an
// effectively-once sink: the database is the source of truth, as in Kafka
// Connect's exactly-once sinks).
type StoredOffsets func(ctx context.Context, topic string) (map[int32]int64, error)

// UseStoredOffsets makes every assignment start each partition after what
// the destination stored, when that is ahead of the group's commit: the
// group's commit is then only advisory. Call it before Run. Without it a
// partition starts at the group's commit; a sink that skips what it
// already stored loses nothing either way, the seek only saves reading it
// again.
func (s *Source) UseStoredOffsets(fn StoredOffsets) { s.stored = fn }

// storedTimeout bounds the destination's answer at an assignment.
const storedTimeout = 10 * time.Second

// storedFor asks the destination for the topics of an assignment, outside
// s.mu. A failure is logged and the group's commit stands.
func (s *Source) storedFor(ctx context.Context, offsets map[string]map[int32]kgo.Offset) map[tp]int64 {
	if s.stored == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, storedTimeout)
	defer cancel()
	out := map[tp]int64{}
	for _, t := range slices.Sorted(maps.Keys(offsets)) {
		got, err := s.stored(ctx, t)
		if err != nil {
			s.log.Warn("the destination's stored offsets could not be read; starting from the group's commit (the sink skips what it already wrote)",
				"topic", t, "err", err)
			continue
		}
		for p, o := range got {
			out[tp{t, p}] = o
		}
	}
	return out
}
