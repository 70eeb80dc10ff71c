package job

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/spillway-io/spillway/sinks"
)

// BenchmarkObserveRequest measures what metrics add to one sink request:
// three histogram records, whatever the batch size.
func BenchmarkObserveRequest(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tel, err := newTelemetry(mp, nil, "kafka", "g")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	r := sinks.RequestStats{Records: 500, Bytes: 500 * 110, Duration: 3 * time.Millisecond}
	for b.Loop() {
		tel.ObserveRequest(ctx, r)
	}
}
