package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	pgsink "github.com/spillway-io/spillway/sinks/postgres"
	"github.com/spillway-io/spillway/sources/kafka"
)

// PostgresOptions is what RunPostgres measures Spillway with.
type PostgresOptions struct {
	DSN      string // the database; required
	Mode     string // the sink's mode; default copy
	Delivery string // the sink's delivery; default at_least_once
}

// pgColumns are the columns both contenders fill, the same way: the
// record's origin, key and value (a jsonb the server parses).
var pgColumns = []string{"topic", "part", "off", "key", "doc"}

// RunPostgres measures Kafka → PostgreSQL: Spillway (Kafka source → writer
// → PostgreSQL sink, commit after the transaction) against a raw loop of
// one franz-go group consumer and one pgx connection (poll, CopyFrom the
// poll's rows in pgx's binary format, commit the poll's offsets) on the
// same input topic, in alternating rounds, each contender writing a fresh
// table (topic text, part integer, off bigint, key text, doc jsonb) that is
// dropped after its round. In Result, RawRate is the loop's rate and
// SpillwayRate the pipeline's.
func RunPostgres(ctx context.Context, o Options, po PostgresOptions) (Result, error) {
	o.applyDefaults(200_000)
	if po.Mode == "" {
		po.Mode = pgsink.ModeCopy
	}
	if po.Delivery == "" {
		po.Delivery = pgsink.AtLeastOnce
	}
	pool, err := pgxpool.New(ctx, po.DSN)
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()
	addrs, prefix, in, cleanup, err := inputTopic(ctx, o, "-in")
	if err != nil {
		return Result{}, err
	}
	defer cleanup()
	res := Result{Records: o.Records, Baseline: "raw_pgx_copy"}
	table := func(who string, i int) (string, error) {
		name := fmt.Sprintf("spillway_bench_%d_%s_%d", os.Getpid(), who, i)
		_, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+name+", "+name+"_offsets; CREATE TABLE "+name+" (topic text, part integer, off bigint, key text, doc jsonb)")
		return name, err
	}
	drop := func(name string) {
		_, _ = pool.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS "+name+", "+name+"_offsets")
	}
	for i := range o.Rounds {
		name, err := table("raw", i)
		if err != nil {
			return res, err
		}
		runtime.GC()
		r, err := RawCopy(ctx, addrs, in, fmt.Sprintf("%s-raw-%d", prefix, i), pool, name, o.Records)
		drop(name)
		if err != nil {
			return res, fmt.Errorf("raw copy: %w", err)
		}
		res.RawRates = append(res.RawRates, r)

		if name, err = table("spillway", i); err != nil {
			return res, err
		}
		runtime.GC()
		s, err := postgresPipeline(ctx, addrs, in, fmt.Sprintf("%s-spillway-%d", prefix, i), name, o, po)
		drop(name)
		if err != nil {
			return res, fmt.Errorf("pipeline: %w", err)
		}
		res.SpillwayRates = append(res.SpillwayRates, s)
		fmt.Fprintf(o.Log, "round %d: raw copy %.0f rec/s, spillway %.0f rec/s\n", i+1, r, s)
	}
	res.RawRate, res.SpillwayRate = median(res.RawRates), median(res.SpillwayRates)
	if res.RawRate > 0 {
		res.Ratio = res.SpillwayRate / res.RawRate
	}
	return res, nil
}

// RawCopy writes n records of topic into table with one group consumer
// and one connection of pool: poll, CopyFrom the poll's rows (topic,
// partition, offset, key, value), commit the poll's offsets. It returns
// records/s, timed from before the group join to the last commit.
func RawCopy(ctx context.Context, brokers []string, topic, group string, pool *pgxpool.Pool, table string, n int) (float64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	start := time.Now()
	done := 0
	var rows [][]any
	for done < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		rows = rows[:0]
		fs.EachRecord(func(r *kgo.Record) {
			rows = append(rows, []any{r.Topic, r.Partition, r.Offset, string(r.Key), string(r.Value)})
		})
		if len(rows) == 0 {
			continue
		}
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{table}, pgColumns, pgx.CopyFromRows(rows)); err != nil {
			return 0, err
		}
		done += len(rows)
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// postgresPipeline runs in → PostgreSQL sink → table as spillway run
// builds it until n records are written, and returns records/s.
func postgresPipeline(ctx context.Context, brokers []string, in, group, table string, o Options, po PostgresOptions) (float64, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exprs := []string{"topic", "partition", "offset", "key", "value"}
	var cols []pgsink.Column
	for i, c := range pgColumns {
		cols = append(cols, pgsink.Column{Name: c, Expr: exprs[i]})
	}
	cfg := &config.Pipeline{
		Name:    group,
		Brokers: brokers,
		Source:  config.Source{Kind: "kafka", Config: &kafka.Config{Topics: []string{in}, Group: group}},
		Sink: config.Sink{Kind: "postgres", Config: &pgsink.Config{DSN: pgsink.DSN(po.DSN), Table: table, Columns: cols,
			Mode: po.Mode, Delivery: po.Delivery, OffsetsTable: table + "_offsets"}},
		Log: config.Log{KafkaLevel: "error"},
	}
	cfg.Sink.Writer = o.Writer
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	j, err := job.Build(rctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return 0, err
	}
	return measure(ctx, rctx, cancel, j, o.Records)
}
