package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/pgtest"
	"github.com/spillway-io/spillway/sinks"
	pgsink "github.com/spillway-io/spillway/sinks/postgres"
	"github.com/spillway-io/spillway/sources/kafka"
)

// TestKafkaToPostgres runs Kafka → PostgreSQL sink with effectively_once,
// in insert and copy mode, and counts the table from outside: 20,000
// records in 4 partitions plus 3 whose id is not a number. The 3 are
// dead-lettered alone, naming the column and the database's message; the
// 20,000 rows are there once each (count(*) = count(DISTINCT id)); the
// offsets table holds each partition's last offset; the group is committed
// to the end. Then a second job with a new consumer group (standing for a
// worker that lost its commits: it re-reads everything) but the same
// offsets_group writes nothing: every record is at or below its
// partition's stored offset.
func TestKafkaToPostgres(t *testing.T) {
	conn := pgtest.Connect(t)
	dsn := pgtest.DSN(t)
	for _, mode := range []string{pgsink.ModeInsert, pgsink.ModeCopy} {
		t.Run(mode, func(t *testing.T) {
			const n, bad = 20_000, 3
			c := newCluster(t, 4)
			in, dlq := name(t, "in"), name(t, "dlq")
			c.createTopic(t, in, 4)
			c.createTopic(t, dlq, 1)
			c.produce(t, in, n, 100)
			cl, err := kgo.NewClient(c.clientOpts(t)...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for i := range bad {
				r := &kgo.Record{Topic: in, Key: fmt.Appendf(nil, "bad-%d", i), Value: fmt.Appendf(nil, `{"id":"x%d","amount":1}`, i)}
				if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			cl.Close()

			table := pgx.Identifier{fmt.Sprintf("k2pg_%s_%d_%d", mode, os.Getpid(), seq.Add(1))}.Sanitize()
			offsets := pgx.Identifier{fmt.Sprintf("k2pg_offsets_%s_%d_%d", mode, os.Getpid(), seq.Add(1))}.Sanitize()
			t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+table+", "+offsets) })
			sinkCfg := &pgsink.Config{
				DSN: pgsink.DSN(dsn), Table: table[1 : len(table)-1], Mode: mode, CreateTable: true,
				Delivery: pgsink.EffectivelyOnce, OffsetsTable: offsets[1 : len(offsets)-1], OffsetsGroup: "k2pg",
				Columns: []pgsink.Column{
					{Name: "id", Expr: "json.id", Type: "bigint"},
					{Name: "amount", Expr: "json.amount", Type: "double precision"},
					{Name: "doc", Expr: "value", Type: "jsonb"},
					{Name: "part", Expr: "partition", Type: "bigint"},
					{Name: "off", Expr: "offset", Type: "bigint"},
				},
			}
			run := func(group string) {
				cfg := &config.Pipeline{
					Name:    "k2pg",
					Brokers: c.Addrs,
					Source: config.Source{Kind: "kafka", Config: &kafka.Config{
						Topics: []string{in}, Group: group, CheckpointInterval: 200 * time.Millisecond, ConnectTimeout: 10 * time.Second,
					}},
					Sink: config.Sink{Kind: "postgres", Config: sinkCfg},
					Errors: config.Errors{
						Config:      deadletter.Config{Tolerance: "all", Topic: dlq},
						RetryConfig: sinks.RetryConfig{MaxAttempts: 1000, RetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond},
					},
					ShutdownTimeout: 20 * time.Second,
				}
				cfg.Sink.Writer = sinks.Config{MaxBatchSize: 500, MaxTimeInBuffer: 50 * time.Millisecond, RequestTimeout: 10 * time.Second}
				cfg.ApplyDefaults()
				if err := cfg.Validate(); err != nil {
					t.Fatal(err)
				}
				_, stop := startJob(t, cfg)
				waitFor(t, "all partitions committed to the end", 2*time.Minute, func() bool {
					ok, _ := c.committedEqualsEnd(t, group, in)
					return ok
				})
				if err := stop(); err != nil {
					t.Fatalf("job: %v", err)
				}
			}
			count := func() (all, distinct int) {
				t.Helper()
				if err := conn.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT id) FROM "+table).Scan(&all, &distinct); err != nil {
					t.Fatal(err)
				}
				return all, distinct
			}

			run(name(t, "group"))
			if all, distinct := count(); all != n || distinct != n {
				t.Fatalf("count(*), count(DISTINCT id) = %d, %d, want %d, %d", all, distinct, n, n)
			}
			dead := c.readTopic(t, dlq, bad)
			for _, r := range dead {
				msg := header(r, deadletter.HeaderMessage)
				if header(r, "spillway.postgres.column") != "id" || header(r, "spillway.postgres.sqlstate") != "22P02" ||
					!strings.Contains(msg, `column "id" (bigint): invalid input syntax for type bigint: "x`) {
					t.Errorf("dead-lettered %s: message %q, headers %v", r.Key, msg, r.Headers)
				}
			}
			var stored []string
			rows, err := conn.Query(context.Background(), `SELECT "partition" || ':' || "offset" FROM `+offsets+" WHERE group_id = 'k2pg' ORDER BY 1")
			if err == nil {
				stored, err = pgx.CollectRows(rows, pgx.RowTo[string])
			}
			if err != nil {
				t.Fatal(err)
			}
			endOffsets, err := c.admin(t).ListEndOffsets(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			endOffsets.Each(func(o kadm.ListedOffset) {
				// The last records of a partition may be bad ones, which are
				// dead-lettered, not written: their offsets are not stored.
				var last int64
				if err := conn.QueryRow(context.Background(), "SELECT coalesce(max(off), -1) FROM "+table+" WHERE part = $1", o.Partition).Scan(&last); err != nil {
					t.Fatal(err)
				}
				if last < o.Offset-1-bad {
					t.Errorf("partition %d: last row written at offset %d, end %d", o.Partition, last, o.Offset)
				}
				want = append(want, fmt.Sprintf("%d:%d", o.Partition, last))
			})
			sort.Strings(want)
			if fmt.Sprint(stored) != fmt.Sprint(want) {
				t.Fatalf("stored offsets %v, want the last written per partition %v", stored, want)
			}

			// A replay from the start by a group with no commits.
			run(name(t, "replay"))
			if all, distinct := count(); all != n || distinct != n {
				t.Fatalf("after the replay: count(*), count(DISTINCT id) = %d, %d, want %d, %d", all, distinct, n, n)
			}
		})
	}
}

// TestKillAndRestartPostgres kills a worker writing Kafka → PostgreSQL
// with SIGKILL ten times mid-stream (SPILLWAY_TEST_KILL_LOOPS), restarts
// it each time, and counts the table from outside: with effectively_once
// every record's row is there once (count(*) = count(DISTINCT id) = input),
// although each restart re-reads from the last Kafka commit; with
// at_least_once none is missing and the duplicates are reported.
func TestKillAndRestartPostgres(t *testing.T) {
	conn := pgtest.Connect(t)
	dsn := pgtest.DSN(t)
	const n = 50_000
	loops := killLoops()
	for _, delivery := range []string{pgsink.EffectivelyOnce, pgsink.AtLeastOnce} {
		t.Run(delivery, func(t *testing.T) {
			c := newCluster(t, 4)
			topic, group := name(t, "topic"), name(t, "group")
			c.createTopic(t, topic, 4)
			c.produce(t, topic, n, 100)
			table := fmt.Sprintf("kill_%d_%d", os.Getpid(), seq.Add(1))
			t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+table+", "+table+"_offsets") })
			cfg := writeConfig(t, fmt.Sprintf(`
name: kill-test-pg
brokers: %q
source:
  kafka:
    topics: [%s]
    group: %s
    checkpoint_interval: 100ms
    session_timeout: 6s
    instance_id: kill-test-pg-worker
sink:
  postgres:
    dsn: %q
    table: %s
    create_table: true
    columns:
      - {name: id, expr: json.id, type: bigint}
      - {name: doc, expr: value, type: jsonb}
    delivery: %s
    offsets_table: %s_offsets
  writer:
    max_batch_size: 200
    max_in_flight_requests: 4
    max_buffered_requests: 2000
    max_time_in_buffer: 20ms
errors:
  max_attempts: 1000
  retry_backoff: 10ms
  max_retry_backoff: 100ms
log:
  level: warn
`, joinAddrs(c.Addrs), topic, group, dsn, table, delivery, table))
			count := func() (all, distinct int) {
				// Before the first worker created it, the table is empty.
				_ = conn.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT id) FROM "+table).Scan(&all, &distinct)
				return all, distinct
			}
			for round := range loops {
				w := startWorker(t, "run", "-c", cfg, "-summary", "0")
				target := n*round/(loops+1) + rand.IntN(n/(loops+1)) + 1
				waitFor(t, fmt.Sprintf("round %d writing", round), 2*time.Minute, func() bool { _, d := count(); return d >= target })
				if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				w.wait(t, 30*time.Second)
			}
			w := startWorker(t, "run", "-c", cfg, "-summary", "0")
			waitFor(t, "all partitions committed to the end", 3*time.Minute, func() bool {
				ok, _ := c.committedEqualsEnd(t, group, topic)
				return ok
			})
			if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := w.wait(t, time.Minute); code != 0 {
				t.Fatalf("exit code after SIGTERM = %d, want 0", code)
			}
			all, distinct := count()
			t.Logf("%s, %d SIGKILLs: %d rows, %d distinct ids, %d duplicates", delivery, loops, all, distinct, all-distinct)
			if distinct != n {
				t.Fatalf("%d distinct ids, want %d: %d lost", distinct, n, n-distinct)
			}
			if delivery == pgsink.EffectivelyOnce && all != n {
				t.Fatalf("%d rows for %d records: %d duplicates with effectively_once", all, n, all-n)
			}
		})
	}
}
