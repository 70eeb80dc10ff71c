package bench

import (
	"context"
	"testing"
	"time"

	"github.com/spillway-io/spillway/internal/pgtest"
	pgsink "github.com/spillway-io/spillway/sinks/postgres"
)

// TestRunPostgresSmall checks the Kafka → PostgreSQL harness end to end on
// a small topic: both contenders write every record. It asserts no speed.
func TestRunPostgresSmall(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunPostgres(ctx, Options{Records: 10_000, Rounds: 1}, PostgresOptions{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	if res.RawRate <= 0 || res.SpillwayRate <= 0 {
		t.Fatalf("incomplete result: %+v", res)
	}
	t.Log(res)
}

// BenchmarkKafkaToPostgres reports a raw loop's rate (poll, pgx CopyFrom
// of the poll's rows, commit), Spillway's Kafka → PostgreSQL sink rate and
// their ratio, in the same run on the same data, for each mode and
// delivery. Target: ratio >= 0.7 for at_least_once.
func BenchmarkKafkaToPostgres(b *testing.B) {
	dsn := pgtest.DSN(b)
	for _, po := range []PostgresOptions{
		{Mode: pgsink.ModeCopy, Delivery: pgsink.AtLeastOnce},
		{Mode: pgsink.ModeInsert, Delivery: pgsink.AtLeastOnce},
		{Mode: pgsink.ModeCopy, Delivery: pgsink.EffectivelyOnce},
		{Mode: pgsink.ModeInsert, Delivery: pgsink.EffectivelyOnce},
	} {
		po.DSN = dsn
		b.Run(po.Mode+"/"+po.Delivery, func(b *testing.B) {
			var last Result
			for b.Loop() {
				res, err := RunPostgres(context.Background(), Options{Rounds: 3}, po)
				if err != nil {
					b.Fatal(err)
				}
				last = res
			}
			b.ReportMetric(last.RawRate, "raw_records/s")
			b.ReportMetric(last.SpillwayRate, "spillway_records/s")
			b.ReportMetric(last.Ratio, "ratio")
			b.Log(last)
		})
	}
}
