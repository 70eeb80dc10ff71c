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
//   - AdaptiveRate: an API that enforces a rate it does not publish, or
//     that changes, and says so with 429 (or 503) and Retry-After: API
//     gateways and most SaaS APIs. Paced sends at a rate that follows what
//     the destination takes (slow start, then a cubic probe around the
//     last throttle, rarer while the capacity holds steady), one request
//     at a time after a pause, batches of at most 50 ms of the rate, and
//     smaller ones when a batch is larger than the destination's burst. The
//     writer uses it, reacting to throttles only, when no strategy is
//     configured.
//   - TokenBucket: the destination has a published rate (requests per
//     second of an API, a Kinesis shard's 1000 records and 1 MB per second).
//     Records/s and bytes/s, each with a burst; built on
//     golang.org/x/time/rate. Configured through New, a burst defaults to
//     one batch, so sends after a quiet spell are not a burst of a second's
//     worth.
//   - SlidingWindow: the destination counts per window ("at most 10 000
//     records per minute") and a token bucket's refill does not match its
//     accounting. Smooth: the previous window's count fades out linearly.
//   - AIMD: a service whose latency grows under load (a database, a queue,
//     a service without a rate limit), whose capacity is unknown or changes,
//     and that says when it is overloaded (throttling, timeouts, failed
//     entries; or, in the latency-aware mode, a rising round-trip time). It
//     limits records in flight rather than a rate: against a destination
//     that answers in microseconds any in-flight limit lets far more than
//     its rate through, so do not use it for a rate-limited API. Flink's
//     default for AsyncSinkWriter.
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
// # Strategies written elsewhere
//
// Composite and MultiTier need more of a member than Strategy: a check that
// charges nothing (Admit), a charge that checks nothing (Take) and a way to
// be woken when a refused request could pass (Watch). Together with
// TryAcquireAt these make a Gate, which every strategy of this package is
// and any strategy written elsewhere can be: the Acquire function gives it
// the blocking loop and a Signal its wake-ups (see the Gate example).
// Package strategytest is the conformance suite every strategy, built in
// or not, passes, alone and inside Composite and MultiTier.
//
// Waiters are not queued: a blocked Acquire sleeps until its strategy says
// the request could pass (a timer) or something changed (a completion, a
// limit change), then tries again, racing any other caller. The writer is
// a single caller; goroutines sharing a strategy through a Limiter should
// expect rough rather than strict FIFO fairness.
//
// # Configuration
//
// Config is the YAML form (a kind plus that kind's fields; a field of
// another kind is an error), with ApplyDefaults and Validate (errors are
// *field.Error with paths relative to the rate_limit section), and New
// builds it for a writer's max_batch_size and max_in_flight_requests, which
// size AIMD's max_limit (ValidateFor checks the limits against it):
//
//	rate_limit: {kind: token_bucket, records_per_second: 5000, bytes_per_second: 5_000_000}
//	rate_limit: {kind: sliding_window, window: 1m, records_per_window: 100000}
//	rate_limit: {kind: aimd, latency_tolerance: 0.5}   # Flink's defaults otherwise
//	rate_limit:
//	  kind: multi_tier
//	  global:    {kind: token_bucket, records_per_second: 50000}
//	  topic:     {kind: token_bucket, records_per_second: 20000}
//	  partition: {kind: aimd}
//	  overrides:
//	    - {topic: orders, partition: 3, limit: {kind: token_bucket, records_per_second: 200}}
//
// Operators use a Limiter, which counts records.
//
// # Cost
//
// TryAcquire from one goroutine (BenchmarkTryAcquire, 2-core AMD EPYC VM,
// beside rate.Limiter.Allow at 74 ns): Unlimited 1 ns, TokenBucket on
// records 77 ns, on records and bytes 134 ns, SlidingWindow 68 ns, AIMD 25
// ns with its Complete, a Composite or MultiTier about the sum of its
// members. A clock read is 43 ns of that on these machines; callers that
// have read the clock already can use the optional TryAcquirerAt ability
// (TokenBucket on records: 32 ns; on both: 88 ns).
package backpressure
