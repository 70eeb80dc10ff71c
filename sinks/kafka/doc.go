// Package kafkasink is the Kafka sink (the sink.kafka section of a
// pipeline file): it produces each batch of the AsyncSink writer to a
// Kafka topic, fixed or chosen per record by an expression, with the
// record's key, value and headers or ones computed by expressions.
//
// Delivery is at-least-once by default: acks=all with franz-go's idempotent
// producer, and the writer acknowledges a record (so the source may commit
// its offset) only once every in-sync replica has it. A batch retried
// after a request timeout, or re-read after a crash, may be written twice.
// Within a batch, and across sequential batches, the records of one key go
// to one partition in order; with several requests in flight and retries
// the writer may reorder batches (sink.writer.max_in_flight_requests: 1
// keeps each partition in order until the writer's ordering modes exist).
// With delivery: exactly_once the sink produces through the Kafka source's
// transactional client instead (txn.go; sources/kafka's Transactions): each
// transaction holds the outputs of the records read in it and commits their
// offsets, so a read_committed reader sees each record's output once.
//
// Each record's outcome is reported on its own (see Sink.WriteBatch): a
// record too large for the topic, or one the broker refuses as invalid, is
// dead-lettered alone; retriable Kafka errors are retried by the writer;
// missing permissions or a missing topic stop the job.
package kafkasink
