package state

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Savepoints takes, stores and restores the savepoints of jobs on one
// cluster: savepoint records and job state in the state topic, stop
// requests in the control topic, offsets in the groups (kadm). Each call
// is bounded by its ctx and reports what Kafka answered; nothing falls
// back to memory. Create it with OpenSavepoints; it is safe for
// concurrent use; Close releases it.
type Savepoints struct {
	opts []kgo.Opt
	cfg  Config
	cl   *kgo.Client
	adm  *kadm.Client
}

// OpenSavepoints returns a Savepoints for the topics of cfg (defaults
// applied), reaching the brokers with clientOpts (seed brokers, TLS,
// SASL). It does no I/O.
func OpenSavepoints(clientOpts []kgo.Opt, cfg Config) (*Savepoints, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(slices.Clone(clientOpts), kgo.ProducerLinger(0))...)
	if err != nil {
		return nil, err
	}
	return &Savepoints{opts: slices.Clone(clientOpts), cfg: cfg, cl: cl, adm: kadm.NewClient(cl)}, nil
}

// Close releases the client.
func (s *Savepoints) Close() { s.cl.Close() }

// List returns job's savepoints in the state topic, oldest first. A
// record that cannot be read is skipped and reported in the error joined
// to the list.
func (s *Savepoints) List(ctx context.Context, job string) ([]Savepoint, error) {
	recs, err := s.read(ctx, s.cfg.Topic, savepointPrefix(job))
	if err != nil {
		return nil, err
	}
	var out []Savepoint
	var errs []error
	for k, v := range recs {
		sp, err := ParseSavepoint(k, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
			continue
		}
		out = append(out, sp)
	}
	slices.SortFunc(out, func(a, b Savepoint) int { return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID)) })
	return out, errors.Join(errs...)
}

// Get returns job's savepoint id, or an error wrapping
// ErrSavepointNotFound.
func (s *Savepoints) Get(ctx context.Context, job, id string) (Savepoint, error) {
	key := SavepointKey(job, id)
	recs, err := s.read(ctx, s.cfg.Topic, key)
	if err != nil {
		return Savepoint{}, err
	}
	v, ok := recs[key]
	if !ok {
		return Savepoint{}, fmt.Errorf("%w: job %s has no savepoint %q in state topic %s (spillway savepoint list --job %s)", ErrSavepointNotFound, job, id, s.cfg.Topic, job)
	}
	return ParseSavepoint(key, v)
}

// Put writes sp to the state topic, creating the topic if it is missing.
// It refuses an id the job already has.
func (s *Savepoints) Put(ctx context.Context, sp Savepoint) error {
	v, err := sp.Encode(false)
	if err != nil {
		return err
	}
	key := SavepointKey(sp.Job, sp.ID)
	if err := s.ensure(ctx, s.cfg.Topic); err != nil {
		return err
	}
	have, err := s.read(ctx, s.cfg.Topic, key)
	if err != nil {
		return err
	}
	if _, ok := have[key]; ok {
		return fmt.Errorf("job %s already has a savepoint %q", sp.Job, sp.ID)
	}
	return s.write(ctx, s.cfg.Topic, map[string][]byte{key: v})
}

// Delete removes job's savepoint id (a tombstone), or returns an error
// wrapping ErrSavepointNotFound.
func (s *Savepoints) Delete(ctx context.Context, job, id string) error {
	if _, err := s.Get(ctx, job, id); err != nil {
		return err
	}
	return s.write(ctx, s.cfg.Topic, map[string][]byte{SavepointKey(job, id): nil})
}

// Capture takes a savepoint of job: the committed offsets of group, the
// partition counts of their topics and of topics (the job's source
// topics), and the job's state values (SavedStateNames) in the state
// topic. It fails when the group has no committed offset.
func (s *Savepoints) Capture(ctx context.Context, job, group string, topics []string) (Savepoint, error) {
	sp := Savepoint{Version: SavepointVersion, Job: job, Group: group, CreatedAt: time.Now().UTC(), Partitions: map[string]int32{}}
	committed, err := s.adm.FetchOffsets(ctx, group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return Savepoint{}, fmt.Errorf("committed offsets of group %s: %w", group, err)
	}
	committed.Each(func(o kadm.OffsetResponse) {
		if o.At >= 0 {
			sp.Offsets = append(sp.Offsets, SavepointOffset{Topic: o.Topic, Partition: o.Partition, Offset: o.At, Metadata: o.Metadata})
			sp.Partitions[o.Topic] = 0
		}
	})
	if len(sp.Offsets) == 0 {
		return Savepoint{}, fmt.Errorf("group %s has no committed offsets: nothing to save (has the job run?)", group)
	}
	for _, t := range topics {
		sp.Partitions[t] = 0
	}
	counts, err := s.partitions(ctx, slices.Collect(maps.Keys(sp.Partitions)))
	if err != nil {
		return Savepoint{}, err
	}
	for t, n := range counts {
		sp.Partitions[t] = n
	}
	vals, err := s.read(ctx, s.cfg.Topic, Key(job, ""))
	if err != nil {
		return Savepoint{}, err
	}
	for _, name := range SavedStateNames {
		if v, ok := vals[Key(job, name)]; ok {
			if !json.Valid(v) {
				return Savepoint{}, fmt.Errorf("state %s of job %s is not JSON: %q", name, job, v)
			}
			if sp.State == nil {
				sp.State = map[string]json.RawMessage{}
			}
			sp.State[name] = v
		}
	}
	return sp, nil
}

// partitions returns the partition count of each topic; a missing topic
// is an error.
func (s *Savepoints) partitions(ctx context.Context, topics []string) (map[string]int32, error) {
	if len(topics) == 0 {
		return map[string]int32{}, nil
	}
	details, err := s.adm.ListTopics(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", strings.Join(topics, ","), err)
	}
	out := map[string]int32{}
	var errs []error
	for _, t := range topics {
		d, ok := details[t]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("topic %s: %w", t, kerr.UnknownTopicOrPartition))
		case d.Err != nil:
			errs = append(errs, fmt.Errorf("topic %s: %w", t, d.Err))
		default:
			out[t] = int32(len(d.Partitions))
		}
	}
	return out, errors.Join(errs...)
}

// GroupState is who is in a consumer group now.
type GroupState struct {
	State   string   // Empty, Stable, ...; "Dead" or empty when the group does not exist
	Members []string // client id @ host of each member
}

// Empty reports whether no member is in the group.
func (g GroupState) Empty() bool { return len(g.Members) == 0 }

// String is "Stable, 2 members: a@h1, b@h2".
func (g GroupState) String() string {
	return fmt.Sprintf("%s, %d members: %s", cmp.Or(g.State, "Dead"), len(g.Members), strings.Join(g.Members, ", "))
}

// Group describes group, whichever its protocol: classic (DescribeGroups)
// or consumer (KIP-848, DescribeConsumerGroups). A group that does not
// exist is empty.
func (s *Savepoints) Group(ctx context.Context, group string) (GroupState, error) {
	ds, err := s.adm.DescribeGroups(ctx, group)
	if err != nil {
		return GroupState{}, fmt.Errorf("describe group %s: %w", group, err)
	}
	d := ds[group]
	if d.Err == nil && d.ProtocolType != "" && d.ProtocolType != "consumer" {
		return GroupState{}, fmt.Errorf("group %s is a %s group, not a consumer group", group, d.ProtocolType)
	}
	if d.Err == nil {
		g := GroupState{State: d.State}
		for _, m := range d.Members {
			g.Members = append(g.Members, m.ClientID+"@"+strings.TrimPrefix(m.ClientHost, "/"))
		}
		return g, nil
	}
	if !errors.Is(d.Err, kerr.GroupIDNotFound) {
		return GroupState{}, fmt.Errorf("describe group %s: %w", group, d.Err)
	}
	// Not a classic group: a KIP-848 consumer group, or none.
	cs, err := s.adm.DescribeConsumerGroups(ctx, group)
	if err == nil {
		err = cs[group].Err
	}
	if errors.Is(err, kerr.GroupIDNotFound) || errors.Is(err, kerr.UnsupportedVersion) {
		return GroupState{State: "Dead"}, nil
	}
	if err != nil {
		return GroupState{}, fmt.Errorf("describe group %s: %w", group, err)
	}
	c := cs[group]
	g := GroupState{State: c.State}
	for _, m := range c.Members {
		g.Members = append(g.Members, m.ClientID+"@"+strings.TrimPrefix(m.ClientHost, "/"))
	}
	return g, nil
}

// WaitGroupEmpty asks every interval whether group is empty until it is
// (nil) or ctx ends (an error naming who is still in it).
func (s *Savepoints) WaitGroupEmpty(ctx context.Context, group string, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last GroupState
	for {
		g, err := s.Group(ctx, group)
		switch {
		case err == nil && g.Empty():
			return nil
		case err == nil:
			last = g
		case ctx.Err() == nil:
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("group %s did not become empty (%s): %w", group, last, ctx.Err())
		case <-t.C:
		}
	}
}

// RequestStop writes r to the control topic (creating it if missing).
func (s *Savepoints) RequestStop(ctx context.Context, r StopRequest) error {
	r.Version = StopVersion
	if r.RequestedAt.IsZero() {
		r.RequestedAt = time.Now().UTC()
	}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := ParseStopRequest(StopKey(r.Job), v); err != nil {
		return err
	}
	if err := s.ensure(ctx, s.cfg.ControlTopic); err != nil {
		return err
	}
	return s.write(ctx, s.cfg.ControlTopic, map[string][]byte{StopKey(r.Job): v})
}

// ClearStop deletes job's stop request from the control topic.
func (s *Savepoints) ClearStop(ctx context.Context, job string) error {
	return s.write(ctx, s.cfg.ControlTopic, map[string][]byte{StopKey(job): nil})
}

// RestoreOffsets commits sp's offsets for sp.Group (kadm, as an admin:
// only while the group is empty), for the partitions of topics (the job's
// source topics), and deletes the group's commits of their partitions
// that the savepoint has no offset for (added since, or not committed
// then), so that those start as the source is configured. It fails,
// changing nothing, when the group is not empty, a topic is missing, or a
// partition of the savepoint no longer exists. Offsets of topics the job
// no longer reads are not restored (logged).
func (s *Savepoints) RestoreOffsets(ctx context.Context, sp Savepoint, topics []string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g, err := s.Group(ctx, sp.Group)
	if err != nil {
		return err
	}
	if !g.Empty() {
		return fmt.Errorf("group %s is not empty (%s): its offsets can only be restored while no worker runs; stop them first (spillway savepoint create --stop stops them and takes a savepoint)", sp.Group, g)
	}
	counts, err := s.partitions(ctx, topics)
	if err != nil {
		return fmt.Errorf("savepoint %s: %w", sp.ID, err)
	}
	commit := kadm.Offsets{}
	have := map[string]map[int32]bool{}
	var missing, skipped []string
	for _, o := range sp.Offsets {
		n, ok := counts[o.Topic]
		switch {
		case !ok:
			skipped = append(skipped, fmt.Sprintf("%s/%d", o.Topic, o.Partition))
			continue
		case o.Partition >= n:
			missing = append(missing, fmt.Sprintf("%s/%d (the topic has %d partitions now)", o.Topic, o.Partition, n))
			continue
		}
		commit.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: o.Offset, LeaderEpoch: -1, Metadata: o.Metadata})
		if have[o.Topic] == nil {
			have[o.Topic] = map[int32]bool{}
		}
		have[o.Topic][o.Partition] = true
	}
	if len(missing) > 0 {
		return fmt.Errorf("savepoint %s: the topics' partitions changed: %s no longer exist (was a topic deleted and created again?); nothing restored",
			sp.ID, strings.Join(missing, ", "))
	}
	if len(skipped) > 0 {
		log.Warn("savepoint offsets of topics the job no longer reads are not restored", "savepoint", sp.ID, "partitions", strings.Join(skipped, " "))
	}
	// Partitions without an offset in the savepoint start as configured.
	reset := kadm.TopicsSet{}
	for _, t := range slices.Sorted(maps.Keys(counts)) {
		var added, uncommitted []int32
		for p := range counts[t] {
			if have[t][p] {
				continue
			}
			reset.Add(t, p)
			if n, ok := sp.Partitions[t]; !ok || p >= n {
				added = append(added, p)
			} else {
				uncommitted = append(uncommitted, p)
			}
		}
		if len(added) > 0 {
			log.Info("partitions added since the savepoint start as the source is configured (start_offset)", "savepoint", sp.ID, "topic", t, "partitions", fmt.Sprint(added))
		}
		if len(uncommitted) > 0 {
			log.Info("partitions the group had not committed at the savepoint start as the source is configured (start_offset)", "savepoint", sp.ID, "topic", t, "partitions", fmt.Sprint(uncommitted))
		}
	}
	if len(reset) > 0 {
		current, err := s.adm.FetchOffsets(ctx, sp.Group)
		if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			return fmt.Errorf("committed offsets of group %s: %w", sp.Group, err)
		}
		del := kadm.TopicsSet{}
		current.Each(func(o kadm.OffsetResponse) {
			if o.Err == nil && o.At >= 0 && reset.Lookup(o.Topic, o.Partition) {
				del.Add(o.Topic, o.Partition)
			}
		})
		if len(del) > 0 {
			resp, err := s.adm.DeleteOffsets(ctx, sp.Group, del)
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				return fmt.Errorf("delete the commits of group %s for partitions not in savepoint %s: %w", sp.Group, sp.ID, err)
			}
		}
	}
	if len(commit) == 0 {
		return nil
	}
	resp, err := s.adm.CommitOffsets(ctx, sp.Group, commit)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		if errors.Is(err, kerr.UnknownMemberID) || errors.Is(err, kerr.IllegalGeneration) || errors.Is(err, kerr.RebalanceInProgress) {
			return fmt.Errorf("commit savepoint %s for group %s: a worker joined the group meanwhile: %w", sp.ID, sp.Group, err)
		}
		return fmt.Errorf("commit savepoint %s for group %s: %w", sp.ID, sp.Group, err)
	}
	return nil
}

// RestoreState writes sp's state values back to the state topic: each of
// SavedStateNames the savepoint has, and a deletion for each it has not.
// The live limit goes back to the control topic too, where workers read it
// first: the savepoint's, or a clear when it had none and the control
// topic holds a limit.
func (s *Savepoints) RestoreState(ctx context.Context, sp Savepoint) error {
	vals := map[string][]byte{}
	for _, name := range SavedStateNames {
		if v, ok := sp.State[name]; ok {
			vals[Key(sp.Job, name)] = v
		} else {
			vals[Key(sp.Job, name)] = nil
		}
	}
	var limit []byte
	if v, ok := sp.State["limits"]; ok {
		if _, err := ParseLimitChange(sp.Job, v); err != nil {
			return fmt.Errorf("savepoint %s: state.limits: %w", sp.ID, err)
		}
		limit = v
	} else {
		cur, err := s.read(ctx, s.cfg.ControlTopic, sp.Job)
		if err != nil {
			return err
		}
		if v, ok := cur[sp.Job]; ok {
			if c, err := ParseLimitChange(sp.Job, v); err != nil || !c.Clear {
				limit, _ = json.Marshal(LimitChange{Version: LimitVersion, Job: sp.Job, Clear: true, SetAt: time.Now().UTC()})
			}
		}
	}
	for _, t := range []string{s.cfg.Topic, s.cfg.ControlTopic} {
		if err := s.ensure(ctx, t); err != nil {
			return err
		}
	}
	if err := s.write(ctx, s.cfg.Topic, vals); err != nil {
		return err
	}
	if limit != nil {
		return s.write(ctx, s.cfg.ControlTopic, map[string][]byte{sp.Job: limit})
	}
	return nil
}

// ensure creates topic, compacted, unless it exists.
func (s *Savepoints) ensure(ctx context.Context, topic string) error {
	compact := "compact"
	resp, err := s.adm.CreateTopic(ctx, int32(s.cfg.Partitions), int16(s.cfg.ReplicationFactor), map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// write produces records (a nil value is a tombstone) and waits for the
// brokers' acknowledgement.
func (s *Savepoints) write(ctx context.Context, topic string, recs map[string][]byte) error {
	var rs []*kgo.Record
	for _, k := range slices.Sorted(maps.Keys(recs)) {
		rs = append(rs, &kgo.Record{Topic: topic, Key: []byte(k), Value: recs[k]})
	}
	if err := s.cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return fmt.Errorf("write to topic %s: %w", topic, err)
	}
	return nil
}

// read is Read with the Savepoints' client options; a topic that does not
// exist holds nothing.
func (s *Savepoints) read(ctx context.Context, topic, prefix string) (map[string][]byte, error) {
	out, err := Read(ctx, s.opts, topic, prefix)
	if errors.Is(err, ErrNoTopic) {
		return map[string][]byte{}, nil
	}
	return out, err
}
