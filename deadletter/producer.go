package deadletter

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
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
type Producer struct {
	cl    *kgo.Client
	topic string
	now   func() time.Time
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

// Send produces recs with failure headers and waits for the acknowledgement.
// It retries until ctx ends (franz-go retries produce errors internally) and
// then returns ctx's error, even while a produce request is in flight: the
// idempotent producer cannot fail such records, so they may still land in
// the topic later, next to the copies of a later Send of the same originals.
func (d *Producer) Send(ctx context.Context, recs []pipeline.Record, f pipeline.Failure) error {
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
	if len(out) == 0 {
		return nil
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
		d.cl.Produce(ctx, r, promise)
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

// Close closes the producer. Records of a Send that returned an error may
// be dropped.
func (d *Producer) Close() { d.cl.Close() }
