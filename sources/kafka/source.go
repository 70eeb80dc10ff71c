// Package kafka is the Kafka consumer-group source. It tracks every record it
// emits per partition and commits only offsets below which every record is
// done (acknowledged, dead-lettered or dropped on purpose): on an interval,
// when a partition is revoked (after draining it, time-boxed) and on close.
//
// The files follow the source's jobs: source.go its lifecycle and
// rebalances, poll.go the poll loop and how it is cut to the sink's credit,
// hand.go the records polled and not yet handed over (shared fairly between
// partitions), commit.go the commits, pool.go the recycling of poll batches, config.go
// its settings.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/checkpoint"
	"github.com/spillway-io/spillway/kafkaclient"
	"github.com/spillway-io/spillway/pipeline"
)

type tp struct {
	topic     string
	partition int32
}

// Source is a consumer-group member feeding a pipeline. Create it with New;
// Run and Close are each called once, Run first (Close without Run only
// releases the source). Its other methods are safe for concurrent use.
// Every Source has its own state (trackers, abandonment, batch pool), so
// several sources in one process do not affect each other.
type Source struct {
	cfg Config
	log *slog.Logger
	gw  *groupWatch // logs the group's troubles (groupwatch.go)
	// stored, when set, is the destination's own record of what it wrote
	// (stored.go).
	stored StoredOffsets
	// txn is the exactly-once mode's state (txn.go); nil otherwise.
	txn *txnState

	mu        sync.Mutex
	cl        *kgo.Client // created by Run
	closed    bool        // Close was called: Run creates no client any more
	parts     map[tp]*checkpoint.Partition
	held      map[tp]*heldPart // lost partitions whose work may be resumed (group.go)
	committed map[tp]int64     // the last offset this worker committed
	groupAt   map[tp]int64     // the group's offset as this worker last knew it (group.go)
	sent      map[tp][]int64   // offsets sent in commits not known to have succeeded since
	closing   bool             // Close revokes the partitions itself: revoked need not drain
	// Done offsets above the committed one, from commit metadata (skip.go):
	// skip holds them for the fresh trackers that resume from that commit,
	// fetchedDone those of the group's commits just fetched, for resume.
	skip          map[tp][][2]int64
	fetchedDone   map[tp]committedDone
	committedDone map[tp][][2]int64 // the done ranges of this worker's last commit

	connected atomic.Bool // the brokers answered Run's first request

	onAssign  func(*kgo.Client, map[string][]int32) // OnAssignmentChange's; set before Run
	credit    pipeline.Credit
	task      *pipeline.TaskTimer
	fetchPart int64 // the partition fetch bound Run chose
	pauses    atomic.Int64
	pausedNs  atomic.Int64
	cuts      atomic.Int64         // hand-overs cut short to fit the sink's free bytes
	abandon   pipeline.Abandonment // moves when partitions are revoked or lost
	pool      batchPool

	commitMu     sync.Mutex // serialises commits
	checkpointID atomic.Int64
	acked        chan struct{} // poked (never blocking) when records are done: commit soon
	commits      atomic.Int64  // commit requests sent
	plainMeta    atomic.Bool   // a broker refused metadata this large: commit offsets only
	metaIgnored  atomic.Bool   // foreign or malformed commit metadata was logged once
	skipped      atomic.Int64  // fetched records skipped: a commit's metadata named them done
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

// New applies cfg's defaults and validates it (Brokers are required). It
// does no I/O: Run creates the client.
func New(cfg Config, opts ...Option) (*Source, error) {
	cfg.ApplyDefaults()
	if err := errors.Join(cfg.brokersError(), cfg.Validate()); err != nil {
		return nil, fmt.Errorf("kafka source: %w", err)
	}
	s := &Source{
		cfg:           cfg,
		parts:         map[tp]*checkpoint.Partition{},
		held:          map[tp]*heldPart{},
		committed:     map[tp]int64{},
		groupAt:       map[tp]int64{},
		sent:          map[tp][]int64{},
		skip:          map[tp][][2]int64{},
		committedDone: map[tp][][2]int64{},
		acked:         make(chan struct{}, 1),
		stopCommits:   make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.gw = newGroupWatch(s.log, cfg.RebalanceTimeout)
	return s, nil
}

// connOpts are the options every client of the source uses to reach the
// brokers, whatever it does there.
func (s *Source) connOpts() ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(s.cfg.Brokers...)}
	if s.cfg.RequestTimeoutOverhead > 0 {
		opts = append(opts, kgo.RequestTimeoutOverhead(s.cfg.RequestTimeoutOverhead))
	}
	return s.withClientOpts(opts)
}

// withClientOpts appends a fresh set of ClientOpts to opts.
func (s *Source) withClientOpts(opts []kgo.Opt) ([]kgo.Opt, error) {
	if s.cfg.ClientOpts == nil {
		return opts, nil
	}
	extra, err := s.cfg.ClientOpts()
	if err != nil {
		return nil, fmt.Errorf("kafka source: client options: %w", err)
	}
	return append(opts, extra...), nil
}

// consumerOpts are the group consumer's options, with fetch bounds taken
// from the sink's budget (see Config.FetchMaxBytes).
func (s *Source) consumerOpts() ([]kgo.Opt, error) {
	budget := int64(DefaultBudget)
	if s.credit != nil {
		_, budget = s.credit.Capacity()
	}
	whole, part := s.cfg.fetchSizes(budget)
	s.fetchPart = int64(part)
	reset := kgo.NewOffset().AtStart()
	if s.cfg.StartOffset == "latest" {
		reset = kgo.NewOffset().AtEnd()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topics...),
		kgo.ConsumeResetOffset(reset),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(s.notifying(s.assigned)),
		kgo.OnPartitionsRevoked(s.notifying(s.revoked)),
		kgo.OnPartitionsLost(s.notifying(s.lost)),
		kgo.OnOffsetsFetched(s.fetched),
		kgo.AdjustFetchOffsetsFn(s.resume),
		kgo.FetchMaxBytes(whole),
		kgo.FetchMaxPartitionBytes(part),
		kgo.SessionTimeout(s.cfg.SessionTimeout),
		kgo.RebalanceTimeout(s.cfg.RebalanceTimeout),
		kgo.WithHooks(s.gw),
	}
	if s.cfg.RequestTimeoutOverhead > 0 {
		opts = append(opts, kgo.RequestTimeoutOverhead(s.cfg.RequestTimeoutOverhead))
	}
	if s.cfg.GroupProtocol == GroupProtocolConsumer {
		// KIP-848: the broker assigns (the cooperative-sticky balancer maps
		// to its uniform assignor).
		opts = append(opts, kgo.ServerSideBalancer())
	}
	if s.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(s.cfg.InstanceID))
	}
	return s.withClientOpts(opts)
}

// Run creates the topics when asked to, checks that the brokers answer
// within ConnectTimeout, joins the group and emits records until ctx is
// cancelled (nil) or emit fails with another error than ctx's (that error).
func (s *Source) Run(ctx context.Context, emit pipeline.Emit) error {
	if s.cfg.CreateTopics {
		if err := s.createTopics(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	opts, err := s.consumerOpts()
	if err != nil {
		return err
	}
	var cl *kgo.Client
	if s.txn != nil {
		cl, err = s.startTxnClient(opts) // commits are the transactions' (txn.go)
	} else {
		cl, err = kgo.NewClient(opts...)
	}
	if err != nil {
		return fmt.Errorf("kafka source: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cl.Close()
		return nil
	}
	s.cl = cl
	if s.txn == nil {
		s.commitLoop.Add(1) // under mu: Close waits for it only once it sees the client
		go s.runCommits()
	}
	s.mu.Unlock()

	if err := kafkaclient.Ping(ctx, cl, s.cfg.ConnectTimeout); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cannot reach kafka brokers %s: %w", strings.Join(s.cfg.Brokers, ","), err)
	}
	s.connected.Store(true)
	return s.poll(ctx, cl, emit)
}

// createTopics creates the missing topics with a short-lived client of the
// source's connection options, bounded by ConnectTimeout.
func (s *Source) createTopics(ctx context.Context) error {
	opts, err := s.connOpts()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka source: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, int32(s.cfg.Partitions), -1, nil, s.cfg.Topics...)
	if err != nil {
		return fmt.Errorf("create topics %s on %s: %w", strings.Join(s.cfg.Topics, ","), strings.Join(s.cfg.Brokers, ","), err)
	}
	var errs []error
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("create topic %s: %w", r.Topic, r.Err))
		}
	}
	return errors.Join(errs...)
}

// revoked drains the revoked partitions (bounded by RevokeTimeout), commits
// what is done and forgets them. Acks arriving later are ignored by the
// revoked trackers, so a late ack can never be committed by this worker.
func (s *Source) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	s.mu.Lock()
	if s.txn != nil {
		s.dropTxnPartsLocked(revoked)
		s.mu.Unlock()
		s.log.Info("partitions revoked", "partitions", fmtParts(revoked))
		return
	}
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
		// Only what is in flight is waited for: the sink drops the
		// records it has not sent yet and gives them back (Withdraw,
		// pipeline.Releaser), so that a slow or rate-limited sink does
		// not hold the group's rebalance up for its whole buffer. The
		// commit stops below the first of them; the next owner reads
		// them again.
		for _, tr := range trackers {
			tr.Withdraw()
		}
		s.abandon.Add()
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
	points := map[tp]commitPoint{}
	s.mu.Lock()
	for k, tr := range trackers {
		if off, ok := tr.Revoke(); ok {
			points[k] = commitPoint{off, s.withSkipLocked(k, tr.DoneAbove())} // no ack counts any more
		}
		delete(s.parts, k)
		delete(s.skip, k)
	}
	s.mu.Unlock()
	s.abandon.Add()
	if err := s.commitOffsets(ctx, points); err != nil {
		s.log.Warn("commit on revoke failed", "err", err)
	}
	s.log.Info("partitions revoked", "partitions", fmtParts(revoked))
}

// UseCredit makes the source pace its fetching by the sink's credit: it
// pauses every owned partition (PauseFetchPartitions) when the sink has no
// room for more records or for another partition's fetch, and resumes once
// ResumeAt of the budget is free again. The fetch sizes left at zero follow
// the credit's byte capacity (see Config.FetchMaxBytes). It implements
// pipeline.CreditUser and must be called before Run.
func (s *Source) UseCredit(c pipeline.Credit) { s.credit = c }

// SetTaskTimer implements pipeline.TaskTimed.
func (s *Source) SetTaskTimer(t *pipeline.TaskTimer) { s.task = t }

// FlowStats reports how often and how long fetching was paused for credit.
func (s *Source) FlowStats() (pauses int64, paused time.Duration) {
	return s.pauses.Load(), time.Duration(s.pausedNs.Load())
}

// Cuts reports how many hand-overs were cut short because the records at
// hand did not fit the sink's free bytes (the rest stayed at hand).
func (s *Source) Cuts() int64 { return s.cuts.Load() }

// Status reports whether Run reached the brokers and how many partitions the
// group assigned to this worker.
func (s *Source) Status() (connected bool, partitions int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected.Load(), len(s.parts)
}

// client returns the client Run created, or nil.
func (s *Source) client() *kgo.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cl
}

// Client returns the underlying franz-go client, for tests; nil until Run
// created it.
func (s *Source) Client() *kgo.Client { return s.client() }

// Close stops periodic commits, commits what is done, and leaves the group.
// The pipeline calls it after the sink drained. The error is the final
// commit's.
func (s *Source) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	cl := s.cl
	s.mu.Unlock()
	defer s.gw.close()
	if cl == nil {
		return nil // Run never joined: nothing to commit or leave
	}
	s.stopOnce.Do(func() { close(s.stopCommits) })
	s.commitLoop.Wait()
	var err error
	if s.txn != nil {
		// The pipeline flushed the sink: the open transaction commits if
		// everything polled in it is done, and aborts otherwise.
		err = s.endTxn(ctx, true)
	} else {
		err = s.Checkpoint(ctx)
	}
	s.mu.Lock()
	s.closing = true
	for k, tr := range s.parts {
		tr.Revoke()
		delete(s.parts, k)
		delete(s.skip, k)
	}
	s.dropHeldLocked(nil)
	s.mu.Unlock()
	cl.CloseAllowingRebalance()
	if err != nil {
		return fmt.Errorf("final commit: %w", err)
	}
	return nil
}

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
