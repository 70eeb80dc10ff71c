package deadletter

// The headers a Producer adds to each dead-lettered record, after the
// record's own. Details of the failure (pipeline.Failure.Details; for
// HTTP: status and a body excerpt) are added as HeaderPrefix + detail key,
// sorted by key. With tracing on, the record's W3C traceparent and
// tracestate headers are replaced by those of the span that wrote it to the
// dead-letter topic (see kafkaclient.TraceHeaders).
const (
	HeaderPrefix    = "spillway."                   // prefix of every header below and of each detail
	HeaderClass     = "spillway.error.class"        // pipeline.Failure.Class: operator, fatal, retries_exhausted, oversized
	HeaderMessage   = "spillway.error.message"      // the error, at most 2048 bytes of valid UTF-8
	HeaderTopic     = "spillway.original.topic"     // where the record was read
	HeaderPartition = "spillway.original.partition" // decimal
	HeaderOffset    = "spillway.original.offset"    // decimal
	HeaderAttempts  = "spillway.error.attempts"     // deliveries tried, decimal
	HeaderTime      = "spillway.error.time"         // when it was dead-lettered, RFC 3339 in UTC
)
