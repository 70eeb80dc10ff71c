package job_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	"github.com/spillway-io/spillway/kafkaclient"
)

// kgoCarrier reads W3C trace context from a consumed record's headers.
type kgoCarrier []kgo.RecordHeader

func (c kgoCarrier) Get(key string) string {
	for _, h := range c {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
func (c kgoCarrier) Set(string, string) {}
func (c kgoCarrier) Keys() []string     { return nil }

func spanOf(r *kgo.Record) trace.SpanContext {
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), kgoCarrier(r.Headers)))
}

// TestTracesLinkProducers runs Kafka → Kafka with tracing to an in-memory
// exporter. Each input record carries the traceparent of its own producer
// span; one is too large for the sink and is dead-lettered. The job's
// "process in" spans must link to every delivered record's producer span,
// its dead-letter span to the large record's, and the records it writes
// (to the output topic and to the dead-letter topic) must carry the
// context of the span that wrote them instead of the producer's.
func TestTracesLinkProducers(t *testing.T) {
	const n = 20
	emb, err := broker.Start(broker.Options{Partitions: 2, Topics: []string{"in", "out", "dlq"}})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The producers' side: one span per record, its context in the headers.
	producerTP := sdktrace.NewTracerProvider()
	producerTracer := producerTP.Tracer("producer")
	cl, err := kgo.NewClient(kgo.SeedBrokers(emb.Addrs()...), kgo.DefaultProduceTopic("in"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	producers := map[trace.SpanID]int{} // producer span → record id
	const big = n - 1                   // over max_record_bytes: dead-lettered
	for i := range n {
		pctx, span := producerTracer.Start(ctx, "send in", trace.WithSpanKind(trace.SpanKindProducer))
		value := fmt.Sprintf(`{"id":%d}`, i)
		if i == big {
			value = fmt.Sprintf(`{"id":%d,"pad":"%s"}`, i, strings.Repeat("x", 2000))
		}
		r := &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: []byte(value), Headers: append(
			[]kgo.RecordHeader{{Key: "x-origin", Value: []byte("test")}}, kafkaclient.TraceHeaders(pctx)...)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		producers[span.SpanContext().SpanID()] = i
		span.End()
	}

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	yaml := fmt.Sprintf(`name: traced
brokers: %s
source:
  kafka: {topics: [in], group: traced, checkpoint_interval: 100ms}
sink:
  kafka: {topic: out}
  writer: {max_batch_size: 5, max_time_in_buffer: 10ms, max_record_bytes: 1000}
errors:
  tolerance: all
  dead_letter_topic: dlq
`, strings.Join(emb.Addrs(), ","))
	cfg, err := config.Parse("traced.yaml", []byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := job.Build(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), job.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- j.Run(rctx) }()

	consume := func(topic string, want int) []*kgo.Record {
		t.Helper()
		c, err := kgo.NewClient(kgo.SeedBrokers(emb.Addrs()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var out []*kgo.Record
		for len(out) < want {
			fs := c.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("%s: %d of %d records before the deadline", topic, len(out), want)
			}
			out = append(out, fs.Records()...)
		}
		return out
	}
	outRecs := consume("out", n-1)
	dlqRecs := consume("dlq", 1)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("job: %v", err)
	}

	// The job's spans, by kind.
	process := map[trace.SpanID]tracetest.SpanStub{}
	var dlqSpan *tracetest.SpanStub
	linked := map[trace.SpanID]trace.SpanID{} // producer span → job span linking to it
	for _, s := range exp.GetSpans() {
		switch {
		case s.Name == "process in" && s.SpanKind == trace.SpanKindConsumer:
			process[s.SpanContext.SpanID()] = s
		case s.Name == "send dlq" && s.SpanKind == trace.SpanKindProducer:
			dlqSpan = &s
		default:
			t.Errorf("unexpected span %q (%v)", s.Name, s.SpanKind)
			continue
		}
		for _, l := range s.Links {
			if _, ok := producers[l.SpanContext.SpanID()]; !ok {
				t.Errorf("span %q links to %v, not a producer span", s.Name, l.SpanContext.SpanID())
			}
			linked[l.SpanContext.SpanID()] = s.SpanContext.SpanID()
		}
	}
	if len(process) == 0 || dlqSpan == nil {
		t.Fatalf("spans: %d process, dead-letter span %v", len(process), dlqSpan != nil)
	}
	for sid, id := range producers {
		by, ok := linked[sid]
		switch {
		case !ok:
			t.Errorf("record %d: no job span links to its producer span", id)
		case id == big && by != dlqSpan.SpanContext.SpanID():
			t.Errorf("the dead-lettered record's producer is linked from %v, not the dead-letter span", by)
		case id != big:
			if _, ok := process[by]; !ok {
				t.Errorf("record %d's producer is linked from %v, not a process span", id, by)
			}
		}
	}

	// What the job wrote carries the context of the span that wrote it.
	for _, r := range outRecs {
		sc := spanOf(r)
		s, ok := process[sc.SpanID()]
		if !ok {
			t.Errorf("out record %s: traceparent span %v is no process span", r.Key, sc.SpanID())
			continue
		}
		if sc.TraceID() != s.SpanContext.TraceID() {
			t.Errorf("out record %s: trace %v, its span's is %v", r.Key, sc.TraceID(), s.SpanContext.TraceID())
		}
		var id int
		fmt.Sscan(string(r.Key), &id)
		if pid := linked[producerOf(producers, id)]; pid != sc.SpanID() {
			t.Errorf("out record %s was written under span %v, but its producer is linked from %v", r.Key, sc.SpanID(), pid)
		}
		if kgoCarrier(r.Headers).Get("x-origin") != "test" {
			t.Errorf("out record %s lost its other headers: %v", r.Key, r.Headers)
		}
		if c := countKey(r.Headers, kafkaclient.HeaderTraceparent); c != 1 {
			t.Errorf("out record %s has %d traceparent headers", r.Key, c)
		}
	}
	if sc := spanOf(dlqRecs[0]); sc.SpanID() != dlqSpan.SpanContext.SpanID() {
		t.Errorf("dead-lettered record's traceparent span %v, want the dead-letter span %v", sc.SpanID(), dlqSpan.SpanContext.SpanID())
	}
}

func producerOf(producers map[trace.SpanID]int, id int) trace.SpanID {
	for sid, i := range producers {
		if i == id {
			return sid
		}
	}
	return trace.SpanID{}
}

func countKey(hs []kgo.RecordHeader, key string) int {
	n := 0
	for _, h := range hs {
		if h.Key == key {
			n++
		}
	}
	return n
}
