package pgsink

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spillway-io/spillway/sinks"
)

// TestEffectivelyOnceReplay writes batches again, as a worker does after
// a crash (from the last Kafka commit) or the writer after an unanswered
// commit: records at or below their partition's stored offset are not
// written again, the rest of an overlapping batch is, and StoredOffsets
// gives the highest offset written per partition.
func TestEffectivelyOnceReplay(t *testing.T) {
	d := newDB(t)
	for _, mode := range []string{ModeInsert, ModeCopy, ModeUpsert} {
		t.Run(mode, func(t *testing.T) {
			table := d.table(t, "once")
			// No unique index on id for insert and copy: a duplicate
			// would be stored, not refused.
			d.exec(t, "CREATE TABLE "+table+" (id bigint, p integer, off bigint)")
			cfg := Config{Table: table, Mode: mode, Delivery: EffectivelyOnce, OffsetsTable: table + "_offsets", OffsetsGroup: "g1",
				Columns: []Column{{Name: "id", Expr: "json.id"}, {Name: "p", Expr: "partition"}, {Name: "off", Expr: "offset"}}}
			if mode == ModeUpsert {
				d.exec(t, "ALTER TABLE "+table+" ADD PRIMARY KEY (id)")
				cfg.KeyColumns = []string{"id"}
			}
			s := d.sink(t, cfg)
			p0, p1 := recs(0, 100, 0), recs(1000, 50, 1)
			mustWrite(t, s, append(slices.Clone(p0[:60]), p1[:20]...))
			mustWrite(t, s, append(slices.Clone(p0[:60]), p1[:20]...))      // the same batch again
			mustWrite(t, s, append(slices.Clone(p1[10:50]), p0[40:100]...)) // overlapping
			mustWrite(t, s, p0)                                             // all of p0 again
			if all, distinct := d.count(t, table, "id"); all != 150 || distinct != 150 {
				t.Fatalf("count(*), count(DISTINCT id) = %d, %d, want 150, 150", all, distinct)
			}
			for _, tc := range []struct {
				group, topic string
				want         map[int32]int64
			}{
				{"g1", "orders", map[int32]int64{0: 99, 1: 1049}},
				{"g1", "other", map[int32]int64{}},
				{"g2", "orders", map[int32]int64{}},
			} {
				got, err := s.StoredOffsets(t.Context(), tc.group, tc.topic)
				if err != nil || !maps.Equal(got, tc.want) {
					t.Fatalf("StoredOffsets(%s, %s) = %v, %v; want %v", tc.group, tc.topic, got, err, tc.want)
				}
			}
			// Another group's rows are its own.
			cfg2 := cfg
			cfg2.OffsetsGroup = "g2"
			mustWrite(t, d.sink(t, cfg2), recs(5000, 3, 0))
			if got, _ := s.StoredOffsets(t.Context(), "g1", "orders"); got[0] != 99 {
				t.Fatalf("g1's offset of partition 0 moved to %d by g2", got[0])
			}
		})
	}
}

// TestEffectivelyOnceZombie: two sinks (a worker that lost its partitions
// but still writes, and their new owner) write overlapping batches of the
// same partitions at the same time: every row is stored once.
func TestEffectivelyOnceZombie(t *testing.T) {
	d := newDB(t)
	table := d.table(t, "zombie")
	d.exec(t, "CREATE TABLE "+table+" (id bigint, p integer, off bigint)")
	cfg := Config{Table: table, Delivery: EffectivelyOnce, OffsetsTable: table + "_offsets", OffsetsGroup: "g",
		Columns: []Column{{Name: "id", Expr: "json.id"}, {Name: "p", Expr: "partition"}, {Name: "off", Expr: "offset"}}}
	const parts, per, size = 4, 2000, 100
	var wg sync.WaitGroup
	errs := make(chan error, 2*parts)
	for range 2 {
		s := d.sink(t, cfg)
		for p := range int32(parts) {
			wg.Go(func() {
				all := recs(int(p)*per, per, p)
				for start := 0; start < per; start += size {
					if err := write(t, s, all[start:start+size]); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if all, distinct := d.count(t, table, "id"); all != parts*per || distinct != parts*per {
		t.Fatalf("count(*), count(DISTINCT id) = %d, %d, want %d each", all, distinct, parts*per)
	}
}

// TestRuntimeErrors: what the database answers mid-run is classified by
// its SQLSTATE: a column dropped under the sink stops the job (a
// configuration fault, nothing dead-lettered); a connection the server
// terminates (admin shutdown) is retried and the next attempt succeeds.
func TestRuntimeErrors(t *testing.T) {
	d := newDB(t)
	t.Run("column dropped", func(t *testing.T) {
		table := d.ordersTable(t)
		s := d.sink(t, Config{Table: table, Columns: ordersColumns()})
		d.exec(t, "ALTER TABLE "+table+" DROP COLUMN paid")
		err := write(t, s, recs(0, 10, 0))
		if c := sinks.Classify(err); c != sinks.Misconfigured || !contains(err.Error(), `column "paid"`, "42703") {
			t.Fatalf("WriteBatch after the column was dropped = %v (class %v), want misconfigured naming the column", err, c)
		}
	})
	t.Run("permission revoked", func(t *testing.T) {
		table := d.ordersTable(t)
		s := d.sink(t, Config{Table: table, Columns: ordersColumns(), Mode: ModeCopy})
		d.exec(t, "REVOKE INSERT ON "+table+" FROM CURRENT_USER")
		err := write(t, s, recs(0, 10, 0))
		if c := sinks.Classify(err); c != sinks.Misconfigured || !contains(err.Error(), "permission denied", "42501") {
			t.Fatalf("WriteBatch without privileges = %v (class %v), want misconfigured", err, c)
		}
	})
	t.Run("connection terminated", func(t *testing.T) {
		table := d.ordersTable(t)
		s := d.sink(t, Config{Table: table, Columns: ordersColumns(), PoolSize: 1})
		mustWrite(t, s, recs(0, 10, 0))
		// The server terminates the pool's one connection while it is
		// idle; the next batch, sent on it at once (the pool checks only
		// connections idle for over a second), fails with 57P01.
		conn, err := s.pool.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		pid := conn.Conn().PgConn().PID()
		conn.Release()
		d.exec(t, "SELECT pg_terminate_backend($1, 5000)", pid)
		err = write(t, s, recs(10, 10, 0))
		if err == nil || sinks.Classify(err) != sinks.Retryable || !contains(err.Error(), "57P01") {
			t.Fatalf("WriteBatch on a terminated connection = %v, want a retryable error with SQLSTATE 57P01", err)
		}
		mustWrite(t, s, recs(10, 10, 0)) // the writer's retry, on a new connection
		if all, _ := d.count(t, table, "id"); all != 20 {
			t.Fatalf("%d rows, want 20", all)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		table := d.ordersTable(t)
		s := d.sink(t, Config{Table: table, Columns: ordersColumns()})
		// Hold a lock the INSERT needs until the request's context ends.
		tx, err := d.conn.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(t.Context())
		if _, err := tx.Exec(t.Context(), "LOCK TABLE "+table); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		err = s.WriteBatch(ctx, recs(0, 5, 0))
		var be *sinks.BatchError
		if err == nil || errors.As(err, &be) || sinks.Classify(err) == sinks.Fatal || !errors.Is(err, ctx.Err()) {
			t.Fatalf("WriteBatch whose context ended = %v, want the context's error, not fatal", err)
		}
	})
}

// TestKindOf: the classes by SQLSTATE.
func TestKindOf(t *testing.T) {
	for code, want := range map[string]kind{
		"22P02": kindData, "22003": kindData, "23505": kindData, "23514": kindData, "23502": kindData, "21000": kindData, "P0001": kindData,
		"42P01": kindConfig, "42703": kindConfig, "42501": kindConfig, "28P01": kindConfig, "3D000": kindConfig,
		"40001": kindRetry, "40P01": kindRetry, "57P01": kindRetry, "08006": kindRetry, "XX000": kindRetry, "25006": kindRetry,
		"53300": kindThrottle, "57P03": kindThrottle,
	} {
		if got := kindOf(pgError(code)); got != want {
			t.Errorf("kindOf(SQLSTATE %s) = %d, want %d", code, got, want)
		}
	}
	if got := kindOf(errors.New("connection reset")); got != kindRetry {
		t.Errorf("a network error is %d, want retry", got)
	}
}

func pgError(code string) error {
	return fmt.Errorf("exec: %w", &pgconn.PgError{Code: code, Message: "m"})
}
