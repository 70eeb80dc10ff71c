package job

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/backpressure"
)

// assignmentSource tells who owns which partitions (the Kafka source).
type assignmentSource interface {
	OnAssignmentChange(fn func(cl *kgo.Client, owned map[string][]int32))
	Owned() map[string][]int32
}

// groupShare splits a group-scoped limit (scope: group) among the workers
// of the consumer group: each applies the fraction of the source topics'
// partitions it owns, recomputed on every assignment, revocation and loss.
// The group's assignment is the only coordination: the shares of the
// members add up to at most 1 at every moment, since a partition moves
// only after its old owner revoked it (and lowered its share).
type groupShare struct {
	strat  backpressure.Shared
	topics []string
	log    *slog.Logger

	mu    sync.Mutex
	total map[string]int32 // partitions per topic, as last listed
	owned int
	all   int
}

// shareTimeout bounds the metadata request of an assignment change; the
// group callback waits for it, so a share is set before fetching starts.
const shareTimeout = 5 * time.Second

func newGroupShare(strat backpressure.Shared, topics []string, log *slog.Logger) *groupShare {
	return &groupShare{strat: strat, topics: topics, log: log, total: map[string]int32{}}
}

// changed is the source's OnAssignmentChange function.
func (g *groupShare) changed(cl *kgo.Client, owned map[string][]int32) {
	ctx, cancel := context.WithTimeout(context.Background(), shareTimeout)
	defer cancel()
	g.mu.Lock()
	defer g.mu.Unlock()
	if details, err := kadm.NewClient(cl).ListTopics(ctx, g.topics...); err != nil {
		g.log.Warn("group share: partition counts not listed; the share stays as it was", "err", err)
	} else {
		for t, d := range details {
			if d.Err == nil {
				g.total[t] = int32(len(d.Partitions))
			}
		}
	}
	n, all := 0, 0
	for _, t := range g.topics {
		n += len(owned[t])
		all += int(g.total[t])
	}
	if n == 0 || all == 0 {
		// Nothing owned: nothing to send but what a revoked partition
		// left, which the last share still paces.
		g.owned, g.all = 0, all
		return
	}
	share := min(float64(n)/float64(all), 1)
	if err := g.strat.SetShare(share); err != nil {
		g.log.Warn("group share not applied", "err", err)
		return
	}
	if g.owned != n || g.all != all {
		g.log.Info("rate limit share of the group", "partitions", n, "of", all, "share", fmt.Sprintf("%.3f", share))
	}
	g.owned, g.all = n, all
}
