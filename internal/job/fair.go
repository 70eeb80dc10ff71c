package job

import (
	"time"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/state"
)

// load is one worker's part in the fair shares of a group-scoped adaptive
// strategy: its share of the group's partitions and its load
// (backpressure.Fair).
type load struct {
	share     float64
	rate      float64
	wantsMore bool
}

// fairShare returns self's fair share of the rates the group holds now,
// by max-min fairness weighted by share: the workers that want no more
// keep what they hold, and the rest is split among those that want more
// in proportion to their shares. It returns 0 (no opinion) unless a worker
// that wants more (this one or another) holds clearly less than its fair
// share (below starvedBelow of it): only then must the others make room,
// and a cap on growth would otherwise slow the search for capacity.
func fairShare(self load, others []load) float64 {
	if !self.wantsMore || len(others) == 0 {
		return 0
	}
	total, kept, weights := self.rate, 0.0, self.share
	for _, o := range others {
		total += o.rate
		if o.wantsMore {
			weights += o.share
		} else {
			kept += o.rate
		}
	}
	if weights <= 0 || total <= 0 {
		return 0
	}
	room := max(total-kept, 0)
	starved := self.rate < starvedBelow*room*self.share/weights
	for _, o := range others {
		if o.wantsMore && o.rate < starvedBelow*room*o.share/weights {
			starved = true
		}
	}
	if !starved {
		return 0
	}
	return room * self.share / weights
}

// starvedBelow is the part of its fair share below which a worker is
// held back by the others.
const starvedBelow = 0.8

// memberFresh is how old another worker's record may be to count in the
// fair shares: a worker that delivers changes its record every write
// interval.
const memberFresh = 3 * time.Second

// applyFair sets a group-scoped Fair strategy's fair share from the other
// workers' records in the store.
func (js *jobState) applyFair(f backpressure.Fair, sh backpressure.Shared, now time.Time) {
	rate, wants := f.Load()
	self := load{share: sh.Share(), rate: rate, wantsMore: wants}
	snap := js.store.Snapshot(state.Key(js.job, state.MembersPrefix))
	delete(snap, js.member.key)
	members, _ := state.ParseMembers(js.job, snap)
	var others []load
	for _, m := range members {
		if now.Sub(m.UpdatedAt) > memberFresh || m.Scope != string(backpressure.ScopeGroup) {
			continue
		}
		others = append(others, load{share: m.Share, rate: m.Load, wantsMore: m.WantsMore})
	}
	fair := fairShare(self, others)
	f.SetFair(fair)
	js.log.Debug("fair share", "fair", fair, "rate", rate, "wants_more", wants, "share", self.share, "others", others)
}

// fairStrategy returns s as a group-scoped Fair strategy.
func fairStrategy(s backpressure.Strategy) (backpressure.Fair, backpressure.Shared, bool) {
	f, ok := s.(backpressure.Fair)
	sh, ok2 := s.(backpressure.Shared)
	if !ok || !ok2 || !sh.GroupScoped() {
		return nil, nil, false
	}
	return f, sh, true
}
