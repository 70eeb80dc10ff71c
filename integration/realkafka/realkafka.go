// Package realkafka runs a real Apache Kafka (KRaft) for tests through the
// kafka.sh script beside this file: one combined broker+controller node, or a
// cluster of three combined nodes (replication factor 3, min.insync.replicas
// 2), on loopback ports, with the jars fetched once from Maven Central into a
// cache outside the repository.
//
// It is test tooling: it finds kafka.sh through the location of its own
// source file, so it only works from a checkout of the module.
package realkafka

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// Mode is the shape of the cluster Start starts.
type Mode string

const (
	// Single is one combined broker+controller node: replication factor 1.
	Single Mode = "single"
	// Cluster is three combined nodes, a controller quorum of three,
	// replication factor 3 and min.insync.replicas 2.
	Cluster Mode = "cluster"
)

// DefaultPortBase is the PortBase of Options left at zero. It differs from
// kafka.sh's own default (29090), so a cluster a test starts can run beside
// the single node `make test-kafka` starts.
const DefaultPortBase = 29190

// Options configure Start.
type Options struct {
	// Mode is Single or Cluster; empty means Single.
	Mode Mode
	// RunDir holds the nodes' configs, data, logs and pids; kafka.sh
	// start empties it. Empty means a new folder under os.TempDir.
	RunDir string
	// PortBase places the ports: node n listens for clients on
	// PortBase+10(n-1)+2 and for controllers on +3. Zero means
	// DefaultPortBase. Keep it below 32768, the start of Linux's
	// ephemeral range.
	PortBase int
	// Properties are extra server properties ("key=value") for every
	// node, after kafka.sh's own, e.g. "broker.session.timeout.ms=3000"
	// for a faster failover after a kill.
	Properties []string
	// Output receives kafka.sh's progress messages (its standard error);
	// nil discards them. Failures carry the last lines in their error.
	Output io.Writer
}

// Kafka is a running cluster started by Start. Its methods run kafka.sh and
// block until it returns; they are safe to call from one goroutine at a time.
type Kafka struct {
	script string
	env    []string
	nodes  int
	base   int
	out    io.Writer
	// Brokers are the bootstrap addresses (host:port) of every node, node 1
	// first.
	Brokers []string
}

// Script returns the path of kafka.sh.
func Script() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "kafka.sh")
}

// Start fetches Kafka if it is not cached, formats and starts the nodes of
// o.Mode and returns once every node is a registered broker. The context
// bounds the whole start (fetching takes a minute the first time).
func Start(ctx context.Context, o Options) (*Kafka, error) {
	if o.Mode == "" {
		o.Mode = Single
	}
	if o.Mode != Single && o.Mode != Cluster {
		return nil, fmt.Errorf("realkafka: unknown mode %q (single or cluster)", o.Mode)
	}
	if o.PortBase == 0 {
		o.PortBase = DefaultPortBase
	}
	if o.RunDir == "" {
		d, err := os.MkdirTemp("", "spillway-kafka-")
		if err != nil {
			return nil, fmt.Errorf("realkafka: %w", err)
		}
		o.RunDir = d
	}
	k := &Kafka{
		script: Script(),
		env: append(os.Environ(), "SPILLWAY_KAFKA_RUN="+o.RunDir,
			"SPILLWAY_KAFKA_PORT_BASE="+strconv.Itoa(o.PortBase),
			"SPILLWAY_KAFKA_PROPERTIES="+strings.Join(o.Properties, "\n")),
		nodes: 1,
		base:  o.PortBase,
		out:   o.Output,
	}
	if o.Mode == Cluster {
		k.nodes = 3
	}
	out, err := k.run(ctx, "start", string(o.Mode))
	if err != nil {
		_, _ = k.run(context.Background(), "stop")
		return nil, err
	}
	k.Brokers = strings.Split(strings.TrimSpace(lastLine(out)), ",")
	if len(k.Brokers) != k.nodes {
		return nil, fmt.Errorf("realkafka: kafka.sh start printed %q, want %d addresses", out, k.nodes)
	}
	return k, nil
}

// ForTest starts a cluster of mode for t in its own temporary folder and
// stops it (removing its data) when t ends; it fails t if the start fails.
func ForTest(t testing.TB, mode Mode, portBase int) *Kafka {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	k, err := Start(ctx, Options{Mode: mode, RunDir: filepath.Join(dir, "kafka"), PortBase: portBase})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return k
}

// Nodes returns the number of nodes: 1 or 3. Node n has node.id n, so the
// broker id of a partition leader names the node to kill.
func (k *Kafka) Nodes() int { return k.nodes }

// Addr returns the client address of node n (1-based).
func (k *Kafka) Addr(n int) string {
	return "127.0.0.1:" + strconv.Itoa(k.base+10*(n-1)+2)
}

// Kill9 kills node n's process with SIGKILL and returns once it is gone.
func (k *Kafka) Kill9(ctx context.Context, n int) error {
	if err := k.check(n); err != nil {
		return err
	}
	_, err := k.run(ctx, "kill9", strconv.Itoa(n))
	return err
}

// KillAll kills every node with SIGKILL.
func (k *Kafka) KillAll(ctx context.Context) error {
	_, err := k.run(ctx, "kill9", "all")
	return err
}

// Restart stops node n if it runs (SIGTERM: a controlled shutdown, SIGKILL
// after 30s), starts it again from its log folders and returns once every
// running node is a registered broker again.
func (k *Kafka) Restart(ctx context.Context, n int) error {
	if err := k.check(n); err != nil {
		return err
	}
	_, err := k.run(ctx, "restart", strconv.Itoa(n))
	return err
}

// RestartAll is Restart of every node at once: after KillAll it restarts
// the whole cluster from its log folders.
func (k *Kafka) RestartAll(ctx context.Context) error {
	_, err := k.run(ctx, "restart", "all")
	return err
}

// Running reports which nodes have a live process, indexed by node id
// (index 0 unused).
func (k *Kafka) Running(ctx context.Context) ([]bool, error) {
	out, err := k.run(ctx, "status")
	if err != nil {
		return nil, err
	}
	up := make([]bool, k.nodes+1)
	for line := range strings.Lines(out) {
		var n int
		var pid string
		if _, err := fmt.Sscanf(line, "node %d pid %s", &n, &pid); err == nil && n >= 1 && n <= k.nodes {
			up[n] = pid != "down"
		}
	}
	return up, nil
}

// Stop stops every node (SIGTERM, SIGKILL after 10s) and removes the run
// folder.
func (k *Kafka) Stop(ctx context.Context) error {
	_, err := k.run(ctx, "stop", "--clean")
	return err
}

func (k *Kafka) check(n int) error {
	if n < 1 || n > k.nodes {
		return fmt.Errorf("realkafka: no node %d (nodes are 1..%d)", n, k.nodes)
	}
	return nil
}

// run runs kafka.sh with args and returns its standard output; its standard
// error goes to k.out and into the returned error.
func (k *Kafka) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{k.script}, args...)...)
	cmd.Env = k.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if k.out != nil {
		_, _ = k.out.Write(stderr.Bytes())
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("realkafka: kafka.sh %s: %w\n%s", strings.Join(args, " "), err, tail(stderr.String(), 60))
	}
	return stdout.String(), nil
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
