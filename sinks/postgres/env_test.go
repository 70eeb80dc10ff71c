package pgsink

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spillway-io/spillway/internal/pgtest"
	"github.com/spillway-io/spillway/pipeline"
)

// The tests that need a database run against the PostgreSQL named by
// SPILLWAY_TEST_POSTGRES (integration/postgres/pg.sh start prints one) and
// skip without it; each test works in tables of its own, dropped at the
// end.

// bound is how long any single step may take before a test fails.
const bound = 30 * time.Second

var seq atomic.Int64

// db is a test's view of the database.
type db struct {
	dsn  string
	conn *pgx.Conn
}

func newDB(t testing.TB) *db {
	t.Helper()
	return &db{dsn: pgtest.DSN(t), conn: pgtest.Connect(t)}
}

// table returns a table name no other test uses, and drops the table (and
// the offsets table of the same base name) when t ends.
func (d *db) table(t testing.TB, base string) string {
	t.Helper()
	name := fmt.Sprintf("%s_%d_%d", base, os.Getpid(), seq.Add(1))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		_, _ = d.conn.Exec(ctx, "DROP TABLE IF EXISTS "+name+", "+name+"_offsets")
	})
	return name
}

// exec runs SQL statements, failing t on an error.
func (d *db) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if _, err := d.conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// count returns count(*) and count(DISTINCT expr) over table.
func (d *db) count(t testing.TB, table, expr string) (all, distinct int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := d.conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT "+expr+") FROM "+table).Scan(&all, &distinct); err != nil {
		t.Fatal(err)
	}
	return all, distinct
}

// strings returns the first column of a query, as text.
func (d *db) strings(t testing.TB, sql string, args ...any) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	rows, err := d.conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var s *string
		err := r.Scan(&s)
		if s == nil {
			return "<null>", err
		}
		return *s, err
	})
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// sink builds a sink for cfg (DSN filled in) and closes it when t ends.
func (d *db) sink(t testing.TB, cfg Config) *Sink {
	t.Helper()
	if cfg.DSN == "" {
		cfg.DSN = DSN(d.dsn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// recs makes records with JSON values {"id": first+i, "name": ..., "amount": ...}
// from partition p of topic "orders", offsets first+i.
func recs(first, n int, p int32) []pipeline.Record {
	out := make([]pipeline.Record, n)
	for i := range out {
		id := first + i
		out[i] = pipeline.Record{
			Key:       fmt.Appendf(nil, "k%d", id%7),
			Value:     fmt.Appendf(nil, `{"id":%d,"name":"n%d","amount":%d.5,"paid":%t}`, id, id, id, id%2 == 0),
			Timestamp: time.Unix(1700000000, 0).Add(time.Duration(id) * time.Second).UTC(),
			Origin:    pipeline.Origin{Topic: "orders", Partition: p, Offset: int64(first + i)},
		}
	}
	return out
}

func write(t testing.TB, s *Sink, batch []pipeline.Record) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	return s.WriteBatch(ctx, batch)
}

func mustWrite(t testing.TB, s *Sink, batch []pipeline.Record) {
	t.Helper()
	if err := write(t, s, batch); err != nil {
		t.Fatalf("WriteBatch of %d records: %v", len(batch), err)
	}
}

// ordersTable creates a table for recs' values: id bigint primary key,
// name text, amount double precision, paid boolean, doc jsonb, key bytea,
// at timestamptz.
func (d *db) ordersTable(t testing.TB) string {
	t.Helper()
	name := d.table(t, "orders")
	d.exec(t, "CREATE TABLE "+name+" (id bigint PRIMARY KEY, name text NOT NULL, amount double precision CHECK (amount >= 0), paid boolean, doc jsonb, key bytea, at timestamptz)")
	return name
}

// ordersColumns maps recs' values onto ordersTable.
func ordersColumns() []Column {
	return []Column{
		{Name: "id", Expr: "json.id"},
		{Name: "name", Expr: "json.name"},
		{Name: "amount", Expr: "json.amount"},
		{Name: "paid", Expr: "json.paid"},
		{Name: "doc", Expr: "value"},
		{Name: "key", Expr: "key"},
		{Name: "at", Expr: "timestamp"},
	}
}

func contains(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
