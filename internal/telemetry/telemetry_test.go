package telemetry

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace/noop"
)

func TestTracingEnabled(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x"}, false},
	}
	for _, c := range cases {
		if got := TracingEnabled(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("%v: %v, want %v", c.env, got, c.want)
		}
	}
}

func TestTracingOffIsNoop(t *testing.T) {
	tp, stop, err := NewTracerProvider(context.Background(), nil, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tp.(noop.TracerProvider); !ok {
		t.Errorf("tracing off: %T, want a no-op provider", tp)
	}
	if err := stop(context.Background()); err != nil {
		t.Error(err)
	}
}

// TestMetricsHandler checks the Prometheus translation of names and units.
func TestMetricsHandler(t *testing.T) {
	res, err := Resource("v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMetrics(res)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	meter := m.MeterProvider().Meter("test")
	c, _ := meter.Int64Counter("spillway.records.delivered", metric.WithUnit("{record}"))
	h, _ := meter.Float64Histogram("spillway.sink.request.duration", metric.WithUnit("s"))
	g, _ := meter.Int64Gauge("spillway.sink.buffered.size", metric.WithUnit("By"))
	c.Add(context.Background(), 3)
	h.Record(context.Background(), 0.2)
	g.Record(context.Background(), 1024)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		"spillway_records_delivered_total 3",
		"spillway_sink_request_duration_seconds_count 1",
		"spillway_sink_buffered_size_bytes 1024",
		`service_name="spillway"`, `service_version="v1.2.3"`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}
