package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/state"
)

func runMain(args ...string) (code int, stdout, stderr string) {
	var out, errb strings.Builder
	code = Main(args, &out, &errb, registry.Builtin())
	return code, out.String(), errb.String()
}

func writePipeline(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSavepointUsageErrors: bad usage exits 2 with a message naming the
// flag, before any broker is contacted (the address is unreachable).
func TestSavepointUsageErrors(t *testing.T) {
	dir := t.TempDir()
	fileSrc := writePipeline(t, fmt.Sprintf("name: f\nsource:\n  file: {path: %s}\nsink:\n  stdout: {}\n", filepath.Join(dir, "in")))
	memory := writePipeline(t, `name: m
brokers: 127.0.0.1:1
source:
  kafka: {topics: [in], group: g}
sink:
  stdout: {}
state: {kind: memory}
`)
	const b = "127.0.0.1:1"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"savepoint"}, "want a subcommand"},
		{[]string{"savepoint", "frob"}, `unknown subcommand "frob"`},
		{[]string{"savepoint", "create", "--job", "j", "--group", "g"}, "-c FILE or --brokers is required"},
		{[]string{"savepoint", "create", "--brokers", b, "--group", "g"}, "--job is required"},
		{[]string{"savepoint", "create", "--brokers", b, "--job", "j"}, "--group is required"},
		{[]string{"savepoint", "create", "--brokers", b, "--job", "j", "--group", "g", "--id", "a b"}, "--id: savepoint id"},
		{[]string{"savepoint", "create", "--brokers", b, "--job", "j", "--group", "g", "--stop", "--stop-timeout", "0s"}, "--stop-timeout must be positive"},
		{[]string{"savepoint", "create", "--brokers", b, "--job", "j", "--group", "g", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"savepoint", "create", "-c", memory, "--stop"}, "--stop: the job's workers keep their state on memory"},
		{[]string{"savepoint", "create", "-c", memory, "--brokers", b}, "-c and --brokers exclude each other"},
		{[]string{"savepoint", "create", "-c", fileSrc}, "the source is file, not kafka"},
		{[]string{"savepoint", "show", "--brokers", b, "--job", "j"}, "want the savepoint ID"},
		{[]string{"savepoint", "show", "a/b", "--brokers", b, "--job", "j"}, "only letters"},
		{[]string{"savepoint", "delete", "--brokers", b, "--job", "j", "x", "y"}, `unexpected argument "y"`},
		{[]string{"savepoint", "list", "--brokers", b, "--job", "j", "extra"}, `unexpected argument "extra"`},
		{[]string{"savepoint", "list", "--brokers", b, "--job", "j", "--stop"}, "flag provided but not defined: -stop"},
		{[]string{"run", "-c", memory, "--from-savepoint", "a", "--from-savepoint-file", "b"}, "--from-savepoint and --from-savepoint-file exclude each other"},
		{[]string{"run", "-c", memory, "--from-savepoint", "a b"}, "--from-savepoint: savepoint id"},
		{[]string{"run", "-c", fileSrc, "--from-savepoint", "a"}, "--from-savepoint: the source is file"},
	} {
		code, _, stderr := runMain(tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	// Asking for help is not an error.
	for _, args := range [][]string{{"savepoint", "-h"}, {"savepoint", "create", "-h"}, {"savepoint", "show", "-h"}} {
		if code, stdout, stderr := runMain(args...); code != 0 || !strings.Contains(stdout+stderr, "savepoint") {
			t.Errorf("%v: exit %d, %s%s", args, code, stdout, stderr)
		}
	}
}

// TestSavepointCommands: create (to the state topic and to a file), list,
// show and delete against a broker, and the errors for an unknown id and a
// group without commits (exit 1).
func TestSavepointCommands(t *testing.T) {
	e, err := broker.Start(broker.Options{Partitions: 2, Topics: []string{"in"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	addrs := strings.Join(e.Addrs(), ",")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: "in", Partition: 0, At: 4, LeaderEpoch: -1})
	offs.Add(kadm.Offset{Topic: "in", Partition: 1, At: 6, LeaderEpoch: -1})
	if err := kadm.NewClient(cl).CommitAllOffsets(ctx, "g", offs); err != nil {
		t.Fatal(err)
	}

	if code, _, stderr := runMain("savepoint", "create", "--brokers", addrs, "--job", "j", "--group", "empty"); code != 1 || !strings.Contains(stderr, "group empty has no committed offsets") {
		t.Errorf("create for a group without commits: exit %d, %s", code, stderr)
	}
	code, stdout, stderr := runMain("savepoint", "create", "--brokers", addrs, "--job", "j", "--group", "g")
	id := strings.TrimSpace(stdout)
	if code != 0 || state.ValidateSavepointID(id) != nil || !strings.Contains(stderr, "2 partitions, 10 records before it") {
		t.Fatalf("create: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	if code, stdout, stderr = runMain("savepoint", "create", "--brokers", addrs, "--job", "j", "--group", "g", "--id", "mine"); code != 0 || stdout != "mine\n" {
		t.Fatalf("create --id: exit %d, %q %s", code, stdout, stderr)
	}
	if code, _, stderr = runMain("savepoint", "create", "--brokers", addrs, "--job", "j", "--group", "g", "--id", "mine"); code != 1 || !strings.Contains(stderr, `already has a savepoint "mine"`) {
		t.Errorf("create of an existing id: exit %d, %s", code, stderr)
	}
	file := filepath.Join(t.TempDir(), "sp.json")
	if code, stdout, stderr = runMain("savepoint", "create", "--brokers", addrs, "--job", "j", "--group", "g", "--file", file); code != 0 {
		t.Fatalf("create --file: exit %d, %s", code, stderr)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if sp, err := state.ParseSavepoint("", b); err != nil || sp.ID != strings.TrimSpace(stdout) || sp.Total() != 10 || sp.Group != "g" || sp.Job != "j" {
		t.Errorf("file: %v %+v", err, sp)
	}

	code, stdout, _ = runMain("savepoint", "list", "--brokers", addrs, "--job", "j")
	if code != 0 || !strings.Contains(stdout, id) || !strings.Contains(stdout, "mine") || strings.Count(stdout, "\n") != 3 {
		t.Errorf("list: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = runMain("savepoint", "list", "--brokers", addrs, "--job", "j", "--json")
	var list []state.Savepoint
	if code != 0 || json.Unmarshal([]byte(stdout), &list) != nil || len(list) != 2 {
		t.Errorf("list --json: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = runMain("savepoint", "show", "mine", "--brokers", addrs, "--job", "j")
	if sp, err := state.ParseSavepoint("", []byte(stdout)); code != 0 || err != nil || sp.ID != "mine" || len(sp.Offsets) != 2 {
		t.Errorf("show: exit %d, %v\n%s", code, err, stdout)
	}
	if code, stdout, _ = runMain("savepoint", "delete", "--brokers", addrs, "--job", "j", "mine"); code != 0 || !strings.Contains(stdout, "savepoint mine deleted") {
		t.Errorf("delete: exit %d %s", code, stdout)
	}
	for _, sub := range []string{"show", "delete"} {
		if code, _, stderr = runMain("savepoint", sub, "mine", "--brokers", addrs, "--job", "j"); code != 1 || !strings.Contains(stderr, `job j has no savepoint "mine"`) {
			t.Errorf("%s of a deleted savepoint: exit %d, %s", sub, code, stderr)
		}
	}
	if code, stdout, _ = runMain("savepoint", "list", "--brokers", addrs, "--job", "other"); code != 0 || !strings.Contains(stdout, "job other has no savepoints") {
		t.Errorf("list of another job: exit %d %s", code, stdout)
	}
}
