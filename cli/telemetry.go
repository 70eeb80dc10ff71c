package cli

import (
	"context"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/spillway-io/spillway/internal/telemetry"
)

// runTelemetry is what `spillway run` reports through: metrics when the
// ops server serves them, traces when the OTEL_* environment asks.
type runTelemetry struct {
	metrics *telemetry.Metrics   // nil: no ops server, no metrics
	tp      trace.TracerProvider // nil: tracing off
	stopTP  func(context.Context) error
	log     *slog.Logger
}

// startTelemetry builds the meter provider (when metrics is set) and the
// tracer provider (when telemetry.TracingEnabled says so).
func startTelemetry(ctx context.Context, metrics bool, log *slog.Logger) (*runTelemetry, error) {
	t := &runTelemetry{log: log}
	res, err := telemetry.Resource(telemetryVersion())
	if err != nil {
		// A malformed OTEL_RESOURCE_ATTRIBUTES still yields a resource.
		log.Warn("telemetry resource", "err", err)
	}
	if metrics {
		if t.metrics, err = telemetry.NewMetrics(res); err != nil {
			return nil, err
		}
	}
	if telemetry.TracingEnabled(os.Getenv) {
		tp, stop, err := telemetry.NewTracerProvider(ctx, res, os.Getenv)
		if err != nil {
			return nil, usageError{err}
		}
		t.tp, t.stopTP = tp, stop
		log.Info("tracing on: one span per sink request, exported as OTEL_* says")
	}
	return t, nil
}

// shutdown exports the spans not yet sent (bounded) and stops the
// providers.
func (t *runTelemetry) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if t.stopTP != nil {
		if err := t.stopTP(ctx); err != nil {
			t.log.Warn("flushing traces at exit", "err", err)
		}
	}
	if t.metrics != nil {
		_ = t.metrics.Shutdown(ctx)
	}
}

// telemetryVersion is Version, or the module version the binary was built from
// when Version was not stamped.
func telemetryVersion() string { return releaseVersion() }
