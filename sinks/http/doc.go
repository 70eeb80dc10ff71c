// Package http is a sink that delivers each batch as one HTTP request.
// Config holds its settings, with the yaml keys of a pipeline file's
// sink.http section, and owns their defaults (ApplyDefaults) and rules
// (Validate); New builds a Sink from it.
//
// # Request
//
// The body holds one element per record, in batch order: a JSON array
// (format "json", the default, Content-Type application/json) or one element
// per line (format "ndjson", Content-Type application/x-ndjson). Keys,
// headers and origins are not sent.
//
// # Values
//
// How a value becomes an element is Config.ValueEncoding; bytes are never
// replaced (no U+FFFD). A tombstone (nil value) is null with every
// encoding, or left out with tombstones "drop" (it then counts as
// delivered; see Sink.DroppedTombstones).
//
//   - auto (default): a value that is valid JSON in UTF-8 is embedded as is
//     (in ndjson, one spanning several lines is compacted onto one), other
//     UTF-8 text is a JSON string, an empty value is "". A value that is
//     not valid UTF-8 (binary data, or JSON with raw invalid bytes inside a
//     string) fails alone with binary_values "dead_letter" (default), or is
//     sent as {"$base64":"<standard base64>"} with binary_values "base64".
//     A receiver cannot tell the text "null" from a tombstone, nor such an
//     object from a record that held that very JSON: use base64 when it
//     must.
//   - json: every value must be valid JSON in UTF-8, embedded as is.
//   - string: every value must be valid UTF-8, sent as a JSON string.
//   - base64: every value is a JSON string of its standard base64 encoding
//     (RFC 4648, padded), "" when empty.
//
// A record that fails to encode is not sent: WriteBatch returns a
// *sinks.BatchError naming it, fatal, with the reason ("value is not valid
// UTF-8: byte 0xff at offset 0; ...") and the "http.error" detail
// "value_encoding", and sends the others in one request, whose outcome it
// reports at their batch indexes.
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
//
// # Rejections
//
// Many receivers refuse a whole batch (400, 422) when some of its records
// are bad, and list them in the body: {"error":"schema","bad_ids":[17,42]}.
// With Config.Rejections the sink reads that list (a dotted path into the
// body, to indexes, to values of a field of the records' JSON, or to
// record keys) from an answer classified fatal. When it names at least one
// record of the request and nothing else, WriteBatch returns a
// *sinks.BatchError with those records fatal (each naming how the answer
// named it, with the body excerpt and the "http.status" and "http.body"
// details) and every other record as sinks.Resend: not delivered, to be
// sent again without them. Otherwise the whole request fails as usual.
package http
