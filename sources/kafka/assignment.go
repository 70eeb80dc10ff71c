package kafka

import (
	"context"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"
)

// OnAssignmentChange makes the source call fn with its client and the
// partitions this worker owns after every assignment, revocation (once the
// revoked partitions are drained and committed) and loss, from the group's
// callback goroutine, which waits for it: fn must not block for long. The
// job uses it to split a group-scoped limit by the partitions each worker
// owns. Call it before Run.
func (s *Source) OnAssignmentChange(fn func(cl *kgo.Client, owned map[string][]int32)) {
	s.onAssign = fn
}

// Owned returns the partitions this worker owns now, sorted by partition.
func (s *Source) Owned() map[string][]int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]int32{}
	for k := range maps.Keys(s.parts) {
		out[k.topic] = append(out[k.topic], k.partition)
	}
	for _, ps := range out {
		slices.Sort(ps)
	}
	return out
}

// notifying wraps a group callback so that OnAssignmentChange's function
// hears of the change after it.
func (s *Source) notifying(f func(context.Context, *kgo.Client, map[string][]int32)) func(context.Context, *kgo.Client, map[string][]int32) {
	return func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
		f(ctx, cl, m)
		if s.onAssign != nil {
			s.onAssign(cl, s.Owned())
		}
	}
}
