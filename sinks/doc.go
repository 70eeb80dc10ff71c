// Package sinks holds the AsyncSink writer, which batches records, keeps a
// bounded number of requests in flight, retries failed entries and
// dead-letters the ones that cannot be delivered, and the interface concrete
// sinks (http, file, ...) implement.
//
// Before every request the writer consults its admissions (Admission): the
// circuit breaker (WithBreaker) and the rate-limiting strategy
// (WithStrategy) are two, and a program may add its own (WithAdmission).
package sinks
