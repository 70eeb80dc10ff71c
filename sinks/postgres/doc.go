// Package pgsink is the PostgreSQL sink (the sink.postgres section of a
// pipeline file): it writes each batch of the AsyncSink writer to a table,
// one row per record, each column computed by an expression over the
// record, in one transaction per batch. It uses pgx v5 and a pgxpool.
//
// # Statements
//
// A batch is one statement: with mode insert, INSERT INTO t (cols) SELECT
// * FROM unnest($1::type[], ...) with one array parameter per column; with
// upsert the same plus ON CONFLICT (key_columns) DO UPDATE SET every other
// column, after keeping only the last record of each key within the batch
// (ON CONFLICT DO UPDATE may not change a row twice in one statement; an
// earlier record of a key counts as delivered, superseded by the later
// one); with copy, COPY t (cols) FROM STDIN in text format. Every value is
// sent as text and converted by the database, so a value the column cannot
// take is refused with the database's own message.
//
// # Delivery
//
// at_least_once: a record is acknowledged once its batch's transaction
// committed. A batch retried after a commit whose answer was lost, or
// re-read after a crash from the source's last commit, is written again
// (in upsert mode it rewrites the same rows).
//
// effectively_once: the transaction also locks (SELECT ... FOR UPDATE,
// in (topic, partition) order) the row of each source partition of the
// batch in the offsets table (group, topic, partition, offset), skips
// every record whose offset is at or below its partition's stored offset
// (written before: it counts as delivered), writes the rest, and raises
// the stored offset to the highest offset written (GREATEST: it never goes
// back). So a replay after a crash, a retry after a lost commit answer or
// a zombie worker writing a partition that moved never writes a row twice,
// and, the acknowledgement coming after the commit, never loses one. This
// holds when the records of a partition reach the sink in offset order:
// the writer's ordering: partition (the default; the registry refuses the
// others). The Kafka source can resume each partition after its stored
// offset (StoredOffsets) instead of its last Kafka commit, which then only
// saves re-reading; the sink's skip does not depend on it. Records
// dead-lettered are outside the transaction: a record dead-lettered just
// before a crash may be dead-lettered again after it.
//
// # Errors
//
// Each failure is classified by its SQLSTATE (see WriteBatch):
//   - a value or a row the database refuses (classes 22 data exception, 23
//     integrity constraint violation, 21 cardinality, 44, 54, P0 from a
//     trigger): fatal for the row. With insert and upsert the whole
//     statement fails and the writer bisects the batch until the refused
//     row is alone; with copy the server names the line, so that row alone
//     is fatal and the others are sent again at once. The error names the
//     column (or constraint) and carries the database's message;
//   - an expression failing on a record: fatal for that record alone, the
//     rest of the batch is written;
//   - connection loss, serialization failure (40001), deadlock (40P01),
//     admin or crash shutdown (57P01, 57P02) and anything unknown:
//     retryable; too many connections (53300) and cannot connect now
//     (57P03): throttled;
//   - a missing table or column, missing privileges, failed
//     authentication (classes 42, 28, 3D, 3F, 0A): a configuration fault
//     that stops the job.
//
// New checks at start that the table exists (or creates it with
// create_table), that every column exists, that the user may insert (and
// update), and that an index matches the upsert's key columns.
package pgsink
