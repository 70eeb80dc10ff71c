// Package backpressure decides when the sink writer may send a request:
// rate-limiting strategies after Flink's RateLimitingStrategy (FLIP-242),
// plus a Limiter for operators.
//
// # The contract
//
// A Strategy is consulted before every request. TryAcquire admits a request
// now or refuses it without blocking; Acquire blocks on a context until the
// request is admitted, waking on timers, completions and limit changes,
// never by polling. An admitted request is registered in flight, and its
// outcome (failed entries, throttled, timed out, latency) is reported once
// with Complete. MaxBatchSize tells the writer the largest batch worth
// forming now.
//
// Every concrete strategy also has Flink's method names, for code written
// against the two-step protocol: ShouldBlock (shouldBlock),
// RegisterInFlight (registerInFlightRequest), RegisterCompleted
// (registerCompletedRequest); MaxBatchSize is getMaxBatchSize. Each has a
// runtime setter (TokenBucket.SetRate, SlidingWindow.SetLimit,
// AIMD.SetLimit) that applies at once and wakes blocked Acquire calls.
//
// # Choosing a strategy
//
//   - TokenBucket: the destination has a published rate (requests per
//     second of an API, a Kinesis shard's 1000 records and 1 MB per second).
//     Records/s and bytes/s, each with a burst; built on
//     golang.org/x/time/rate. Bursts after idle periods are allowed up to
//     the burst size.
//   - SlidingWindow: the destination counts per window ("at most 10 000
//     records per minute") and a token bucket's refill does not match its
//     accounting. Smooth: the previous window's count fades out linearly.
//   - AIMD: the destination's capacity is unknown or changes, and it says
//     when it is overloaded (throttling, timeouts, failed entries; or, in
//     the latency-aware mode, a rising round-trip time). It limits records
//     in flight rather than a rate, so it adapts to a sink's speed without
//     configuration; Flink's default for AsyncSinkWriter.
//   - MultiTier: several tenants share one destination: a global budget,
//     split fairly so one topic or one hot partition cannot take all of it.
//     Each tier is any of the above.
//   - Composite: several independent limits must all hold, e.g. a token
//     bucket for the contract rate and AIMD for the current capacity.
//   - Unlimited: no limit; measures what consulting a strategy costs.
//
// Composite and MultiTier acquire all-or-nothing: every strategy is checked
// at one instant and only then are all of them charged, so a refusal from a
// later tier leaves no tokens taken from an earlier one.
//
// # Configuration
//
// Config is the YAML form (kind plus that kind's fields) and New builds it
// for a writer's max_batch_size and max_in_flight_requests. Operators use a
// Limiter, which counts records.
//
// # Cost
//
// TryAcquire of one strategy costs about one clock read and one lock; see
// the benchmarks (BenchmarkTryAcquire) for figures beside rate.Limiter.Allow.
package backpressure
