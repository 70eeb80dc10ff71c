package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/sources/kafka"
	"github.com/spillway-io/spillway/state"
)

// groupStatus is what `spillway status` reports about a pipeline's
// consumer group, read from Kafka (kadm): the group coordinator knows its
// members and what each was assigned, the committed offsets and the end
// offsets give the lag. Limits, shares and breakers live in the workers.
type groupStatus struct {
	Job        string            `json:"job"`
	Group      string            `json:"group"`
	State      string            `json:"state"`
	Protocol   string            `json:"protocol"`
	Members    []memberStatus    `json:"members"`
	Partitions []partitionStatus `json:"partitions"`
	TotalLag   int64             `json:"total_lag"`
	// Workers are the Member records the job's workers publish in the
	// state topic: their limits, shares, breakers and state modes.
	Workers []workerStatus `json:"workers"`
	// GroupLimits sums the limits of the live workers, per kind and unit,
	// when they are the group's (scope group).
	GroupLimits []state.Limit `json:"group_limits,omitempty"`
	// WorkersNote says why there are no worker records, or what was
	// wrong with some.
	WorkersNote string `json:"workers_note,omitempty"`
}

// workerStatus is a worker's Member record and how old it is.
type workerStatus struct {
	state.Member
	// Stale is set when the record was not refreshed for three refresh
	// periods: a worker that ended without leaving (killed).
	Stale bool `json:"stale"`
}

type memberStatus struct {
	ID         string   `json:"id"`
	InstanceID string   `json:"instance_id,omitempty"`
	ClientID   string   `json:"client_id"`
	Host       string   `json:"host"`
	Partitions []string `json:"partitions"` // topic/partition
}

type partitionStatus struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Member    string `json:"member,omitempty"`
	Committed int64  `json:"committed"` // -1: none
	End       int64  `json:"end"`
	Lag       int64  `json:"lag"` // -1: unknown (see error)
	Error     string `json:"error,omitempty"`
}

// cmdStatus prints the consumer group of a pipeline file: its members and
// what each owns, and per partition the committed offset, the end offset
// and the lag.
func (s *session) cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "pipeline `file` (its brokers, kafka settings and source group)")
	group := fs.String("group", "", "consumer group (default: the pipeline's source.kafka.group)")
	jobName := fs.String("job", "", "job whose worker records to show (default: the pipeline's name)")
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the brokers")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := s.loadConfig(*path)
	if err != nil {
		return err
	}
	src, ok := cfg.Source.Config.(*kafka.Config)
	if !ok && *group == "" {
		return usagef("%s: the source is %s, not kafka: give --group", *path, cfg.Source.Kind)
	}
	if *group == "" {
		*group = src.Group
	}
	if cfg.Brokers.Embedded() {
		return usagef("%s: brokers: embedded is private to the process that runs it; status needs a shared broker", *path)
	}
	opts, err := cfg.Kafka.Opts(cfg.Brokers)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var st groupStatus
	for {
		if ok && src.GroupProtocol == kafka.GroupProtocolConsumer && *group == src.Group {
			st, err = readConsumerGroupStatus(ctx, kadm.NewClient(cl), *group)
			if err != nil {
				err = fmt.Errorf("status of group %s: %w", *group, err)
			}
		} else {
			st, err = readGroupStatus(ctx, kadm.NewClient(cl), *group)
		}
		// A coordinator still loading (a broker just started) answers
		// with a retriable error: ask again until the timeout.
		if err == nil || !kerr.IsRetriable(err) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err != nil {
		return err
	}
	st.Job = cmp.Or(*jobName, cfg.Name)
	sc := cfg.State
	sc.ApplyDefaults()
	readWorkers(ctx, &st, opts, sc.Topic, time.Now())
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printGroupStatus(stdout, st)
	return nil
}

func readGroupStatus(ctx context.Context, adm *kadm.Client, group string) (groupStatus, error) {
	lags, err := adm.Lag(ctx, group)
	if err != nil {
		return groupStatus{}, fmt.Errorf("status of group %s: %w", group, err)
	}
	l, ok := lags[group]
	if !ok {
		return groupStatus{}, fmt.Errorf("status of group %s: no answer", group)
	}
	if err := l.Error(); err != nil {
		if errors.Is(err, kerr.GroupIDNotFound) {
			// A group of the consumer protocol (KIP-848, group_protocol:
			// consumer) is not a classic group: DescribeGroups does not
			// know it.
			if st, cerr := readConsumerGroupStatus(ctx, adm, group); cerr == nil {
				return st, nil
			}
		}
		return groupStatus{}, fmt.Errorf("status of group %s: %w", group, err)
	}
	st := groupStatus{Group: group, State: l.State, Protocol: l.Protocol, TotalLag: l.Lag.Total()}
	owner := map[string]string{} // "topic/partition" → member
	for _, m := range l.Members {
		ms := memberStatus{ID: m.MemberID, ClientID: m.ClientID, Host: m.ClientHost}
		if m.InstanceID != nil {
			ms.InstanceID = *m.InstanceID
		}
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				for _, p := range t.Partitions {
					tp := fmt.Sprintf("%s/%d", t.Topic, p)
					ms.Partitions = append(ms.Partitions, tp)
					owner[tp] = memberName(ms)
				}
			}
		}
		slices.Sort(ms.Partitions)
		st.Members = append(st.Members, ms)
	}
	for _, ml := range l.Lag.Sorted() {
		ps := partitionStatus{Topic: ml.Topic, Partition: ml.Partition, Committed: ml.Commit.At, End: ml.End.Offset, Lag: ml.Lag,
			Member: owner[fmt.Sprintf("%s/%d", ml.Topic, ml.Partition)]}
		if ml.Err != nil && !errors.Is(ml.Err, context.Canceled) {
			ps.Error = ml.Err.Error()
		}
		st.Partitions = append(st.Partitions, ps)
	}
	return st, nil
}

// readConsumerGroupStatus is readGroupStatus for a group of the consumer
// protocol (KIP-848): ConsumerGroupDescribe for the members and their
// assignments, the group's commits and the end offsets for the lag
// (kadm's Lag describes classic groups only).
func readConsumerGroupStatus(ctx context.Context, adm *kadm.Client, group string) (groupStatus, error) {
	described, err := adm.DescribeConsumerGroups(ctx, group)
	if err == nil {
		err = described.Error()
	}
	if err != nil {
		return groupStatus{}, err
	}
	d, ok := described[group]
	if !ok {
		return groupStatus{}, kerr.GroupIDNotFound
	}
	commits, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = commits.Error()
	}
	if err != nil {
		return groupStatus{}, err
	}
	st := groupStatus{Group: group, State: d.State, Protocol: "consumer (KIP-848)"}
	owner := map[string]string{}
	topics := map[string]bool{}
	for _, m := range d.Members {
		ms := memberStatus{ID: m.MemberID, ClientID: m.ClientID, Host: m.ClientHost}
		if m.InstanceID != nil {
			ms.InstanceID = *m.InstanceID
		}
		for t, ps := range m.Assignment {
			topics[t] = true
			for p := range ps {
				tp := fmt.Sprintf("%s/%d", t, p)
				ms.Partitions = append(ms.Partitions, tp)
				owner[tp] = memberName(ms)
			}
		}
		slices.Sort(ms.Partitions)
		st.Members = append(st.Members, ms)
	}
	commits.Each(func(o kadm.OffsetResponse) { topics[o.Topic] = true })
	if len(topics) == 0 {
		return st, nil
	}
	ends, err := adm.ListEndOffsets(ctx, slices.Sorted(maps.Keys(topics))...)
	if err != nil {
		return groupStatus{}, err
	}
	var listed []kadm.ListedOffset
	ends.Each(func(o kadm.ListedOffset) { listed = append(listed, o) })
	slices.SortFunc(listed, func(a, b kadm.ListedOffset) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	for _, e := range listed {
		ps := partitionStatus{Topic: e.Topic, Partition: e.Partition, Committed: -1, End: e.Offset, Lag: -1,
			Member: owner[fmt.Sprintf("%s/%d", e.Topic, e.Partition)]}
		if c, ok := commits.Lookup(e.Topic, e.Partition); ok {
			ps.Committed = c.At
		}
		switch {
		case e.Err != nil:
			ps.Error = e.Err.Error()
		case ps.Committed >= 0:
			ps.Lag = max(e.Offset-ps.Committed, 0)
		default:
			ps.Lag = e.Offset // nothing committed: all of it, from the start
		}
		if ps.Lag > 0 {
			st.TotalLag += ps.Lag
		}
		st.Partitions = append(st.Partitions, ps)
	}
	return st, nil
}

// readWorkers adds the Member records of st.Job's workers, read from the
// state topic, and the group's limits they add up to.
func readWorkers(ctx context.Context, st *groupStatus, opts []kgo.Opt, topic string, now time.Time) {
	snap, err := state.Read(ctx, opts, topic, state.Key(st.Job, state.MembersPrefix))
	switch {
	case errors.Is(err, state.ErrNoTopic):
		st.WorkersNote = fmt.Sprintf("no worker records: the state topic %s does not exist (state.kind memory, or no worker ran yet)", topic)
		return
	case err != nil:
		st.WorkersNote = fmt.Sprintf("worker records not read from %s: %v", topic, err)
		return
	}
	members, bad := state.ParseMembers(st.Job, snap)
	if len(bad) > 0 {
		slices.Sort(bad)
		st.WorkersNote = "unreadable worker records: " + strings.Join(bad, ", ")
	}
	slices.SortFunc(members, func(a, b state.Member) int { return strings.Compare(a.Worker, b.Worker) })
	type unitKey struct{ kind, unit string }
	sums := map[unitKey]float64{}
	var order []unitKey
	for _, m := range members {
		w := workerStatus{Member: m, Stale: now.Sub(m.UpdatedAt) > 3*state.MemberRefresh}
		st.Workers = append(st.Workers, w)
		if w.Stale || m.Scope != "group" {
			continue
		}
		for _, l := range m.Limits {
			k := unitKey{l.Kind, l.Unit}
			if _, seen := sums[k]; !seen {
				order = append(order, k)
			}
			sums[k] += l.Value
		}
	}
	for _, k := range order {
		st.GroupLimits = append(st.GroupLimits, state.Limit{Kind: k.kind, Unit: k.unit, Value: sums[k]})
	}
}

// memberName is how a member is shown: its instance id (static
// membership) or client id and host.
func memberName(m memberStatus) string {
	if m.InstanceID != "" {
		return m.InstanceID
	}
	return m.ClientID + "@" + strings.TrimPrefix(m.Host, "/")
}

func printGroupStatus(w io.Writer, st groupStatus) {
	fmt.Fprintf(w, "group %s: %s, %d members, protocol %s, total lag %d\n", st.Group, st.State, len(st.Members), cmp.Or(st.Protocol, "-"), st.TotalLag)
	for _, m := range st.Members {
		fmt.Fprintf(w, "  member %s (%s): %d partitions %s\n", memberName(m), m.ID, len(m.Partitions), strings.Join(m.Partitions, " "))
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "topic\tpartition\tcommitted\tend\tlag\towner\t")
	for _, p := range st.Partitions {
		lag := fmt.Sprint(p.Lag)
		if p.Lag < 0 {
			lag = "? " + p.Error
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t\n", p.Topic, p.Partition, p.Committed, p.End, lag, cmp.Or(p.Member, "-"))
	}
	tw.Flush()
	printWorkers(w, st, time.Now())
}

// printWorkers prints the workers' records: one line each, then the
// group's limits.
func printWorkers(w io.Writer, st groupStatus, now time.Time) {
	fmt.Fprintf(w, "job %s: %d worker records\n", st.Job, len(st.Workers))
	if st.WorkersNote != "" {
		fmt.Fprintf(w, "  %s\n", st.WorkersNote)
	}
	for _, ws := range st.Workers {
		n := 0
		for _, ps := range ws.Partitions {
			n += len(ps)
		}
		var limits []string
		for _, l := range ws.Limits {
			limits = append(limits, l.String())
		}
		line := fmt.Sprintf("  worker %s: %d partitions, limit %s", ws.Worker, n, cmp.Or(strings.Join(limits, ", "), ws.Strategy))
		if ws.Scope == "group" {
			line += fmt.Sprintf(" = share %.3f of the group's", ws.Share)
		}
		if ws.LiveLimit != nil {
			line += ", live limit " + ws.LiveLimit.String()
		}
		line += fmt.Sprintf(", breaker %s, state %s, updated %s ago", ws.Breaker, ws.State, now.Sub(ws.UpdatedAt).Round(time.Second))
		if ws.Stale {
			line += " (stale: the worker ended without leaving?)"
		}
		fmt.Fprintln(w, line)
	}
	for _, l := range st.GroupLimits {
		fmt.Fprintf(w, "  group limit: %s in all\n", l)
	}
}
