package job

import (
	"context"
	"errors"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/state"
)

// clientSource exposes the Kafka source's client, from which the lag of
// the partitions this worker owns is looked up at collection time.
type clientSource interface {
	Client() *kgo.Client
}

// registerMetrics creates the job's observable instruments on mp. They
// read, when mp collects, the counters the pipeline, the writer, the
// source and the strategy keep anyway: nothing is added to the hot path.
// The returned function unregisters them.
func (j *Job) registerMetrics(mp metric.MeterProvider, t *telemetry) (func() error, error) {
	m := mp.Meter(scopeName)
	var errs []error
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	fgauge := func(name, unit, desc string) metric.Float64ObservableGauge {
		g, err := m.Float64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	fcounter := func(name, unit, desc string) metric.Float64ObservableCounter {
		c, err := m.Float64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	var (
		consumed     = counter("messaging.client.consumed.messages", "{message}", "Records the source emitted into the pipeline.")
		delivered    = counter("spillway.records.delivered", "{record}", "Records the sink acknowledged.")
		deadLettered = counter("spillway.records.dead_lettered", "{record}", "Records routed to the dead-letter queue (operator failures, fatal sink answers, exhausted retries, oversized).")
		dropped      = counter("spillway.records.dropped", "{record}", "Records dropped on purpose by an operator (filter).")
		retried      = counter("spillway.records.retried", "{record}", "Record retries scheduled after a retryable or throttled failure.")
		resent       = counter("spillway.records.resent", "{record}", "Records sent again at once: refused only because of other records of their request.")
		abandoned    = counter("spillway.records.abandoned", "{record}", "Records not sent because their partition moved to another worker, which re-reads them.")
		requests     = counter("spillway.sink.requests", "{request}", "Requests sent to the sink.")
		failedReqs   = counter("spillway.sink.requests.failed", "{request}", "Sink requests with at least one failed record.")
		bisected     = counter("spillway.sink.batches.bisected", "{batch}", "Refused batches split in two to find the records that fail alone.")
		inFlight     = gauge("spillway.sink.requests.in_flight", "{request}", "Sink requests in flight.")
		buffered     = gauge("spillway.sink.buffered.records", "{record}", "Records held by the writer, buffered or in flight.")
		bufBytes     = gauge("spillway.sink.buffered.size", "By", "Payload bytes of the records held by the writer.")
		peakBytes    = gauge("spillway.sink.buffered.size.peak", "By", "Highest buffered payload bytes seen.")
		brState      = gauge("spillway.sink.breaker.state", "", "1 for the circuit breaker's current state (closed, half_open, open), 0 for the others; absent without a breaker.")
		brTrans      = counter("spillway.sink.breaker.transitions", "{transition}", "Circuit breaker state changes.")
		brReject     = counter("spillway.sink.breaker.rejections", "{rejection}", "Times due data was held back by the open or half-open breaker.")
		pauses       = counter("spillway.source.fetch.pauses", "{pause}", "Times the source paused fetching because the sink had no credit left.")
		paused       = fcounter("spillway.source.fetch.paused", "s", "Time fetching was paused for credit.")
		parts        = gauge("spillway.source.partitions", "{partition}", "Partitions the group assigned to this worker.")
		stage        = fcounter("spillway.stage.time", "s", "Time each stage (source, sink) spent idle, busy or backpressured; rate() x 1000 is Flink's ms per second.")
		rate         = fgauge("spillway.rate_limit.rate", "1/s", "Current rate limit in spillway.rate_limit.unit per second (adaptive_rate, token_bucket, sliding_window); 0 while unlimited.")
		aimdLimit    = gauge("spillway.rate_limit.in_flight_records", "{record}", "AIMD's current limit: records allowed in flight.")
	)
	lag, err := m.Int64ObservableGauge("spillway.source.lag", metric.WithUnit("{message}"),
		metric.WithDescription("Per partition this worker owns: the end offset minus the group's committed offset."))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	srcAttrs := []attribute.KeyValue{attribute.String("messaging.system", t.system), attribute.String("messaging.operation.name", "poll")}
	if t.group != "" {
		srcAttrs = append(srcAttrs, attribute.String("messaging.consumer.group.name", t.group))
	}
	consumedAttrs := metric.WithAttributeSet(attribute.NewSet(srcAttrs...))
	stageAttrs := map[[2]string]metric.ObserveOption{}
	for _, s := range []string{"source", "sink"} {
		for _, st := range []string{"idle", "busy", "backpressured"} {
			stageAttrs[[2]string{s, st}] = metric.WithAttributeSet(attribute.NewSet(attribute.String("spillway.stage", s), attribute.String("spillway.state", st)))
		}
	}
	breakerStates := []sinks.BreakerState{sinks.BreakerClosed, sinks.BreakerHalfOpen, sinks.BreakerOpen}
	breakerAttrs := map[sinks.BreakerState]metric.ObserveOption{}
	for _, s := range breakerStates {
		name := map[sinks.BreakerState]string{sinks.BreakerClosed: "closed", sinks.BreakerHalfOpen: "half_open", sinks.BreakerOpen: "open"}[s]
		breakerAttrs[s] = metric.WithAttributeSet(attribute.NewSet(attribute.String("spillway.breaker.state", name)))
	}

	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		ps, ws := j.pipe.Stats(), j.writer.Stats()
		o.ObserveInt64(consumed, ps.In.Load(), consumedAttrs)
		o.ObserveInt64(delivered, ws.Delivered.Load())
		o.ObserveInt64(deadLettered, ws.DeadLettered.Load()+ps.DeadLettered.Load())
		o.ObserveInt64(dropped, ps.Dropped.Load())
		o.ObserveInt64(retried, ws.Retried.Load())
		o.ObserveInt64(resent, ws.Resent.Load())
		o.ObserveInt64(abandoned, ws.Abandoned.Load())
		o.ObserveInt64(requests, ws.Requests.Load())
		o.ObserveInt64(failedReqs, ws.FailedRequests.Load())
		o.ObserveInt64(bisected, ws.Bisected.Load())
		o.ObserveInt64(inFlight, ws.InFlightRequests.Load())
		o.ObserveInt64(buffered, ws.Buffered.Load())
		o.ObserveInt64(bufBytes, ws.BufferedBytes.Load())
		o.ObserveInt64(peakBytes, ws.PeakBufferedBytes.Load())
		if cur := j.writer.BreakerState(); cur != sinks.BreakerNone {
			for _, s := range breakerStates {
				v := int64(0)
				if s == cur {
					v = 1
				}
				o.ObserveInt64(brState, v, breakerAttrs[s])
			}
			o.ObserveInt64(brTrans, ws.BreakerTransitions.Load())
			o.ObserveInt64(brReject, ws.BreakerRejections.Load())
		}
		if src, ok := j.src.(pausingSource); ok {
			n, d := src.FlowStats()
			o.ObserveInt64(pauses, n)
			o.ObserveFloat64(paused, d.Seconds())
		}
		if src, ok := j.src.(connectedSource); ok {
			_, n := src.Status()
			o.ObserveInt64(parts, int64(n))
		}
		for s, tt := range map[string]pipeline.TaskTimes{"source": j.pipe.SourceTaskTime(), "sink": j.writer.TaskTime()} {
			o.ObserveFloat64(stage, tt.Idle.Seconds(), stageAttrs[[2]string{s, "idle"}])
			o.ObserveFloat64(stage, tt.Busy.Seconds(), stageAttrs[[2]string{s, "busy"}])
			o.ObserveFloat64(stage, tt.Backpressured.Seconds(), stageAttrs[[2]string{s, "backpressured"}])
		}
		observeLimits(o, j.Strategy, rate, aimdLimit)
		return nil
	}, consumed, delivered, deadLettered, dropped, retried, resent, abandoned, requests, failedReqs, bisected,
		inFlight, buffered, bufBytes, peakBytes, brState, brTrans, brReject, pauses, paused, parts, stage, rate, aimdLimit)
	if err != nil {
		return nil, err
	}
	unregister := []metric.Registration{reg}

	// The lag asks the brokers, so it has a callback of its own: a slow
	// answer delays only it.
	if cs, ok := j.src.(clientSource); ok {
		lreg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
			cl := cs.Client()
			if cl == nil {
				return nil
			}
			l, group, err := groupLag(ctx, cl)
			if err != nil {
				j.log.Debug("consumer lag lookup failed; not reported this time", "err", err)
				return nil
			}
			for topic, ps := range l {
				for p, ml := range ps {
					o.ObserveInt64(lag, ml.Lag, metric.WithAttributes(
						attribute.String("messaging.consumer.group.name", group),
						attribute.String("messaging.destination.name", topic),
						attribute.String("messaging.destination.partition.id", strconv.Itoa(int(p))),
					))
				}
			}
			return nil
		}, lag)
		if err != nil {
			_ = reg.Unregister()
			return nil, err
		}
		unregister = append(unregister, lreg)
	}
	return func() error {
		var errs []error
		for _, r := range unregister {
			errs = append(errs, r.Unregister())
		}
		return errors.Join(errs...)
	}, nil
}

// observeLimits reports the current limits of s (currentLimits).
func observeLimits(o metric.Observer, s backpressure.Strategy, rate metric.Float64ObservableGauge, aimd metric.Int64ObservableGauge) {
	for _, l := range currentLimits(s) {
		if l.Unit == unitInFlight {
			o.ObserveInt64(aimd, int64(l.Value))
			continue
		}
		o.ObserveFloat64(rate, l.Value, metric.WithAttributes(
			attribute.String("spillway.rate_limit.kind", l.Kind), attribute.String("spillway.rate_limit.unit", l.Unit)))
	}
}

// unitInFlight is the unit of AIMD's limit: records in flight.
const unitInFlight = "in_flight"

// currentLimits returns the limits s applies now: rates per second of
// adaptive_rate (0 while unlimited), token_bucket and sliding_window,
// AIMD's records in flight, a multi-tier's global tier's; composites are
// not broken down.
func currentLimits(s backpressure.Strategy) []state.Limit {
	rate := func(kind backpressure.Kind, unit string, v float64) state.Limit {
		return state.Limit{Kind: string(kind), Unit: unit, Value: v}
	}
	var out []state.Limit
	switch v := s.(type) {
	case *backpressure.AdaptiveRate:
		out = append(out, rate(backpressure.KindAdaptiveRate, v.Unit(), v.Rate()))
	case *backpressure.TokenBucket:
		c := v.Rate()
		if c.RecordsPerSecond > 0 {
			out = append(out, rate(backpressure.KindTokenBucket, "records", c.RecordsPerSecond))
		}
		if c.BytesPerSecond > 0 {
			out = append(out, rate(backpressure.KindTokenBucket, "bytes", c.BytesPerSecond))
		}
	case *backpressure.SlidingWindow:
		c := v.Limit()
		if sec := c.Window.Seconds(); sec > 0 {
			if c.Records > 0 {
				out = append(out, rate(backpressure.KindSlidingWindow, "records", float64(c.Records)/sec))
			}
			if c.Bytes > 0 {
				out = append(out, rate(backpressure.KindSlidingWindow, "bytes", float64(c.Bytes)/sec))
			}
		}
	case *backpressure.AIMD:
		out = append(out, rate(backpressure.KindAIMD, unitInFlight, float64(v.Limit())))
	case *backpressure.MultiTier:
		if g := v.Global(); g != nil {
			out = currentLimits(g)
		}
	}
	return out
}
