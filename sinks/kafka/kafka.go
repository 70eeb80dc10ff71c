package kafkasink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/kafkaclient"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/pipeline/exprop"
	"github.com/spillway-io/spillway/sinks"
)

// ErrClosed is returned by WriteBatch after Close.
var ErrClosed = errors.New("kafka sink: closed")

const (
	// startTimeout bounds what New does on the network: the brokers must
	// answer, and the fixed topic is looked up (and created) within it.
	startTimeout = 10 * time.Second
	// defaultBatchMaxBytes is the batch size limit of a topic whose
	// max.message.bytes could not be read: franz-go's default, below
	// Kafka's.
	defaultBatchMaxBytes = 1_000_012
)

// Sink produces each batch to Kafka and reports per record which were not
// written. It is safe for concurrent use; the zero value is not usable,
// call New.
//
// Records are produced with acks=all by an idempotent producer: a record
// is acknowledged once every in-sync replica has it, and the client's own
// retries never duplicate or reorder it. The records of one partition are
// written in the order WriteBatch was given them, and a record's key
// chooses its partition (murmur2, as the Java client), so the records of a
// key keep their order within a batch and across sequential batches.
type Sink struct {
	cfg       Config
	cl        *kgo.Client
	adm       *kadm.Client
	log       *slog.Logger
	topicExpr *exprop.Expr      // nil with a fixed topic
	mapper    pipeline.Operator // nil: key, value and headers pass through

	mu     sync.Mutex
	topics map[string]*topicState // guarded by mu; topics looked up so far

	closeOnce sync.Once
	closed    atomic.Bool

	// exactly_once (txn.go): the source's transactional client, and why
	// the open transaction must not commit.
	txcl    atomic.Pointer[kgo.Client]
	txnMu   sync.Mutex
	txnFail error // guarded by txnMu
}

// topicState is what the sink learnt of one target topic.
type topicState struct {
	ready    chan struct{} // closed once err and maxBytes are set
	err      error         // nil: the topic exists
	maxBytes int32         // its max.message.bytes
}

// New validates cfg, connects to the brokers and checks that the fixed
// topic exists (creating it with CreateTopic), within ctx and at most 10s.
// A missing topic, or one the client may not write, is an error naming
// it. Close releases the client.
func New(ctx context.Context, cfg Config) (*Sink, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("brokers: required")
	}
	codec, err := codecs(cfg.Compression)
	if err != nil {
		return nil, err
	}
	s := &Sink{cfg: cfg, log: cfg.Logger, topics: map[string]*topicState{}}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.TopicExpr != "" {
		if s.topicExpr, err = exprop.Compile(cfg.TopicExpr); err != nil {
			return nil, fmt.Errorf("topic_expr: %w", err)
		}
	}
	if cfg.Key != "" || cfg.Value != "" || len(cfg.Headers) > 0 {
		if s.mapper, err = exprop.Map(cfg.Key, cfg.Value, cfg.Headers); err != nil {
			return nil, err
		}
	}
	opts := s.producerOpts(codec)
	if cfg.ClientOpts != nil {
		extra, err := cfg.ClientOpts()
		if err != nil {
			return nil, err
		}
		opts = append(opts, extra...)
	}
	opts = append(opts, kgo.SeedBrokers(cfg.Brokers...))
	if s.cl, err = kgo.NewClient(opts...); err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	s.adm = kadm.NewClient(s.cl)
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := kafkaclient.Ping(sctx, s.cl, startTimeout); err != nil {
		s.cl.Close()
		return nil, fmt.Errorf("cannot reach kafka brokers %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	if cfg.Topic != "" {
		if err := s.ensureTopic(sctx, cfg.Topic); err != nil {
			s.cl.Close()
			return nil, fmt.Errorf("topic: %w", err)
		}
	}
	return s, nil
}

// producerOpts are the sink's producer options, for its own client and,
// with exactly_once, for the source's transactional client.
func (s *Sink) producerOpts(codec []kgo.CompressionCodec) []kgo.Opt {
	return []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()), // and idempotent writes, franz-go's default
		kgo.ProducerBatchCompression(codec...),
		// The writer batches: a request goes out as soon as the previous
		// one of its partition is answered, without waiting for more.
		kgo.ProducerLinger(0),
		// Retriable errors are retried by the client for as long as the
		// request's context lasts (request_timeout), then reported to the
		// writer. No retry limit: franz-go's idempotent producer stalls
		// the partition when one is reached.
		kgo.ProducerBatchMaxBytesFn(s.batchMaxBytes),
	}
}

// batchMaxBytes is the largest batch franz-go builds for topic: the
// topic's max.message.bytes when the sink read it, so that a record too
// large for the topic fails alone, before it is sent.
func (s *Sink) batchMaxBytes(topic string) int32 {
	s.mu.Lock()
	t, ok := s.topics[topic]
	s.mu.Unlock()
	if ok {
		select {
		case <-t.ready:
			if t.maxBytes > 0 {
				return t.maxBytes
			}
		default:
		}
	}
	return defaultBatchMaxBytes
}

// ensureTopic returns nil once topic is known to exist (created when
// CreateTopic says so), a *sinks.ConfigError when it is missing or may
// not be used, or another error (retryable) when the brokers did not say.
// The first answer of each topic is kept, except for retryable errors.
func (s *Sink) ensureTopic(ctx context.Context, topic string) error {
	s.mu.Lock()
	t, ok := s.topics[topic]
	if ok {
		s.mu.Unlock()
		select {
		case <-t.ready:
			return t.err
		case <-ctx.Done():
			return fmt.Errorf("look up topic %s: %w", topic, ctx.Err())
		}
	}
	t = &topicState{ready: make(chan struct{})}
	s.topics[topic] = t
	s.mu.Unlock()

	t.maxBytes, t.err = s.lookUp(ctx, topic)
	if t.err != nil && sinks.Classify(t.err) != sinks.Misconfigured {
		s.forget(topic, t) // ask again next time
	}
	close(t.ready)
	return t.err
}

// forget drops what the sink knew of topic, if it is still t.
func (s *Sink) forget(topic string, t *topicState) {
	s.mu.Lock()
	if s.topics[topic] == t {
		delete(s.topics, topic)
	}
	s.mu.Unlock()
}

// lookUp checks that topic exists, creating it if asked to, and reads its
// max.message.bytes (0 when it cannot).
func (s *Sink) lookUp(ctx context.Context, topic string) (int32, error) {
	details, err := s.adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("look up topic %s: %w", topic, err)
	}
	d, ok := details[topic]
	terr := d.Err
	if !ok {
		terr = kerr.UnknownTopicOrPartition
	}
	switch {
	case errors.Is(terr, kerr.UnknownTopicOrPartition):
		if !s.cfg.CreateTopic {
			return 0, sinks.AsConfigError(fmt.Errorf("topic %s does not exist on %s (create it, or set create_topic: true)",
				topic, strings.Join(s.cfg.Brokers, ",")))
		}
		resp, err := s.adm.CreateTopic(ctx, int32(s.cfg.Partitions), -1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		switch {
		case err == nil:
			s.log.Info("kafka sink: created topic", "topic", topic, "partitions", s.cfg.Partitions)
		case errors.Is(err, kerr.TopicAlreadyExists):
		case isAuthError(err), errors.Is(err, kerr.PolicyViolation), errors.Is(err, kerr.InvalidReplicationFactor), errors.Is(err, kerr.InvalidPartitions):
			return 0, sinks.AsConfigError(fmt.Errorf("create topic %s: %w", topic, err))
		default:
			return 0, fmt.Errorf("create topic %s: %w", topic, err)
		}
	case isAuthError(terr):
		return 0, sinks.AsConfigError(fmt.Errorf("topic %s: %w", topic, terr))
	case errors.Is(terr, kerr.InvalidTopicException):
		return 0, sinks.AsFatal(fmt.Errorf("topic %s: %w", topic, terr))
	case terr != nil:
		return 0, fmt.Errorf("look up topic %s: %w", topic, terr)
	}
	return s.maxMessageBytes(ctx, topic), nil
}

// maxMessageBytes reads the topic's max.message.bytes; 0 (the default
// batch size) when the broker does not say, as when the client may not
// describe configs.
func (s *Sink) maxMessageBytes(ctx context.Context, topic string) int32 {
	rcs, err := s.adm.DescribeTopicConfigs(ctx, topic)
	if err == nil {
		var rc kadm.ResourceConfig
		if rc, err = rcs.On(topic, nil); err == nil {
			err = rc.Err
		}
		if err == nil {
			for _, c := range rc.Configs {
				if c.Key != "max.message.bytes" || c.Value == nil {
					continue
				}
				n, perr := strconv.ParseInt(*c.Value, 10, 32)
				if perr == nil && n >= 512 {
					return int32(min(n, 1<<30))
				}
			}
			err = errors.New("no max.message.bytes")
		}
	}
	s.log.Warn("kafka sink: cannot read the topic's max.message.bytes; batches stay under the default",
		"topic", topic, "default", defaultBatchMaxBytes, "err", err)
	return 0
}

// WriteBatch produces batch and waits until every record is acknowledged
// by all in-sync replicas, failed, or ctx ends. It returns nil when every
// record was written; a *sinks.BatchError naming the others (see
// classify); ctx's error, wrapped, when ctx ended before any record was
// acknowledged; ErrClosed after Close. Records still in flight when ctx
// ends may be written later (at-least-once). It does not keep batch; the
// produced records share the bytes of its keys, values and headers, which
// no stage modifies.
func (s *Sink) WriteBatch(ctx context.Context, batch []pipeline.Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kafka sink: %w", err)
	}
	if s.closed.Load() {
		return ErrClosed
	}
	if len(batch) == 0 {
		return nil
	}
	out := make([]kgo.Record, len(batch))
	res := &results{errs: make([]error, len(batch)), done: make([]bool, len(batch)), all: make(chan struct{})}
	prep := make([]error, len(batch)) // classified failures before producing
	// With tracing on, the W3C trace context of this request's span
	// replaces the records' own (see kafkaclient.TraceHeaders); nil off.
	th := kafkaclient.TraceHeaders(ctx)
	var hs []kgo.RecordHeader
	if s.mapper == nil {
		n := 0
		for i := range batch {
			n += len(batch[i].Headers) + len(th)
		}
		hs = make([]kgo.RecordHeader, 0, n)
	}
	var lastTopic string
	for i := range batch {
		r := batch[i]
		topic := s.cfg.Topic
		if s.topicExpr != nil {
			var err error
			if topic, err = s.topicOf(r); err != nil {
				prep[i] = err
				continue
			}
		}
		if topic != lastTopic {
			// Known topics answer at once; a new one (or one forgotten
			// after it went missing) is looked up, and created if asked.
			if err := s.ensureTopic(ctx, topic); err != nil {
				prep[i] = err
				continue
			}
			lastTopic = topic
		}
		if s.mapper != nil {
			m, err := s.mapper(ctx, r)
			if err != nil {
				prep[i] = sinks.AsFatal(fmt.Errorf("kafka sink: key/value/headers mapping: %w", err))
				continue
			}
			r = m[0]
		}
		o := &out[i]
		o.Topic, o.Key, o.Value, o.Timestamp = topic, r.Key, r.Value, r.Timestamp
		if len(r.Headers) > 0 || th != nil {
			start := len(hs)
			for _, h := range r.Headers {
				if th == nil || !kafkaclient.IsTraceHeader(h.Key) {
					hs = append(hs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
				}
			}
			hs = append(hs, th...)
			o.Headers = hs[start:len(hs):len(hs)]
		}
	}
	for i := range out {
		if prep[i] == nil {
			res.left++
		}
	}
	if res.left == 0 {
		close(res.all)
	}
	cl := s.cl
	if s.cfg.Delivery == ExactlyOnce {
		if cl = s.txcl.Load(); cl == nil {
			return errors.New("kafka sink: exactly_once: the source's transactional client is not there yet")
		}
	}
	for i := range out {
		if prep[i] != nil {
			continue
		}
		cl.Produce(ctx, &out[i], func(_ *kgo.Record, err error) { res.set(i, err) })
	}
	select {
	case <-res.all:
	case <-ctx.Done():
	}
	return s.outcome(ctx, out, prep, res)
}

// topicOf evaluates topic_expr over r; a failure is fatal for r.
func (s *Sink) topicOf(r pipeline.Record) (string, error) {
	v, err := s.topicExpr.Eval(r)
	if err != nil {
		return "", sinks.AsFatal(fmt.Errorf("kafka sink: topic_expr: %w", err))
	}
	var topic string
	switch v := v.(type) {
	case string:
		topic = v
	case []byte:
		topic = string(v)
	default:
		return "", sinks.AsFatal(fmt.Errorf("kafka sink: topic_expr %q gave %T, want a string", s.topicExpr, v))
	}
	if err := kafkaclient.CheckTopic(topic); err != nil {
		return "", sinks.AsFatal(fmt.Errorf("kafka sink: topic_expr %q: %w", s.topicExpr, err))
	}
	return topic, nil
}

// results collects the promises of one WriteBatch.
type results struct {
	mu     sync.Mutex
	errs   []error // guarded by mu
	done   []bool  // guarded by mu
	left   int     // guarded by mu once producing started
	gaveUp bool    // guarded by mu: WriteBatch returned; later promises are ignored
	all    chan struct{}
}

func (r *results) set(i int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gaveUp {
		return
	}
	r.errs[i], r.done[i] = err, true
	if r.left--; r.left == 0 {
		close(r.all)
	}
}

// outcome turns the promises' errors into WriteBatch's result.
func (s *Sink) outcome(ctx context.Context, out []kgo.Record, prep []error, res *results) error {
	res.mu.Lock()
	res.gaveUp = true
	raw := res.errs
	for i := range raw {
		if prep[i] == nil && !res.done[i] {
			raw[i] = ctx.Err() // still in flight: it may land later
		}
	}
	res.mu.Unlock()
	if s.cfg.Delivery == ExactlyOnce {
		s.noteTxnFailures(out, prep, raw)
	}

	// A fatal answer shared by several records is the broker's verdict on
	// the batch they formed (franz-go hands each record of a failed batch
	// the same error value): only sending them apart says which are bad.
	shared := map[error]int{}
	for i, err := range raw {
		if prep[i] == nil && err != nil && batchFatal(err) {
			shared[err]++
		}
	}
	type key struct {
		err   error
		topic string
	}
	wrapped := map[key]error{} // one value per answer, as the writer groups them
	var failed []sinks.EntryError
	delivered := 0
	for i, err := range raw {
		if prep[i] != nil {
			failed = append(failed, sinks.EntryError{Index: i, Err: prep[i]})
			continue
		}
		if err == nil {
			delivered++
			continue
		}
		k := key{err, out[i].Topic}
		if !hashable(err) {
			failed = append(failed, sinks.EntryError{Index: i, Err: s.classify(err, out[i].Topic, false)})
			continue
		}
		w, ok := wrapped[k]
		if !ok {
			w = s.classify(err, out[i].Topic, shared[err] > 1)
			wrapped[k] = w
		}
		failed = append(failed, sinks.EntryError{Index: i, Err: w})
	}
	switch {
	case len(failed) == 0:
		return nil
	case delivered == 0 && ctx.Err() != nil:
		return fmt.Errorf("kafka sink: %w", ctx.Err())
	}
	return &sinks.BatchError{Failed: failed}
}

// classify wraps a produce error of a record for topic with its class:
//   - the client may not write (topic or cluster authorization, SASL), or
//     the topic does not exist and create_topic is off: a configuration
//     fault that stops the job (*sinks.ConfigError);
//   - the record cannot be written as it is (MESSAGE_TOO_LARGE, larger
//     than the topic's max.message.bytes before sending, INVALID_RECORD,
//     CORRUPT_MESSAGE, INVALID_TIMESTAMP, an invalid topic name): fatal,
//     dead-lettered; when the answer concerned a batch of several records
//     (shared), a *sinks.RequestError the writer bisects;
//   - anything else (retriable Kafka errors such as NOT_ENOUGH_REPLICAS
//     or REQUEST_TIMED_OUT, timeouts, lost connections, a closed client):
//     retryable.
func (s *Sink) classify(err error, topic string, shared bool) error {
	werr := fmt.Errorf("produce to %s: %w", topic, err)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return werr
	case isAuthError(err):
		return sinks.AsConfigError(werr)
	case isFenced(err):
		return sinks.AsConfigError(fmt.Errorf("produce to %s: fenced: another worker took over this worker's transactional id; this worker stops: %w", topic, err))
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		if s.cfg.CreateTopic {
			s.mu.Lock()
			t := s.topics[topic]
			s.mu.Unlock()
			if t != nil {
				s.forget(topic, t) // deleted since: create it again
			}
			return werr
		}
		return sinks.AsConfigError(fmt.Errorf("produce to %s: the topic does not exist (create it, or set create_topic: true): %w", topic, err))
	case batchFatal(err):
		if shared {
			return sinks.AsRequestError(sinks.AsFatal(werr))
		}
		return sinks.AsFatal(werr)
	}
	return werr
}

// batchFatal reports whether err says that the records cannot be written
// as they are.
func batchFatal(err error) bool {
	for _, e := range []error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord,
		kerr.CorruptMessage, kerr.InvalidTimestamp, kerr.InvalidTopicException} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// isAuthError reports whether err says the client may not do what it
// asked, whatever the records.
func isAuthError(err error) bool {
	for _, e := range []error{kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed,
		kerr.TransactionalIDAuthorizationFailed, kerr.SaslAuthenticationFailed,
		kerr.UnsupportedSaslMechanism, kerr.IllegalSaslState} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// hashable reports whether err can be a map key (franz-go's errors are
// pointers; a struct error holding a slice is not).
func hashable(err error) bool { return reflect.ValueOf(err).Comparable() }

// Close makes later WriteBatch calls fail with ErrClosed and closes the
// client: records not yet acknowledged fail (kgo.ErrClientClosed, retryable)
// and running WriteBatch calls return. The pipeline flushes the writer
// before closing its sink, so nothing is in flight then. Calling it again
// returns nil.
func (s *Sink) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cl.Close()
	})
	return nil
}
