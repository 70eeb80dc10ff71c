// Package http is a sink that delivers each batch as one HTTP request.
// Config holds its settings, with the yaml keys of a pipeline file's
// sink.http section, and owns their defaults (ApplyDefaults) and rules
// (Validate); New builds a Sink from it.
//
// # Request
//
// The body holds one element per record, in batch order: a JSON array
// (format "json", the default, Content-Type application/json) or one element
// per line (format "ndjson", Content-Type application/x-ndjson). An element
// is the record value itself when the value is valid JSON (in ndjson a value
// spanning several lines is compacted onto one), a JSON string otherwise
// (invalid UTF-8 is replaced by U+FFFD), and null for a nil or empty value.
// Keys, headers and origins are not sent.
//
// Every request carries the configured headers, the Authorization header
// from bearer_token or basic_auth, an Idempotency-Key (see IdempotencyKey)
// and, when the first record of the batch has a valid W3C "traceparent"
// header, traceparent (and tracestate) so the receiver joins the trace.
//
// # Responses
//
//   - 2xx: every record was delivered (but see 207 below).
//   - 429 and 503: *sinks.ThrottledError; Retry-After (seconds or an HTTP
//     date) sets RetryAfter, capped at MaxRetryAfter.
//   - 408, 425 and other 5xx, timeouts, refused or reset connections:
//     retryable.
//   - every other status, including 3xx that were not followed: fatal
//     (sinks.AsFatal). The default client follows only 307 and 308, which
//     keep the method and body; a response reached through a redirect that
//     changed the method (a custom client following 302 with GET) is fatal,
//     since the records were not delivered.
//
// Every failure is a *sinks.DetailedError whose Details become dead-letter
// headers: "http.status" and "http.body" (an excerpt of at most
// Config.MaxErrorBody bytes) for a response, "http.error" (timeout, canceled or
// transport) when there was none. Only the excerpt is read; at most 64 KiB
// more are drained so the connection can be reused. A cancelled context
// comes back as an error wrapping the context's error.
//
// # Partial failure
//
// A receiver can accept part of a batch by answering 207 Multi-Status with a
// JSON body listing the entries it refused, by zero-based index into the
// request body:
//
//	{"failed": [{"index": 3, "status": 422, "error": "missing field id"},
//	            {"index": 7, "status": 503, "error": "shard busy"}]}
//
// Every entry not listed was delivered. WriteBatch then returns a
// *sinks.BatchError whose entries are classified by their status as above
// (an absent or invalid status is retryable; 429 and 503 use the
// response's Retry-After) and carry "http.status" and "http.error" details.
// A 207 with an empty body or an empty list means everything was delivered;
// a 207 body that does not parse, or names an index outside the batch, fails
// the whole batch as retryable.
package http
