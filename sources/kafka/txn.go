package kafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/checkpoint"
)

// Exactly-once: consume, transform and produce in Kafka transactions.
//
// In this mode the source's client is a kgo.GroupTransactSession: one
// client that is both the group member and the transactional producer the
// Kafka sink writes through, so that End commits the consumed offsets in
// the same transaction as the produced records (TxnOffsetCommit, fenced by
// the group generation, KIP-447). franz-go's session rather than our own
// TxnOffsetCommit: it already sends AddOffsetsToTxn, secures the group
// membership with a heartbeat before EndTxn, aborts when a rebalance or a
// lost session came in between, and rewinds the consumer to the last
// commit after an abort; writing that again would only add ways to get it
// wrong.
//
// End commits the offsets of everything polled, so a transaction must hold
// exactly the outputs of what was polled in it. The AsyncSink writer
// batches, retries and dead-letters asynchronously, so a transaction's end
// is a barrier, run by the poll loop (which is the only one that hands the
// pipeline records):
//
//  1. a transaction opens at the first non-empty poll (Begin); polls go on,
//     and rebalances stay blocked (BlockRebalanceOnPoll), until
//     transaction_interval has passed since it opened, transaction_records
//     were polled, or a rebalance waits (OnPartitionsCallbackBlocked);
//  2. then no more polls: the writer is flushed (Transactions.Flush), so
//     every record handed out is produced into the transaction,
//     dead-lettered or dropped on purpose, and every tracker is idle.
//     Dead letters go into the transaction too (DeadLetters): an
//     operator's are written before the poll loop goes on, the writer's
//     before their records leave its buffer, both acknowledged first;
//  3. End commits, or aborts when a record's outcome is unknown (the sink
//     or the dead-letter producer says so: a produce that failed or timed
//     out while in flight may have written it) or not everything is done;
//     after an abort the session rewinds to the last commit and the
//     trackers start afresh, so the aborted range is read and processed
//     again;
//  4. then the rebalance may go on (AllowRebalance), and polling resumes.
//
// Revoked and lost partitions need no draining: callbacks run only between
// transactions, when nothing is in flight; a revocation makes the session
// abort the next transaction, which is safe (read again) if wasteful.
// Commit metadata naming done offsets (skip.go) is neither written nor
// read: nothing above a transaction's offsets is ever done.
//
// A producer fenced by a newer one with the same transactional id (a zombie:
// a worker thought dead, replaced by one with the same instance id) gets
// PRODUCER_FENCED or INVALID_PRODUCER_EPOCH; so does a member fenced out of
// the group with its static instance id (FENCED_INSTANCE_ID). The session
// cannot go on: Run returns an error naming the id, the job stops with a
// non-zero exit, and nothing of its open transaction is ever visible to a
// read_committed reader.

// Transactions configures the exactly-once mode (UseTransactions).
type Transactions struct {
	// IDPrefix starts the transactional id; the id is IDPrefix, "-", and
	// the source's instance_id, or the host name and process id when it
	// has none. A worker restarted with the same instance id reuses the id:
	// it fences its predecessor and aborts that one's open transaction at
	// once. Without an instance id every process has its own id, and an
	// open transaction of a killed worker blocks read_committed readers of
	// its partitions until Timeout. Required.
	IDPrefix string
	// Interval is how long a transaction stays open at most (plus the
	// barrier); required.
	Interval time.Duration
	// Records is how many polled records end a transaction; required.
	Records int
	// Timeout is the transaction timeout: a transaction open longer than
	// this (a crashed worker's) is aborted by the broker; required.
	Timeout time.Duration
	// ProducerOpts are the sink's producer options (acks, compression,
	// batch sizes) for the shared client.
	ProducerOpts []kgo.Opt
	// Sink produces through the shared client; required.
	Sink TxnSink
	// DeadLetters, when set, is the dead-letter producer: it gets the
	// shared client too and writes dead letters inside the open
	// transaction, so a dead letter commits with its record's offset and
	// an aborted transaction's dead letters are never visible. Its
	// failures abort the transaction like the sink's.
	DeadLetters TxnSink
	// Flush sends everything the sink holds and waits until nothing is in
	// flight: the barrier before each commit. Required.
	Flush func(ctx context.Context) error
}

// TxnSink is the sink side of the exactly-once mode (the Kafka sink).
type TxnSink interface {
	// UseTransactClient hands over the shared client before the first
	// record is emitted: the sink produces through it from then on, only
	// between a transaction's Begin and its End (the barrier sees to it).
	UseTransactClient(cl *kgo.Client)
	// TakeTxnFailure returns, and forgets, the first reason since the last
	// call why the open transaction must not commit: a record whose
	// produce failed or timed out in flight may have been written anyway,
	// and a retry would write it again. nil when there is none. It is
	// called once per transaction, at its end, with nothing in flight.
	TakeTxnFailure() error
}

// UseTransactions switches the source to the exactly-once mode (see
// above). Call it before Run; the job does when the sink is Kafka with
// delivery: exactly_once.
func (s *Source) UseTransactions(t Transactions) {
	s.txn = &txnState{cfg: t}
}

// Transactional reports whether the source runs in the exactly-once mode,
// and its transactional id once Run chose it.
func (s *Source) Transactional() (on bool, id string) {
	if s.txn == nil {
		return false, ""
	}
	return true, s.txn.id
}

// TxnStats returns how many transactions committed and aborted.
func (s *Source) TxnStats() (committed, aborted int64) {
	if s.txn == nil {
		return 0, 0
	}
	return s.txn.commits.Load(), s.txn.aborts.Load()
}

// txnState is the exactly-once mode's state. Its fields are used by the
// poll loop (and by Close after Run returned) only, except hurry.
type txnState struct {
	cfg     Transactions
	id      string
	sess    *kgo.GroupTransactSession
	open    bool
	began   time.Time
	polled  int
	commits atomic.Int64
	aborts  atomic.Int64

	// hurry is cancelled when a rebalance waits for the open transaction
	// (OnPartitionsCallbackBlocked, on franz-go's goroutine).
	hurryMu     sync.Mutex
	hurry       context.Context
	hurryCancel context.CancelFunc
}

// transactionalID is the id this process uses.
func (s *Source) transactionalID() string {
	suffix := s.cfg.InstanceID
	if suffix == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "host"
		}
		suffix = host + "-" + strconv.Itoa(os.Getpid())
	}
	return s.txn.cfg.IDPrefix + "-" + suffix
}

// startTxnClient creates the session with the group consumer's options and
// the transactional producer's, and hands its client to the sink.
func (s *Source) startTxnClient(opts []kgo.Opt) (*kgo.Client, error) {
	t := s.txn
	if t.cfg.IDPrefix == "" || t.cfg.Sink == nil || t.cfg.Flush == nil || t.cfg.Interval <= 0 || t.cfg.Records <= 0 || t.cfg.Timeout <= 0 {
		return nil, errors.New("kafka source: incomplete exactly-once settings")
	}
	t.id = s.transactionalID()
	t.resetHurry()
	opts = append(opts, t.cfg.ProducerOpts...)
	opts = append(opts,
		kgo.TransactionalID(t.id),
		kgo.TransactionTimeout(t.cfg.Timeout),
		// Only committed records are read: an aborted transaction's
		// records (this job's own input may be another job's output)
		// never enter the pipeline.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { t.hurryUp() }),
	)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka source: transactional client: %w", err)
	}
	t.sess = sess
	t.cfg.Sink.UseTransactClient(sess.Client())
	if t.cfg.DeadLetters != nil {
		t.cfg.DeadLetters.UseTransactClient(sess.Client())
	}
	s.log.Info("exactly-once: consuming and producing in transactions", "transactional_id", t.id,
		"interval", t.cfg.Interval, "records", t.cfg.Records)
	return sess.Client(), nil
}

func (t *txnState) resetHurry() {
	t.hurryMu.Lock()
	t.hurry, t.hurryCancel = context.WithCancel(context.Background())
	t.hurryMu.Unlock()
}

func (t *txnState) hurryUp() {
	t.hurryMu.Lock()
	t.hurryCancel()
	t.hurryMu.Unlock()
}

func (t *txnState) hurried() bool {
	t.hurryMu.Lock()
	defer t.hurryMu.Unlock()
	return t.hurry.Err() != nil
}

// pollContext bounds a poll made while a transaction is open by the
// transaction's end, and ends it early when a rebalance waits.
func (t *txnState) pollContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if !t.open {
		return ctx, func() {}
	}
	pctx, cancel := context.WithDeadline(ctx, t.began.Add(t.cfg.Interval))
	t.hurryMu.Lock()
	hurry := t.hurry
	t.hurryMu.Unlock()
	stop := context.AfterFunc(hurry, cancel)
	return pctx, func() { stop(); cancel() }
}

// pollLimit caps a poll so a transaction holds about Records records.
func (t *txnState) pollLimit(limit int64) int64 {
	if !t.open {
		return min(limit, int64(t.cfg.Records))
	}
	return max(min(limit, int64(t.cfg.Records-t.polled)), 1)
}

// begin opens a transaction, if none is, for the n records just polled.
func (t *txnState) begin(n int) error {
	if !t.open {
		if err := t.sess.Begin(); err != nil {
			return t.fenced(fmt.Errorf("kafka source: begin transaction: %w", err))
		}
		t.open, t.began, t.polled = true, time.Now(), 0
	}
	t.polled += n
	return nil
}

// due reports whether the open transaction should end now.
func (t *txnState) due() bool {
	return t.open && (t.polled >= t.cfg.Records || !time.Now().Before(t.began.Add(t.cfg.Interval)) || t.hurried())
}

// endTxnIfDue ends the open transaction when it is due (see due). It
// returns nil when ctx ended during the barrier: Close ends the
// transaction then.
func (s *Source) endTxnIfDue(ctx context.Context) error {
	t := s.txn
	if !t.due() {
		return nil
	}
	// The barrier: everything handed out is produced, dead-lettered or
	// dropped before the offsets are committed.
	if err := t.cfg.Flush(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("kafka source: transaction barrier: %w", err)
	}
	return s.endTxn(ctx, false)
}

// endTxn ends the open transaction: it commits when every record polled is
// done and the sink reports no failure, and aborts otherwise. final (Close)
// leaves the rebalance blocked: the client closes next.
func (s *Source) endTxn(ctx context.Context, final bool) error {
	t := s.txn
	if !t.open {
		return nil
	}
	commit, why := kgo.TryCommit, error(nil)
	if n := s.pendingRecords(); n > 0 {
		commit, why = kgo.TryAbort, fmt.Errorf("%d records polled in it are not done", n)
	}
	// Both are taken, so that neither carries a failure over to the next
	// transaction.
	if err := t.takeFailures(); err != nil && commit == kgo.TryCommit {
		commit, why = kgo.TryAbort, err
	}
	cl := t.sess.Client()
	offsets := cl.UncommittedOffsets()
	// End must not be cut short (that leaves the client unusable), but it
	// is bounded: a broker that does not answer within the transaction
	// timeout has aborted the transaction anyway.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.cfg.Timeout)
	committed, err := t.sess.End(ectx, commit)
	cancel()
	t.open = false
	t.resetHurry()
	if commit == kgo.TryCommit {
		s.commits.Add(1)
	}
	switch {
	case err != nil:
		t.aborts.Add(1)
		return t.fenced(fmt.Errorf("kafka source: end transaction: %w", err))
	case committed:
		t.commits.Add(1)
		s.mu.Lock()
		for topic, ps := range offsets {
			for p, eo := range ps {
				s.committed[tp{topic, p}] = eo.Offset
			}
		}
		s.mu.Unlock()
	default:
		t.aborts.Add(1)
		if why == nil {
			why = errors.New("the group rebalanced or the member lost its session meanwhile")
		}
		s.restartTrackers()
		s.log.Warn("transaction aborted; its records are read and processed again from the last commit",
			"transactional_id", t.id, "reason", why.Error())
	}
	if !final {
		cl.AllowRebalance()
	}
	return nil
}

// takeFailures takes the sink's and the dead-letter producer's reasons
// why the open transaction must not commit; nil when there is none.
func (t *txnState) takeFailures() error {
	err := t.cfg.Sink.TakeTxnFailure()
	if t.cfg.DeadLetters != nil {
		if derr := t.cfg.DeadLetters.TakeTxnFailure(); err == nil && derr != nil {
			err = fmt.Errorf("dead letters: %w", derr)
		}
	}
	return err
}

// fenced rewrites err when it says another producer took this one's
// transactional id over, or the group fenced this member's instance id.
func (t *txnState) fenced(err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed) || errors.Is(err, kerr.FencedInstanceID) {
		return fmt.Errorf("fenced: another worker took over transactional id %q (or this member's instance id); this worker stops, its open transaction was not committed: %w", t.id, err)
	}
	return err
}

// pendingRecords counts the records polled that are not done.
func (s *Source) pendingRecords() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, tr := range s.parts {
		n += tr.Pending()
	}
	return n
}

// restartTrackers gives every owned partition a fresh tracker after an
// abort: the session rewound the consumer to the last commit, and the
// records fetched again are new work, not duplicates to skip.
func (s *Source) restartTrackers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, tr := range s.parts {
		tr.Revoke()
		s.parts[k] = checkpoint.NewPartition(-1)
		delete(s.skip, k)
	}
}

// dropTxnPartsLocked forgets revoked or lost partitions in the
// exactly-once mode: callbacks run between transactions, when nothing of
// theirs is in flight, and nothing is committed outside a transaction. The
// caller holds s.mu.
func (s *Source) dropTxnPartsLocked(parts map[string][]int32) {
	for t, ps := range parts {
		for _, p := range ps {
			k := tp{t, p}
			if tr := s.parts[k]; tr != nil {
				tr.Revoke()
			}
			delete(s.parts, k)
			delete(s.skip, k)
		}
	}
}
