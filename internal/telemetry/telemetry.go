// Package telemetry sets up OpenTelemetry for one spillway process: a meter
// provider whose metrics the ops server serves at /metrics in the
// Prometheus text format, and a tracer provider exporting spans over OTLP
// when the standard OTEL_* environment variables ask for it (off
// otherwise). What is measured and traced is the job's business
// (internal/job); this package only builds and shuts down the providers.
// Nothing here is process-wide: each Metrics has its own Prometheus
// registry, and no global provider is set.
package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ServiceName is the service.name of spillway's telemetry unless
// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) says
// otherwise.
const ServiceName = "spillway"

// Resource describes this process: service.name and service.version, then
// whatever OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME add (they win).
func Resource(version string) (*resource.Resource, error) {
	attrs := []resource.Option{resource.WithAttributes(semconv.ServiceName(ServiceName))}
	if version != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceVersion(version)))
	}
	attrs = append(attrs, resource.WithTelemetrySDK(), resource.WithFromEnv())
	return resource.New(context.Background(), attrs...)
}

// Metrics is a meter provider read by a Prometheus exporter on a registry
// of its own. Its methods are safe for concurrent use.
type Metrics struct {
	mp  *sdkmetric.MeterProvider
	reg *prometheus.Registry
}

// NewMetrics returns a meter provider for res whose metrics Handler serves.
// Names are translated as Prometheus expects: dots become underscores,
// the unit is appended (seconds, bytes) and counters end in _total.
// Collection happens on every scrape; nothing runs in between.
func NewMetrics(res *resource.Resource) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	opts := []sdkmetric.Option{sdkmetric.WithReader(exp)}
	if res != nil {
		opts = append(opts, sdkmetric.WithResource(res))
	}
	return &Metrics{mp: sdkmetric.NewMeterProvider(opts...), reg: reg}, nil
}

// MeterProvider is where the job creates its instruments.
func (m *Metrics) MeterProvider() metric.MeterProvider { return m.mp }

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Shutdown stops the provider; later scrapes find nothing.
func (m *Metrics) Shutdown(ctx context.Context) error { return m.mp.Shutdown(ctx) }

// TracingEnabled reports whether the OTEL_* environment (read through
// getenv) asks for traces: OTEL_TRACES_EXPORTER set to anything but
// "none", or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set while OTEL_TRACES_EXPORTER is
// unset; never with OTEL_SDK_DISABLED=true.
func TracingEnabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); e {
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	case "none":
		return false
	default:
		return true
	}
}

// NewTracerProvider returns, when TracingEnabled(getenv), a tracer
// provider for res exporting batches of spans with the exporter the
// OTEL_* environment describes (OTEL_TRACES_EXPORTER: otlp, console;
// OTEL_EXPORTER_OTLP_PROTOCOL, _ENDPOINT, _HEADERS...; sampling by
// OTEL_TRACES_SAMPLER), and its shutdown, which flushes the spans not yet
// exported. Otherwise it returns a no-op provider, on which the job
// traces nothing and reads no header.
func NewTracerProvider(ctx context.Context, res *resource.Resource, getenv func(string) string) (trace.TracerProvider, func(context.Context) error, error) {
	if !TracingEnabled(getenv) {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("traces exporter (OTEL_TRACES_EXPORTER): %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp)}
	if res != nil {
		opts = append(opts, sdktrace.WithResource(res))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	return tp, tp.Shutdown, nil
}
