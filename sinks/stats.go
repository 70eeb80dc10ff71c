package sinks

import "sync/atomic"

// WriterStats are the writer's live counters, safe for concurrent reads.
type WriterStats struct {
	Delivered          atomic.Int64 // records acknowledged by the sink
	DeadLettered       atomic.Int64 // records sent to the dead-letter queue
	Retried            atomic.Int64 // record retries scheduled
	Bisected           atomic.Int64 // refused batches split in two to find the bad records
	Resent             atomic.Int64 // records sent again at once: refused only for others in their request
	Requests           atomic.Int64 // requests sent
	FailedRequests     atomic.Int64 // requests with at least one failed entry
	Buffered           atomic.Int64 // records buffered or in flight
	BufferedBytes      atomic.Int64 // their bytes (oversized records excluded)
	PeakBufferedBytes  atomic.Int64 // highest BufferedBytes seen
	InFlightRequests   atomic.Int64
	BreakerState       atomic.Int32 // a BreakerState; BreakerNone without a breaker
	BreakerTransitions atomic.Int64
	BreakerRejections  atomic.Int64 // times due data was held back by the breaker
	Abandoned          atomic.Int64 // records not sent because their partition moved (pipeline.Abandoner)
}
