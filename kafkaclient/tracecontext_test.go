package kafkaclient

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestTraceHeaders(t *testing.T) {
	if hs := TraceHeaders(context.Background()); hs != nil {
		t.Fatalf("no span: %v, want nil", hs)
	}
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, _ := trace.ParseTraceState("vendor=x")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts})
	hs := TraceHeaders(trace.ContextWithSpanContext(context.Background(), sc))
	if len(hs) != 2 || hs[0].Key != HeaderTraceparent || string(hs[0].Value) != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" ||
		hs[1].Key != HeaderTracestate || string(hs[1].Value) != "vendor=x" {
		t.Fatalf("headers: %q", hs)
	}
	for k, want := range map[string]bool{"traceparent": true, "tracestate": true, "Traceparent": false, "x": false} {
		if IsTraceHeader(k) != want {
			t.Errorf("IsTraceHeader(%q) = %v", k, !want)
		}
	}
}
