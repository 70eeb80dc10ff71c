package kafkaclient

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The W3C trace context headers (https://www.w3.org/TR/trace-context/) a
// record carries to say which span produced it.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// IsTraceHeader reports whether key is one of the W3C trace context
// headers, which TraceHeaders replaces.
func IsTraceHeader(key string) bool { return key == HeaderTraceparent || key == HeaderTracestate }

// TraceHeaders returns the W3C trace context headers (traceparent, and
// tracestate when set) of the span in ctx, or nil when ctx holds no valid
// span context: with tracing off it costs one context lookup. A producer
// writes them in place of a record's own trace headers, so that whoever
// consumes the record links to the span that wrote it. The headers'
// values may be shared by many records; nobody modifies them.
func TraceHeaders(ctx context.Context) []kgo.RecordHeader {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	hs := []kgo.RecordHeader{{Key: HeaderTraceparent, Value: []byte(c[HeaderTraceparent])}}
	if ts := c[HeaderTracestate]; ts != "" {
		hs = append(hs, kgo.RecordHeader{Key: HeaderTracestate, Value: []byte(ts)})
	}
	return hs
}
