// Package kafka is the Kafka consumer-group source. It tracks every record it
// emits per partition and commits only offsets below which every record is
// done (acknowledged, dead-lettered or dropped on purpose): on an interval,
// when a partition is revoked (after draining it, time-boxed) and on close.
package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/spillway-io/spillway/checkpoint"
	"github.com/spillway-io/spillway/pipeline"
)

// Config configures the source. Zero values mean the default on each field.
type Config struct {
	Brokers            []string      // required
	Topics             []string      // required
	Group              string        // required
	StartOffset        string        // "earliest" (default) or "latest": where a group without a commit starts
	CheckpointInterval time.Duration // commit period; default 5s
	RevokeTimeout      time.Duration // drain bound for a revoked partition; default 10s
	ConnectTimeout     time.Duration // how long Run waits for the brokers to answer at start; default 10s
	SessionTimeout     time.Duration // group session timeout; default 45s (franz-go's)
	InstanceID         string        // static membership id; empty for dynamic membership
	MaxPollRecords     int           // records handed to the pipeline per poll; default 20000
	ClientID           string        // default "spillway"
	// FetchMaxBytes and FetchMaxPartitionBytes bound one fetch response and
	// one partition's share of it (franz-go's defaults: 50 MiB and 1 MiB).
	// Set them below the sink's byte budget so a fetch issued just before
	// the source pauses overshoots the budget by at most one fetch.
	FetchMaxBytes          int32
	FetchMaxPartitionBytes int32
	// ResumeAt is the fraction of the sink's budget that must be free again
	// before a paused source resumes fetching (the low watermark of buffered
	// data is 1-ResumeAt); default 0.5.
	ResumeAt float64
	// Opts are extra franz-go options (TLS, SASL), applied last.
	Opts []kgo.Opt
}

func (c *Config) setDefaults() {
	if c.StartOffset == "" {
		c.StartOffset = "earliest"
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 5 * time.Second
	}
	if c.RevokeTimeout == 0 {
		c.RevokeTimeout = 10 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = 20000
	}
	if c.ClientID == "" {
		c.ClientID = "spillway"
	}
	if c.ResumeAt == 0 {
		c.ResumeAt = 0.5
	}
}

// Validate reports invalid settings by their config keys.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: at least one broker address is required"))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("topics: at least one topic is required"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("group: a consumer group is required"))
	}
	if c.StartOffset != "earliest" && c.StartOffset != "latest" {
		errs = append(errs, fmt.Errorf("start_offset: must be earliest or latest, got %q", c.StartOffset))
	}
	for name, d := range map[string]time.Duration{
		"checkpoint_interval": c.CheckpointInterval, "revoke_timeout": c.RevokeTimeout, "connect_timeout": c.ConnectTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %v", name, d))
		}
	}
	if c.ResumeAt <= 0 || c.ResumeAt > 1 {
		errs = append(errs, fmt.Errorf("resume_at: must be in (0, 1], got %v", c.ResumeAt))
	}
	if c.FetchMaxBytes < 0 || c.FetchMaxPartitionBytes < 0 {
		errs = append(errs, errors.New("fetch_max_bytes, fetch_max_partition_bytes: must not be negative"))
	}
	if c.MaxPollRecords <= 0 {
		errs = append(errs, fmt.Errorf("max_poll_records: must be positive, got %d", c.MaxPollRecords))
	}
	return errors.Join(errs...)
}

type tp struct {
	topic     string
	partition int32
}

// Source is a consumer-group member feeding a pipeline. Create it with New;
// Run and Close are each called once, Run first.
type Source struct {
	cfg Config
	cl  *kgo.Client
	log *slog.Logger

	mu        sync.Mutex
	parts     map[tp]*checkpoint.Partition
	committed map[tp]int64
	closing   bool

	connected atomic.Bool // the brokers answered Run's first request

	credit   pipeline.Credit
	task     *pipeline.TaskTimer
	pauses   atomic.Int64
	pausedNs atomic.Int64
	cuts     atomic.Int64         // polls cut short to fit the sink's free bytes
	abandon  pipeline.Abandonment // moves when partitions are revoked or lost

	commitMu     sync.Mutex // serialises commits
	checkpointID atomic.Int64
	commitLoop   sync.WaitGroup
	stopCommits  chan struct{}
	stopOnce     sync.Once
}

// Abandonment implements pipeline.Abandoning: it moves whenever this
// source revokes or loses partitions.
func (s *Source) Abandonment() *pipeline.Abandonment { return &s.abandon }

// Option configures a Source.
type Option func(*Source)

// WithLogger sets the logger; nil means slog.Default().
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.log = l } }

// New validates cfg and builds the client. It does no network I/O.
func New(cfg Config, opts ...Option) (*Source, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka source: %w", err)
	}
	s := &Source{
		cfg:         cfg,
		parts:       map[tp]*checkpoint.Partition{},
		committed:   map[tp]int64{},
		stopCommits: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	reset := kgo.NewOffset().AtStart()
	if cfg.StartOffset == "latest" {
		reset = kgo.NewOffset().AtEnd()
	}
	kopts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.ConsumeResetOffset(reset),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(s.assigned),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.lost),
	}
	if cfg.FetchMaxBytes > 0 {
		kopts = append(kopts, kgo.FetchMaxBytes(cfg.FetchMaxBytes))
	}
	if cfg.FetchMaxPartitionBytes > 0 {
		kopts = append(kopts, kgo.FetchMaxPartitionBytes(cfg.FetchMaxPartitionBytes))
	}
	if cfg.SessionTimeout > 0 {
		kopts = append(kopts, kgo.SessionTimeout(cfg.SessionTimeout))
	}
	if cfg.InstanceID != "" {
		kopts = append(kopts, kgo.InstanceID(cfg.InstanceID))
	}
	kopts = append(kopts, cfg.Opts...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka source: %w", err)
	}
	s.cl = cl
	return s, nil
}

func (s *Source) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, ps := range assigned {
		for _, p := range ps {
			s.parts[tp{t, p}] = checkpoint.NewPartition(-1)
		}
	}
	s.log.Info("partitions assigned", "partitions", fmtParts(assigned))
}

// revoked drains the revoked partitions (bounded by RevokeTimeout), commits
// what is done and forgets them. Acks arriving later are ignored by the
// revoked trackers, so a late ack can never be committed by this worker.
func (s *Source) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	s.mu.Lock()
	trackers := map[tp]*checkpoint.Partition{}
	for t, ps := range revoked {
		for _, p := range ps {
			if tr := s.parts[tp{t, p}]; tr != nil {
				trackers[tp{t, p}] = tr
			}
		}
	}
	closing := s.closing
	s.mu.Unlock()
	if len(trackers) == 0 {
		return
	}
	if !closing {
		deadline := time.NewTimer(s.cfg.RevokeTimeout)
		defer deadline.Stop()
	drain:
		for k, tr := range trackers {
			select {
			case <-tr.Idle():
			case <-deadline.C:
				s.log.Warn("revoke drain timed out; undelivered records will be re-delivered to the new owner",
					"topic", k.topic, "partition", k.partition, "pending", tr.Pending())
				break drain
			case <-ctx.Done():
				break drain
			}
		}
	}
	offsets := map[tp]int64{}
	s.mu.Lock()
	for k, tr := range trackers {
		if off, ok := tr.Revoke(); ok {
			offsets[k] = off
		}
		delete(s.parts, k)
	}
	s.mu.Unlock()
	s.abandon.Add()
	if err := s.commitOffsets(ctx, offsets); err != nil {
		s.log.Warn("commit on revoke failed", "err", err)
	}
	s.log.Info("partitions revoked", "partitions", fmtParts(revoked))
}

// lost forgets partitions without committing: another member may own them.
// franz-go also calls it with nothing lost when the client closes after
// losing its session; that is not worth a warning.
func (s *Source) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for t, ps := range lost {
		for _, p := range ps {
			n++
			if tr := s.parts[tp{t, p}]; tr != nil {
				tr.Revoke()
				delete(s.parts, tp{t, p})
			}
		}
	}
	if n > 0 {
		s.abandon.Add()
		s.log.Warn("partitions lost (group session ended); nothing committed for them, the new owner re-reads from the last commit",
			"partitions", fmtParts(lost))
	}
}

// Run joins the group and emits records until ctx is cancelled. It first
// checks that the brokers answer within ConnectTimeout.
func (s *Source) Run(ctx context.Context, emit pipeline.Emit) error {
	pctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	err := s.cl.Ping(pctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cannot reach kafka brokers %s within %v: %w", strings.Join(s.cfg.Brokers, ","), s.cfg.ConnectTimeout, err)
	}
	s.connected.Store(true)

	s.commitLoop.Add(1)
	go s.periodicCommits()

	var (
		offs    []int64
		batch   []pipeline.Record
		avgSize int64 // bytes per record in the last poll
		fps     []kgo.FetchTopicPartition
		polls   int
	)
	for {
		limit := int64(s.cfg.MaxPollRecords)
		if s.credit != nil {
			free, err := s.waitCredit(ctx)
			if err != nil {
				return nil // ctx ended while paused
			}
			limit = min(limit, free)
			// Take no more than the free bytes hold at the recent record
			// size, so the poll in hand does not overshoot the budget.
			// A poll takes at most a quarter of the budget, so the records
			// in hand plus the writer's buffer stay near the budget.
			if _, fb := s.credit.Free(); avgSize > 0 {
				_, capB := s.credit.Capacity()
				limit = min(limit, max(min(fb, capB/4)/avgSize, 1))
			}
		}
		s.task.Set(pipeline.Idle)
		fetches := s.cl.PollRecords(ctx, int(limit))
		s.task.Set(pipeline.Busy)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			s.cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			switch {
			case errors.Is(err, context.Canceled):
			case t == "": // not a partition's: the client's own (group join, dial)
				s.log.Warn("kafka client error; it retries", "err", err)
			default:
				s.log.Warn("fetch error; the client retries", "topic", t, "partition", p, "err", err)
			}
		})
		batch = getBatch(fetches.NumRecords()) // Emit takes ownership; recycled by its lease
		ls := &lease{}
		// Hand over no more bytes than the sink has room for, so emit does
		// not block holding the poll: a rebalance waits for AllowRebalance,
		// and a sink that frees nothing (breaker open) would hold it past the
		// rebalance timeout. The rest is fetched again (cut).
		room := int64(-1)
		if s.credit != nil {
			_, room = s.credit.Free()
			room = max(room, 0)
		}
		var taken, takenBytes int64 // for the record size estimate
		var cuts map[string]map[int32]kgo.EpochOffset
		// When the room runs out, the partitions handed over first win, so
		// the first one rotates from poll to poll: a fixed order would
		// starve the last partitions of every cut poll.
		fps = fps[:0]
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) { fps = append(fps, fp) })
		polls++
		for i := range fps {
			fp := fps[(i+polls)%len(fps)]
			if len(fp.Records) == 0 {
				continue
			}
			s.mu.Lock()
			tr := s.parts[tp{fp.Topic, fp.Partition}]
			s.mu.Unlock()
			if tr == nil {
				continue // not ours any more: the new owner re-reads it
			}
			take := len(fp.Records)
			if room >= 0 {
				take = 0
				for _, r := range fp.Records {
					sz := int64(recordSize(r))
					if sz > room && (take > 0 || len(batch) > 0) {
						break
					}
					room -= sz // the first record of a poll always goes
					take++
					takenBytes += sz
				}
				taken += int64(take)
				if take < len(fp.Records) {
					room = 0 // later partitions are cut at their first record
					if cuts == nil {
						cuts = map[string]map[int32]kgo.EpochOffset{}
					}
					if cuts[fp.Topic] == nil {
						cuts[fp.Topic] = map[int32]kgo.EpochOffset{}
					}
					r := fp.Records[take]
					cuts[fp.Topic][fp.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
				}
			}
			offs = offs[:0]
			for _, r := range fp.Records[:take] {
				offs = append(offs, r.Offset)
			}
			// Records fetched again (the client reset its position) are
			// skipped: they were begun before.
			from, to := tr.BeginBatch(offs)
			batch = appendRecords(batch, fp.Records[from:to], &leaseAcker{tr: tr, lease: ls})
		}
		clear(fps) // do not keep the poll's records alive
		if cuts != nil {
			// Rewind the partitions that did not fit to their first record
			// not handed over; franz-go drops what it buffered beyond it.
			s.cl.SetOffsets(cuts)
			s.cuts.Add(1)
		}
		if taken > 0 {
			avgSize = max(takenBytes/taken, 1)
		}
		if len(batch) > 0 {
			ls.arm(batch)
			if err := emit(ctx, batch); err != nil {
				s.cl.AllowRebalance()
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		s.cl.AllowRebalance()
	}
}

// recordSize is pipeline.Record.Size for a fetched record, so the bytes the
// source hands over match the credit the sink takes for them.
func recordSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// Poll batches are recycled: allocating and zeroing a fresh multi-megabyte
// slice per poll, then filling it with pointers while the GC runs, was the
// largest cost of the source. A lease counts a batch's records that are not
// yet done; when it reaches zero nothing references the slice any more (acks
// come after the sink returned, and no stage may keep a batch), so it goes
// back to the pool. Records never acknowledged (abandoned at shutdown) just
// leave their slice to the GC.
var batchPool sync.Pool

func getBatch(n int) []pipeline.Record {
	if v, ok := batchPool.Get().(*[]pipeline.Record); ok && cap(*v) >= n {
		return (*v)[:0]
	}
	return make([]pipeline.Record, 0, max(n, 1024))
}

type lease struct {
	left  atomic.Int64
	batch []pipeline.Record
}

func (l *lease) arm(batch []pipeline.Record) {
	l.batch = batch
	l.left.Store(int64(len(batch)))
}

func (l *lease) done(n int) {
	if l.left.Add(-int64(n)) == 0 {
		b := l.batch[:0]
		l.batch = nil
		batchPool.Put(&b)
	}
}

// leaseAcker acks offsets on the partition tracker, then releases them
// from the poll batch's lease.
type leaseAcker struct {
	tr    *checkpoint.Partition
	lease *lease
}

func (a *leaseAcker) Ack(offsets []int64) {
	a.tr.Ack(offsets)
	a.lease.done(len(offsets))
}

// Abandoned implements pipeline.Abandoner: the records of a revoked or lost
// partition are re-read by its next owner from the last commit.
func (a *leaseAcker) Abandoned() bool { return a.tr.Revoked() }

// appendRecords converts rs in place at the end of batch: this runs once per
// record on the poll goroutine, so it avoids building intermediate copies of
// the (144-byte) Record.
func appendRecords(batch []pipeline.Record, rs []*kgo.Record, tr pipeline.Acker) []pipeline.Record {
	i := len(batch)
	batch = slices.Grow(batch, len(rs))[:i+len(rs)]
	for _, r := range rs {
		d := &batch[i]
		*d = pipeline.Record{
			Key: r.Key, Value: r.Value, Timestamp: r.Timestamp,
			Origin: pipeline.Origin{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset},
		}
		if len(r.Headers) > 0 {
			d.Headers = make([]pipeline.Header, len(r.Headers))
			for j, h := range r.Headers {
				d.Headers[j] = pipeline.Header{Key: h.Key, Value: h.Value}
			}
		}
		d.SetAcker(tr)
		i++
	}
	return batch
}

// UseCredit makes the source pace its fetching by the sink's credit: it
// pauses every owned partition (PauseFetchPartitions) when the sink has no
// room for more records or for another partition's fetch, and resumes once
// ResumeAt of the budget is free again. It implements pipeline.CreditUser
// and must be called before Run.
func (s *Source) UseCredit(c pipeline.Credit) { s.credit = c }

// SetTaskTimer implements pipeline.TaskTimed.
func (s *Source) SetTaskTimer(t *pipeline.TaskTimer) { s.task = t }

// FlowStats reports how often and how long fetching was paused for credit.
func (s *Source) FlowStats() (pauses int64, paused time.Duration) {
	return s.pauses.Load(), time.Duration(s.pausedNs.Load())
}

// Cuts reports how many polls were cut short because their records did not
// fit the sink's free bytes (the rest was fetched again).
func (s *Source) Cuts() int64 { return s.cuts.Load() }

// waitCredit returns the free records once there is room for a poll,
// pausing the owned partitions while there is not.
func (s *Source) waitCredit(ctx context.Context) (int64, error) {
	fr, fb := s.credit.Free()
	partMax := int64(s.cfg.FetchMaxPartitionBytes)
	if partMax == 0 {
		partMax = 1 << 20 // franz-go's default
	}
	capR, capB := s.credit.Capacity()
	partMax = min(partMax, capB/2)
	if fr > 0 && fb >= partMax {
		return fr, nil
	}
	s.mu.Lock()
	owned := map[string][]int32{}
	for k := range s.parts {
		owned[k.topic] = append(owned[k.topic], k.partition)
	}
	s.mu.Unlock()
	s.cl.PauseFetchPartitions(owned)
	s.task.Set(pipeline.Backpressured)
	s.pauses.Add(1)
	start := time.Now()
	s.log.Debug("sink out of credit; fetching paused", "free_records", fr, "free_bytes", fb)
	defer func() {
		s.cl.ResumeFetchPartitions(owned)
		s.pausedNs.Add(int64(time.Since(start)))
	}()
	wantR, wantB := int64(float64(capR)*s.cfg.ResumeAt), int64(float64(capB)*s.cfg.ResumeAt)
	for {
		ch := s.credit.Changed()
		fr, fb = s.credit.Free()
		if fr >= max(wantR, 1) && fb >= max(wantB, partMax) {
			return fr, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

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
// done, if it advanced since the last commit.
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
	if len(req) == 0 {
		return nil
	}
	id := s.checkpointID.Add(1)
	meta, _ := json.Marshal(map[string]any{"checkpoint": id, "by": "spillway"})
	cctx := kgo.PreCommitFnContext(ctx, func(r *kmsg.OffsetCommitRequest) error {
		for i := range r.Topics {
			for j := range r.Topics[i].Partitions {
				m := string(meta)
				r.Topics[i].Partitions[j].Metadata = &m
			}
		}
		return nil
	})
	var errs []error
	s.cl.CommitOffsetsSync(cctx, req, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerrForCode(p.ErrorCode); perr != nil {
					errs = append(errs, fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, perr))
					continue
				}
				if eo, ok := req[t.Topic][p.Partition]; ok {
					s.committed[tp{t.Topic, p.Partition}] = eo.Offset
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

// Status reports whether Run reached the brokers and how many partitions the
// group assigned to this worker.
func (s *Source) Status() (connected bool, partitions int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected.Load(), len(s.parts)
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

// Close stops periodic commits, commits what is done, and leaves the group.
// The pipeline calls it after the sink drained.
func (s *Source) Close(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stopCommits) })
	s.commitLoop.Wait()
	err := s.Checkpoint(ctx)
	s.mu.Lock()
	s.closing = true
	for k, tr := range s.parts {
		tr.Revoke()
		delete(s.parts, k)
	}
	s.mu.Unlock()
	s.cl.CloseAllowingRebalance()
	if err != nil {
		return fmt.Errorf("final commit: %w", err)
	}
	return nil
}

// Client returns the underlying franz-go client, for pausing fetches and
// for tests.
func (s *Source) Client() *kgo.Client { return s.cl }

func fmtParts(m map[string][]int32) string {
	var parts []string
	for t, ps := range m {
		ps := append([]int32(nil), ps...)
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		parts = append(parts, fmt.Sprintf("%s%v", t, ps))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
