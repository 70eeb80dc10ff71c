// Package pgtest gives tests the PostgreSQL server named by
// SPILLWAY_TEST_POSTGRES (a DSN, e.g. the one integration/postgres/pg.sh
// start prints). Without it a test skips and says which variable enables it;
// with SPILLWAY_REQUIRE_POSTGRES=1 (set by CI) it fails instead, so CI cannot
// pass by skipping.
package pgtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// EnvDSN names the variable holding the DSN of the test server.
	EnvDSN = "SPILLWAY_TEST_POSTGRES"
	// EnvRequire names the variable that, set to 1, turns a missing
	// server into a test failure.
	EnvRequire = "SPILLWAY_REQUIRE_POSTGRES"
)

// DSN returns the DSN of the test server, or ends t: it skips when
// EnvDSN is empty, and fails when EnvRequire is 1 too.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		msg := "needs PostgreSQL: set " + EnvDSN + "=postgres://user:password@host:port/db (integration/postgres/pg.sh start runs one and prints it)"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s is empty but %s=1: %s", EnvDSN, EnvRequire, msg)
		}
		t.Skip(msg)
	}
	return dsn
}

// Connect opens a connection to the test server (see DSN), closed when t
// ends; it fails t if the server does not answer within 10 seconds.
func Connect(t testing.TB) *pgx.Conn {
	t.Helper()
	dsn := DSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", EnvDSN, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
