package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spillway-io/spillway/internal/pgtest"
)

// TestPostgresRoundTrip is the smoke test of the PostgreSQL that CI starts
// (integration/postgres/pg.sh): it writes a row with text, bytes and JSON
// through pgx and reads it back unchanged.
func TestPostgresRoundTrip(t *testing.T) {
	conn := pgtest.Connect(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	table := pgx.Identifier{fmt.Sprintf("smoke_%d_%d", os.Getpid(), seq.Add(1))}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE TABLE "+table+" (topic text, part int, off bigint, key bytea, value jsonb, PRIMARY KEY (topic, part, off))"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP TABLE "+table) })
	key := []byte{0, 1, 0xfe, 0xff}
	value := `{"id": 7, "name": "ünïcode"}`
	if _, err := conn.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, $2, $3, $4, $5)", "orders", 3, int64(1)<<40, key, value); err != nil {
		t.Fatal(err)
	}
	var (
		topic  string
		part   int32
		off    int64
		gotKey []byte
		id     int
		name   string
	)
	err := conn.QueryRow(ctx, "SELECT topic, part, off, key, (value->>'id')::int, value->>'name' FROM "+table).
		Scan(&topic, &part, &off, &gotKey, &id, &name)
	if err != nil {
		t.Fatal(err)
	}
	if topic != "orders" || part != 3 || off != 1<<40 || !bytes.Equal(gotKey, key) || id != 7 || name != "ünïcode" {
		t.Fatalf("read back (%q, %d, %d, %x, %d, %q), want (orders, 3, %d, %x, 7, ünïcode)", topic, part, off, gotKey, id, name, int64(1)<<40, key)
	}
}
