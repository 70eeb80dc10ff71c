package pgsink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// dlq records what the writer dead-letters.
type dlq struct {
	mu    sync.Mutex
	recs  []pipeline.Record
	fails []pipeline.Failure
}

func (q *dlq) Send(_ context.Context, recs []pipeline.Record, f pipeline.Failure) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range recs {
		q.recs = append(q.recs, r)
		q.fails = append(q.fails, f)
	}
	return nil
}

// acks counts the offsets the writer reports done.
type acks struct {
	mu   sync.Mutex
	done map[int64]int
}

func (a *acks) Ack(offsets []int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, o := range offsets {
		a.done[o]++
	}
}

// runWriter runs the AsyncSink writer over s with q as its dead-letter
// queue, writes batch through it, flushes, and returns how many times each
// offset was reported done, and how many batches the writer split.
func runWriter(t *testing.T, s sinks.Sink, q *dlq, cfg sinks.Config, batch []pipeline.Record) (map[int64]int, int64) {
	t.Helper()
	cfg.ApplyDefaults()
	w, err := sinks.NewWriter(s, cfg, sinks.WithDeadLetter(q), sinks.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*bound)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	a := &acks{done: map[int64]int{}}
	for i := range batch {
		batch[i] = batch[i].WithAcker(a)
	}
	if err := w.Write(ctx, batch); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	cancel()
	if err := <-done; err != nil && ctx.Err() == nil {
		t.Fatalf("writer: %v", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.done, w.Stats().Bisected.Load()
}

// TestBadRowsIsolated: among 300 records, one whose value has the wrong
// type for its column, one that breaks a CHECK constraint, one NULL in a
// NOT NULL column, a text holding a NUL byte and one duplicate primary key are each dead-lettered
// alone with the column (or constraint) and the database's message; the
// 295 others are written, once.
func TestBadRowsIsolated(t *testing.T) {
	d := newDB(t)
	for _, mode := range []string{ModeInsert, ModeCopy} {
		for _, delivery := range []string{AtLeastOnce, EffectivelyOnce} {
			t.Run(mode+"/"+delivery, func(t *testing.T) {
				table := d.ordersTable(t)
				s := d.sink(t, Config{Table: table, Columns: ordersColumns(), Mode: mode, Delivery: delivery,
					OffsetsTable: table + "_offsets", OffsetsGroup: "g"})
				batch := recs(0, 300, 0)
				bad := map[int64][]string{
					17:  {`column "amount" (double precision)`, `invalid input syntax for type double precision: "lots"`, "22P02"},
					101: {`new row for relation`, `violates check constraint`, "23514"},
					120: {`column "name" (text)`, `invalid byte sequence for encoding "UTF8": 0x00`, "22021"},
					202: {`column "name"`, `null value in column "name"`, "23502"},
					250: {`duplicate key value violates unique constraint`, "Key (id)=(249) already exists", "23505"},
				}
				batch[17].Value = []byte(`{"id":17,"name":"n17","amount":"lots"}`)
				batch[101].Value = []byte(`{"id":101,"name":"n101","amount":-1}`)
				batch[120].Value = []byte(`{"id":120,"name":"a\u0000b","amount":1}`)
				batch[202].Value = []byte(`{"id":202,"name":null,"amount":1}`)
				batch[250].Value = []byte(`{"id":249,"name":"dup","amount":1}`)
				q := &dlq{}
				done, split := runWriter(t, s, q, sinks.Config{MaxBatchSize: 100, MaxInFlightRequests: 4}, batch)
				// COPY names the line of the refused row: no splitting.
				if mode == ModeCopy && split != 0 {
					t.Errorf("copy: the writer split %d batches, want 0", split)
				}
				t.Logf("%d batches split", split)
				if len(done) != 300 {
					t.Fatalf("%d offsets done, want 300", len(done))
				}
				for off, n := range done {
					if n != 1 {
						t.Fatalf("offset %d done %d times", off, n)
					}
				}
				var got []int64
				for i, r := range q.recs {
					got = append(got, r.Origin.Offset)
					want := bad[r.Origin.Offset]
					msg := q.fails[i].Err.Error()
					if want == nil || !contains(msg, want...) || q.fails[i].Class != "fatal" {
						t.Errorf("dead-lettered offset %d (%s): %s, want %q", r.Origin.Offset, q.fails[i].Class, msg, want)
					}
					if q.fails[i].Details["postgres.sqlstate"] != want[len(want)-1] {
						t.Errorf("offset %d: details %v", r.Origin.Offset, q.fails[i].Details)
					}
					t.Logf("dead-lettered %d: %s %v", r.Origin.Offset, msg, q.fails[i].Details)
				}
				sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
				if fmt.Sprint(got) != "[17 101 120 202 250]" {
					t.Fatalf("dead-lettered offsets %v, want [17 101 120 202 250]", got)
				}
				if all, distinct := d.count(t, table, "id"); all != 295 || distinct != 295 {
					t.Fatalf("count(*), count(DISTINCT id) = %d, %d, want 295, 295", all, distinct)
				}
			})
		}
	}
}

// TestDatabaseGoesAway: the database refuses connections for a while in
// the middle of a run (a proxy in front of it is cut, as a restart does):
// the writer retries, and every record is written once.
func TestDatabaseGoesAway(t *testing.T) {
	d := newDB(t)
	for _, delivery := range []string{AtLeastOnce, EffectivelyOnce} {
		t.Run(delivery, func(t *testing.T) {
			p := newProxy(t, d.dsn)
			// No primary key: at_least_once may write a row twice when a
			// commit's answer is lost.
			table := d.table(t, "away")
			d.exec(t, "CREATE TABLE "+table+" (id bigint, name text, amount double precision, paid boolean, doc jsonb, key bytea, at timestamptz)")
			s := d.sink(t, Config{DSN: DSN(p.dsn), Table: table, Columns: ordersColumns(), Delivery: delivery,
				OffsetsTable: table + "_offsets", OffsetsGroup: "g"})
			const n = 20_000
			batch := recs(0, n, 0)
			for i := range batch {
				batch[i].Origin.Partition = int32(i % 4)
			}
			q := &dlq{}
			go func() {
				// Cut after the first rows, for 1.5s.
				for {
					if all, _ := d.count(t, table, "id"); all > 0 {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				p.down(1500 * time.Millisecond)
			}()
			done, _ := runWriter(t, s, q, sinks.Config{MaxBatchSize: 200, MaxInFlightRequests: 4,
				Retry: sinks.RetryConfig{MaxAttempts: 100, RetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond}}, batch)
			if len(q.recs) > 0 {
				t.Fatalf("%d records dead-lettered, first: %v", len(q.recs), q.fails[0].Err)
			}
			if len(done) != n {
				t.Fatalf("%d offsets done, want %d", len(done), n)
			}
			if p.cuts.Load() == 0 {
				t.Fatal("the proxy cut no connection: the outage did not happen during the run")
			}
			all, distinct := d.count(t, table, "id")
			t.Logf("%s: %d rows, %d distinct, %d connections cut", delivery, all, distinct, p.cuts.Load())
			if distinct != n || delivery == EffectivelyOnce && all != n {
				t.Fatalf("%d rows, %d distinct ids, want %d", all, distinct, n)
			}
		})
	}
}
