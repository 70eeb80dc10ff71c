package job

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// scopeName is the instrumentation scope of the job's metrics and spans.
const scopeName = "github.com/spillway-io/spillway"

// WithMeterProvider makes the job report its metrics to mp: observable
// instruments read the counters the job keeps anyway when mp collects
// (on a /metrics scrape), and the sink's requests and the source's
// commits each record their duration and size once. See README
// "Operating Spillway" for the list.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(o *buildOpts) { o.mp = mp } }

// WithTracerProvider makes the job trace with tp: one span per sink
// request and per dead-letter write, linked to the spans that produced
// the records (W3C trace context in their Kafka headers), whose context
// the records the dead-letter queue and the Kafka sink write carry. A
// no-op provider (or none) traces nothing and reads no header.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *buildOpts) { o.tp = tp } }

// telemetry holds a job's synchronous instruments and its tracer.
type telemetry struct {
	tracer trace.Tracer // nil: no tracing
	system string       // messaging.system of the source: its kind
	group  string       // the Kafka source's consumer group, "" for others

	// nil without a meter provider
	reqDuration    metric.Float64Histogram
	reqRecords     metric.Int64Histogram
	reqBytes       metric.Int64Histogram
	commitDuration metric.Float64Histogram
	commitFailures metric.Int64Counter
	outcomes       map[string]metric.MeasurementOption // error.type → attribute set; "" is success
	commitOK       metric.MeasurementOption
}

func newTelemetry(mp metric.MeterProvider, tp trace.TracerProvider, system, group string) (*telemetry, error) {
	t := &telemetry{system: system, group: group}
	if tp != nil {
		if _, off := tp.(noop.TracerProvider); !off {
			t.tracer = tp.Tracer(scopeName)
		}
	}
	if mp == nil {
		return t, nil
	}
	m := mp.Meter(scopeName)
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	t.reqDuration, err = m.Float64Histogram("spillway.sink.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of the sink's requests (one batch each), by error.type when it failed."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30))
	add(err)
	t.reqRecords, err = m.Int64Histogram("spillway.sink.request.records", metric.WithUnit("{record}"),
		metric.WithDescription("Records per sink request."),
		metric.WithExplicitBucketBoundaries(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
	add(err)
	t.reqBytes, err = m.Int64Histogram("spillway.sink.request.size", metric.WithUnit("By"),
		metric.WithDescription("Payload bytes (keys, values, headers) per sink request."),
		metric.WithExplicitBucketBoundaries(1<<10, 4<<10, 16<<10, 64<<10, 256<<10, 1<<20, 4<<20, 16<<20, 64<<20))
	add(err)
	t.commitDuration, err = m.Float64Histogram("messaging.client.operation.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of the Kafka source's offset commits (messaging.operation.name=commit), by error.type when the request failed."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	add(err)
	t.commitFailures, err = m.Int64Counter("spillway.source.commit.failures", metric.WithUnit("{commit}"),
		metric.WithDescription("Offset commit requests that failed (no answer, or an error for the request)."))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	t.outcomes = map[string]metric.MeasurementOption{"": metric.WithAttributeSet(attribute.NewSet())}
	for _, c := range []string{"partial", "canceled", sinks.Retryable.String(), sinks.Throttled.String(), sinks.Fatal.String(), sinks.Misconfigured.String(), sinks.Resend.String()} {
		t.outcomes[c] = metric.WithAttributeSet(attribute.NewSet(attribute.String("error.type", c)))
	}
	t.commitOK = metric.WithAttributeSet(attribute.NewSet(commitAttrs()...))
	return t, nil
}

func commitAttrs(extra ...attribute.KeyValue) []attribute.KeyValue {
	return append([]attribute.KeyValue{
		attribute.String("messaging.system", "kafka"),
		attribute.String("messaging.operation.name", "commit"),
		attribute.String("messaging.operation.type", "settle"),
	}, extra...)
}

// errorType is the low-cardinality error.type of a failed sink request:
// "partial" when only some entries failed, else the class of the error.
func errorType(ctx context.Context, err error) string {
	if err == nil {
		return ""
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return "canceled"
	}
	var be *sinks.BatchError
	if errors.As(err, &be) && len(be.Failed) > 0 {
		return "partial"
	}
	return sinks.Classify(err).String()
}

// ObserveRequest implements sinks.RequestObserver: three histogram
// records per request, nothing per record.
func (t *telemetry) ObserveRequest(ctx context.Context, r sinks.RequestStats) {
	t.reqDuration.Record(ctx, r.Duration.Seconds(), t.outcomes[errorType(ctx, r.Err)])
	t.reqRecords.Record(ctx, int64(r.Records))
	t.reqBytes.Record(ctx, int64(r.Bytes))
}

// tracedSink gives each request of the sink it wraps a span, in the
// context the sink gets (the Kafka sink writes it into the records it
// produces); the writer calls it as it would the sink (see sinks.Sink).
// It reads each record's traceparent header.
type tracedSink struct {
	sinks.Sink
	t    *telemetry
	kind string // the sink's kind, on spans
}

func (s tracedSink) WriteBatch(ctx context.Context, batch []pipeline.Record) error {
	ctx, span := s.t.startProcess(ctx, s.kind, batch)
	err := s.Sink.WriteBatch(ctx, batch)
	endSpan(span, err)
	return err
}

// startProcess starts the span of one sink request: kind consumer, named
// after the source topic of its records ("process orders"), with a link
// to the span that produced each record, as the messaging conventions
// say for a batch.
func (t *telemetry) startProcess(ctx context.Context, sinkKind string, batch []pipeline.Record) (context.Context, trace.Span) {
	links, topic := producerLinks(ctx, batch)
	name := "process"
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", t.system),
		attribute.String("messaging.operation.name", "process"),
		attribute.String("messaging.operation.type", "process"),
		attribute.Int("messaging.batch.message_count", len(batch)),
		attribute.String("spillway.sink.kind", sinkKind),
	}
	if topic != "" {
		name += " " + topic
		attrs = append(attrs, attribute.String("messaging.destination.name", topic))
	}
	if t.group != "" {
		attrs = append(attrs, attribute.String("messaging.consumer.group.name", t.group))
	}
	return t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...), trace.WithAttributes(attrs...))
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		var be *sinks.BatchError
		if errors.As(err, &be) {
			span.SetAttributes(attribute.Int("spillway.failed_records", len(be.Failed)))
		}
	}
	span.End()
}

// maxLinks bounds the links of one span: the SDK keeps 128 by default, so
// reading more headers would be wasted.
const maxLinks = 128

// producerLinks returns a link to each distinct producer span found in the
// records' W3C trace context headers (at most maxLinks), and the topic
// the records came from when they all share one.
func producerLinks(ctx context.Context, recs []pipeline.Record) ([]trace.Link, string) {
	var links []trace.Link
	type id struct {
		t trace.TraceID
		s trace.SpanID
	}
	var seen map[id]struct{}
	topic := ""
	for i := range recs {
		r := &recs[i]
		if i == 0 {
			topic = r.Origin.Topic
		} else if r.Origin.Topic != topic {
			topic = ""
		}
		if len(links) >= maxLinks {
			continue
		}
		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(ctx, headerCarrier(r.Headers)))
		if !sc.IsValid() {
			continue
		}
		k := id{sc.TraceID(), sc.SpanID()}
		if _, dup := seen[k]; dup {
			continue
		}
		if seen == nil {
			seen = map[id]struct{}{}
		}
		seen[k] = struct{}{}
		links = append(links, trace.Link{SpanContext: sc})
	}
	return links, topic
}

// headerCarrier reads W3C trace context from a record's headers.
type headerCarrier []pipeline.Header

func (h headerCarrier) Get(key string) string {
	for i := range h {
		if h[i].Key == key {
			return string(h[i].Value)
		}
	}
	return ""
}

func (h headerCarrier) Set(string, string) {}

func (h headerCarrier) Keys() []string {
	keys := make([]string, len(h))
	for i := range h {
		keys[i] = h[i].Key
	}
	return keys
}

// tracedDeadLetter gives each dead-letter write its own producer span,
// linked to the producers of the failed records; the dead-letter producer
// writes its context into the records' headers.
type tracedDeadLetter struct {
	pipeline.DeadLetter
	tracer trace.Tracer
	topic  string
}

func (d tracedDeadLetter) Send(ctx context.Context, recs []pipeline.Record, f pipeline.Failure) error {
	links, _ := producerLinks(ctx, recs)
	ctx, span := d.tracer.Start(ctx, "send "+d.topic, trace.WithSpanKind(trace.SpanKindProducer), trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.name", "send"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", d.topic),
			attribute.Int("messaging.batch.message_count", len(recs)),
			attribute.String("spillway.error.class", f.Class),
		))
	err := d.DeadLetter.Send(ctx, recs, f)
	endSpan(span, err)
	return err
}

// commitHook measures the offset commits of the clients built with the
// job's Kafka options: in practice the source's, the only one committing.
type commitHook struct{ t *telemetry }

var _ kgo.HookBrokerE2E = commitHook{}

func (h commitHook) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	if key != int16(kmsg.OffsetCommit) {
		return
	}
	ctx := context.Background()
	d := e2e.DurationE2E().Seconds()
	err := e2e.Err()
	if err == nil {
		h.t.commitDuration.Record(ctx, d, h.t.commitOK)
		return
	}
	et := "_OTHER"
	var ke *kerr.Error
	switch {
	case errors.As(err, &ke):
		et = ke.Message
	case errors.Is(err, context.DeadlineExceeded):
		et = "timeout"
	case errors.Is(err, context.Canceled):
		et = "canceled"
	}
	h.t.commitDuration.Record(ctx, d, metric.WithAttributes(commitAttrs(attribute.String("error.type", et))...))
	h.t.commitFailures.Add(ctx, 1, metric.WithAttributes(attribute.String("error.type", et)))
}

// lagTimeout bounds the lag lookup of one collection.
const lagTimeout = 3 * time.Second

// groupLag returns the lag of the partitions cl's group assigned to cl:
// the end offset minus the group's committed offset, per partition. It
// asks the brokers (describe group, fetch offsets, list end offsets).
func groupLag(ctx context.Context, cl *kgo.Client) (kadm.GroupLag, string, error) {
	group, _ := cl.OptValue(kgo.ConsumerGroup).(string)
	member, _ := cl.GroupMetadata()
	if group == "" || member == "" {
		return nil, group, nil
	}
	ctx, cancel := context.WithTimeout(ctx, lagTimeout)
	defer cancel()
	lags, err := kadm.NewClient(cl).Lag(ctx, group)
	if err != nil {
		return nil, group, err
	}
	l, ok := lags[group]
	if !ok {
		return nil, group, nil
	}
	if err := l.Error(); err != nil {
		return nil, group, err
	}
	out := kadm.GroupLag{}
	for t, ps := range l.Lag {
		for p, ml := range ps {
			if ml.Member == nil || ml.Member.MemberID != member || ml.Err != nil {
				continue
			}
			if out[t] == nil {
				out[t] = map[int32]kadm.GroupMemberLag{}
			}
			out[t][p] = ml
		}
	}
	return out, group, nil
}
