package pgsink

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-io/spillway/sinks"
)

// TestDatabaseRestart restarts a PostgreSQL of its own in the middle of a
// run (integration/postgres/pg.sh stop, then start, on a private run
// folder and port): the sink's connections end with 57P01 (admin
// shutdown), the writer retries until the server is back, and every record
// is written, once with effectively_once. It needs the server binaries
// and takes seconds (initdb): set SPILLWAY_TEST_PG_RESTART=1 to run it.
func TestDatabaseRestart(t *testing.T) {
	if os.Getenv("SPILLWAY_TEST_PG_RESTART") != "1" {
		t.Skip("restarts a private PostgreSQL with integration/postgres/pg.sh (needs the server binaries, takes seconds); set SPILLWAY_TEST_PG_RESTART=1 to run it")
	}
	run, err := os.MkdirTemp("/tmp", "spillway-pg-restart-")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	pg := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("../../integration/postgres/pg.sh", args...)
		cmd.Env = append(os.Environ(), "SPILLWAY_PG_RUN="+run, "SPILLWAY_PG_PORT="+port)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("pg.sh %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	dsn := pg("start")
	t.Cleanup(func() { pg("stop", "--clean") })
	t.Setenv("SPILLWAY_TEST_POSTGRES", dsn)

	for _, delivery := range []string{AtLeastOnce, EffectivelyOnce} {
		t.Run(delivery, func(t *testing.T) {
			d := newDB(t)
			table := d.table(t, "restart")
			d.exec(t, "CREATE TABLE "+table+" (id bigint, name text, amount double precision, paid boolean, doc jsonb, key bytea, at timestamptz)")
			s := d.sink(t, Config{Table: table, Columns: ordersColumns(), Delivery: delivery,
				OffsetsTable: table + "_offsets", OffsetsGroup: "g"})
			const n = 100_000
			batch := recs(0, n, 0)
			for i := range batch {
				batch[i].Origin.Partition = int32(i % 4)
			}
			restarted := make(chan struct{})
			var finished, midRun atomic.Bool
			go func() {
				defer close(restarted)
				for {
					var all int
					if err := s.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+table).Scan(&all); err == nil && all > 0 {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				pg("stop")
				midRun.Store(!finished.Load())
				time.Sleep(time.Second)
				pg("start")
			}()
			q := &dlq{}
			done, _ := runWriter(t, s, q, sinks.Config{MaxBatchSize: 200, MaxInFlightRequests: 4,
				Retry: sinks.RetryConfig{MaxAttempts: 100, RetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 500 * time.Millisecond}}, batch)
			finished.Store(true)
			<-restarted
			if !midRun.Load() {
				t.Fatal("the writer was done before the server stopped: no restart during the run")
			}
			if len(q.recs) > 0 {
				t.Fatalf("%d records dead-lettered, first: %v", len(q.recs), q.fails[0].Err)
			}
			if len(done) != n {
				t.Fatalf("%d offsets done, want %d", len(done), n)
			}
			d = newDB(t) // the first connection ended with the server
			all, distinct := d.count(t, table, "id")
			t.Logf("%s: %d rows, %d distinct", delivery, all, distinct)
			if distinct != n || delivery == EffectivelyOnce && all != n {
				t.Fatalf("%d rows, %d distinct ids, want %d", all, distinct, n)
			}
		})
	}
}
