package state

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// MembersPrefix is, after "<job>/", the prefix of the keys under which
// each worker of a job publishes a Member record.
const MembersPrefix = "members/"

// MemberKey returns the key of worker's Member record for job.
func MemberKey(job, worker string) string { return Key(job, MembersPrefix+worker) }

// Member is what a worker publishes about itself in the state topic, for
// spillway status: what it owns, the limits it applies and the state of
// its sink. It writes it when something changes and at least every
// MemberRefresh, and deletes it when it stops; a record not refreshed for
// longer is a worker that ended without saying so (killed).
type Member struct {
	Version int    `json:"version"`
	Worker  string `json:"worker"` // instance_id, or host-pid
	// Partitions are the partitions the worker owns, by topic.
	Partitions map[string][]int32 `json:"partitions"`
	// Strategy is the rate_limit kind; Limits its current limits.
	Strategy string  `json:"strategy"`
	Limits   []Limit `json:"limits,omitempty"`
	// Scope is "group" when the limits are the group's, split by Share:
	// the fraction of the group's partitions this worker owns.
	Scope     string       `json:"scope"`
	Share     float64      `json:"share,omitempty"`
	LiveLimit *LimitChange `json:"live_limit,omitempty"`
	// Load and WantsMore are a group-scoped adaptive strategy's load
	// (backpressure.Fair): the rate it holds, in units per second, and
	// whether it waited for it; the workers' loads give each its fair
	// share.
	Load      float64   `json:"load,omitempty"`
	WantsMore bool      `json:"wants_more,omitempty"`
	Breaker   string    `json:"breaker"`
	State     Status    `json:"state"` // where the worker keeps its state
	UpdatedAt time.Time `json:"updated_at"`
}

// Limit is one current limit of a worker's strategy: a rate in Unit per
// second (records, bytes), or records in flight (Unit "in_flight", AIMD).
type Limit struct {
	Kind  string  `json:"kind"`
	Unit  string  `json:"unit"`
	Value float64 `json:"value"`
}

// String is "12,000 records/s (token_bucket)" or "800 in flight (aimd)";
// 0 is "unlimited".
func (l Limit) String() string {
	v := "unlimited"
	if l.Value > 0 {
		v = fmt.Sprintf("%.0f", l.Value)
	}
	if l.Unit == "in_flight" {
		return fmt.Sprintf("%s in flight (%s)", v, l.Kind)
	}
	if l.Value == 0 {
		return fmt.Sprintf("%s (%s)", v, l.Kind)
	}
	return fmt.Sprintf("%s %s/s (%s)", v, l.Unit, l.Kind)
}

// MemberRefresh is how often a worker writes its Member record when
// nothing changed.
const MemberRefresh = 10 * time.Second

// memberVersion is the version of Member records.
const memberVersion = 1

// NewMember returns a Member of the current version.
func NewMember(worker string) Member { return Member{Version: memberVersion, Worker: worker} }

// ParseMembers decodes the Member records of a snapshot of "<job>/members/"
// keys; a record it cannot read is reported by its key.
func ParseMembers(job string, snap map[string][]byte) (members []Member, bad []string) {
	prefix := Key(job, MembersPrefix)
	for k, v := range snap {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		var m Member
		if err := json.Unmarshal(v, &m); err != nil || m.Version != memberVersion {
			bad = append(bad, k)
			continue
		}
		members = append(members, m)
	}
	return members, bad
}

// Same reports whether m and o say the same, whenever written.
func (m Member) Same(o Member) bool {
	m.UpdatedAt, o.UpdatedAt = time.Time{}, time.Time{}
	a, _ := json.Marshal(m)
	b, _ := json.Marshal(o)
	return string(a) == string(b)
}
