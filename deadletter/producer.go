package deadletter

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/kafkaclient"
	"github.com/spillway-io/spillway/pipeline"
)

// maxMessage bounds the error message header.
const maxMessage = 2048

// Producer produces failed records to a Kafka topic with headers saying
// where each came from and why it failed (see the Header constants). Send
// returns only after the broker acknowledged every record (acks=all,
// idempotent producer), so the caller may then mark the originals done. It
// applies no policy: a Queue does. It is safe for concurrent use.
//
// In transactions (UseTransactions) it produces through a transactional
// client handed over later (UseTransactClient): each dead letter is part
// of the open transaction, which commits it with its record's source
// offset, and is never visible to a read_committed reader when that
// transaction aborts.
type Producer struct {
	cl    *kgo.Client
	topic string
	now   func() time.Time

	// In transactions: the client handed over, and why the open
	// transaction must not commit.
	txn     atomic.Bool
	txcl    atomic.Pointer[kgo.Client]
	txnMu   sync.Mutex
	txnFail error // guarded by txnMu
}

// NewProducer returns a producer writing to topic through brokers. It does
// no I/O; opts are extra franz-go options (TLS, SASL, a logger), applied
// after Spillway's own so they may override them.
func NewProducer(brokers []string, topic string, opts ...kgo.Opt) (*Producer, error) {
	if topic == "" {
		return nil, errors.New("dead letter: topic is required")
	}
	if len(brokers) == 0 {
		return nil, errors.New("dead letter: brokers are required")
	}
	o := append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0)}, opts...)
	cl, err := kgo.NewClient(o...)
	if err != nil {
		return nil, fmt.Errorf("dead letter: %w", err)
	}
	return &Producer{cl: cl, topic: topic, now: time.Now}, nil
}

// Topic returns the dead-letter topic.
func (d *Producer) Topic() string { return d.topic }

// UseTransactions makes Send produce through the client UseTransactClient
// hands over (the Kafka source's transactional client, with the Kafka
// sink's delivery: exactly_once) and never through the producer's own:
// until the client is there Send fails, and outside an open transaction
// the client refuses the records. Call it before the first Send; the job
// does, and gives the producer to the source (kafka.Transactions's
// DeadLetters), which hands the client over and ends each transaction only
// when every Send of it returned.
func (d *Producer) UseTransactions() { d.txn.Store(true) }

// UseTransactClient hands over the transactional client Send produces
// through from now on (see UseTransactions). It does not take ownership:
// the caller closes cl.
func (d *Producer) UseTransactClient(cl *kgo.Client) { d.txcl.Store(cl) }

// TakeTxnFailure returns, and forgets, the first reason since the last
// call why the open transaction must not commit: a Send in transactions
// that failed, or returned while records were in flight. Its records may
// be written in the transaction or not, and the caller, which failed
// with them unacknowledged, would dead-letter them again on a later try.
// nil when there is none. Safe for concurrent use.
func (d *Producer) TakeTxnFailure() error {
	d.txnMu.Lock()
	defer d.txnMu.Unlock()
	err := d.txnFail
	d.txnFail = nil
	return err
}

// noteTxnFailure remembers err, the first since the last TakeTxnFailure.
func (d *Producer) noteTxnFailure(err error) {
	d.txnMu.Lock()
	if d.txnFail == nil {
		d.txnFail = err
	}
	d.txnMu.Unlock()
}

// Send produces recs with failure headers and waits for the acknowledgement.
// It retries until ctx ends (franz-go retries produce errors internally) and
// then returns ctx's error, even while a produce request is in flight: the
// idempotent producer cannot fail such records, so they may still land in
// the topic later, next to the copies of a later Send of the same originals.
// In transactions (UseTransactions) such an error also makes the open
// transaction abort (TakeTxnFailure), which drops every copy.
func (d *Producer) Send(ctx context.Context, recs []pipeline.Record, f pipeline.Failure) error {
	if len(recs) == 0 {
		return nil
	}
	cl := d.cl
	if d.txn.Load() {
		if cl = d.txcl.Load(); cl == nil {
			return fmt.Errorf("produce to dead-letter topic %s: the transactional client is not there yet", d.topic)
		}
	}
	err := d.send(ctx, cl, recs, f)
	if err != nil && d.txn.Load() {
		d.noteTxnFailure(err)
	}
	return err
}

// send produces recs through cl.
func (d *Producer) send(ctx context.Context, cl *kgo.Client, recs []pipeline.Record, f pipeline.Failure) error {
	msg := ""
	if f.Err != nil {
		msg = f.Err.Error()
	}
	if len(msg) > maxMessage {
		// Cut before the rune that does not fit whole, so the header stays
		// valid UTF-8.
		n := maxMessage
		for n > 0 && !utf8.RuneStart(msg[n]) {
			n--
		}
		msg = msg[:n]
	}
	at := d.now().UTC().Format(time.RFC3339Nano)
	keys := make([]string, 0, len(f.Details))
	for k := range f.Details {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// With tracing on, the caller's span (the job starts one per Send)
	// replaces the records' own W3C trace context; nil off.
	th := kafkaclient.TraceHeaders(ctx)
	out := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		hs := make([]kgo.RecordHeader, 0, len(r.Headers)+len(th)+7+len(keys))
		for _, h := range r.Headers {
			if th == nil || !kafkaclient.IsTraceHeader(h.Key) {
				hs = append(hs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
			}
		}
		hs = append(hs, th...)
		hs = append(hs,
			kgo.RecordHeader{Key: HeaderClass, Value: []byte(f.Class)},
			kgo.RecordHeader{Key: HeaderMessage, Value: []byte(msg)},
			kgo.RecordHeader{Key: HeaderTopic, Value: []byte(r.Origin.Topic)},
			kgo.RecordHeader{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(r.Origin.Partition), 10)},
			kgo.RecordHeader{Key: HeaderOffset, Value: strconv.AppendInt(nil, r.Origin.Offset, 10)},
			kgo.RecordHeader{Key: HeaderAttempts, Value: strconv.AppendInt(nil, int64(f.Attempts), 10)},
			kgo.RecordHeader{Key: HeaderTime, Value: []byte(at)},
		)
		for _, k := range keys {
			hs = append(hs, kgo.RecordHeader{Key: HeaderPrefix + k, Value: []byte(f.Details[k])})
		}
		out[i] = &kgo.Record{Topic: d.topic, Key: r.Key, Value: r.Value, Headers: hs, Timestamp: r.Timestamp}
	}
	// Not ProduceSync: it waits for every promise, which for a request
	// already sent means until the broker answers, whatever ctx says.
	var (
		mu    sync.Mutex
		first error
		left  = len(out)
		done  = make(chan struct{})
	)
	promise := func(_ *kgo.Record, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil && first == nil {
			first = err
		}
		if left--; left == 0 {
			close(done)
		}
	}
	for _, r := range out {
		cl.Produce(ctx, r, promise)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("produce to dead-letter topic %s: %w", d.topic, ctx.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	if first != nil {
		return fmt.Errorf("produce to dead-letter topic %s: %w", d.topic, first)
	}
	return nil
}

// Close closes the producer's own client (not one handed over with
// UseTransactClient). Records of a Send that returned an error may be
// dropped.
func (d *Producer) Close() { d.cl.Close() }
