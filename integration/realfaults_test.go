package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/spillway-io/spillway/integration/realkafka"
	"github.com/spillway-io/spillway/internal/config"
)

// Broker faults on a real three-node Apache Kafka (issue 11, item 2): the
// equivalents of the kfake scenarios of faults_test.go and moves_test.go
// (leader and coordinator moves, broker restart) with the broker's own
// failover. TestRealKafkaBrokerFaults starts one cluster (three combined
// broker+controller nodes: replication factor 3, min.insync.replicas 2);
// each scenario feeds a topic of its own with acks=all while a job delivers
// it to an HTTP receiver, injects the fault with kill -9 or a restart of
// the nodes' processes, and checks from outside: no record lost, every
// partition committed to its end (kadm), duplicates counted and logged.

const (
	// envRealKafka lets the tests start real Kafka nodes (make test-kafka
	// sets it).
	envRealKafka = "SPILLWAY_TEST_REALKAFKA"
	// envGroupProtocol chooses the consumer-group protocol of the jobs the
	// fault scenarios build: classic (default) or consumer (KIP-848,
	// kgo.ServerSideBalancer; Kafka 4.0+).
	envGroupProtocol = "SPILLWAY_TEST_GROUP_PROTOCOL"
	// realFaultsPortBase places the cluster's ports (29492..29513): apart
	// from kafka.sh's single node (29090) and realkafka's own tests (29190),
	// which may run at the same time in other packages.
	realFaultsPortBase = 29490
	// realParts and realPreload shape the topic of every scenario.
	realParts, realPreload = 4, 4000
)

// groupProtocol returns the group protocol envGroupProtocol asks for.
func groupProtocol(t *testing.T) string {
	t.Helper()
	switch p := os.Getenv(envGroupProtocol); p {
	case "", "classic":
		return "classic"
	case "consumer":
		return "consumer"
	default:
		t.Fatalf("%s=%q: want classic or consumer", envGroupProtocol, p)
		return ""
	}
}

// applyGroupProtocol makes cfg's Kafka source use the group protocol of
// envGroupProtocol, through its group_protocol setting.
func applyGroupProtocol(t *testing.T, cfg *config.Pipeline) {
	t.Helper()
	kafkaSrc(cfg).GroupProtocol = groupProtocol(t)
}

// checkGroupType fails t unless the broker lists group with the type of
// the protocol envGroupProtocol asks for ("classic" or "consumer").
func checkGroupType(t *testing.T, adm *kadm.Client, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatalf("list groups: %v", err)
	}
	g, ok := groups[group]
	if !ok {
		t.Fatalf("group %s not listed", group)
	}
	// A broker before Kafka 3.8 (ListGroups v5) reports no type: classic.
	if want := groupProtocol(t); g.GroupType != want && (g.GroupType != "" || want != "classic") {
		t.Fatalf("group %s has type %q, want %q (%s)", group, g.GroupType, want, envGroupProtocol)
	}
}

// realCluster is the three-node cluster the scenarios share.
type realCluster struct {
	k   *realkafka.Kafka
	run string // kafka.sh's run folder: nodeN/logs
}

// startRealCluster starts three nodes in a folder of t's and stops them
// when t ends. If t fails, or with SPILLWAY_TEST_KEEP_KAFKA_LOGS=1, the
// nodes' logs are first copied to a folder that outlives the test.
func startRealCluster(t *testing.T) *realCluster {
	t.Helper()
	run := filepath.Join(t.TempDir(), "kafka")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	k, err := realkafka.Start(ctx, realkafka.Options{Mode: realkafka.Cluster, RunDir: run, PortBase: realFaultsPortBase})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("three Kafka nodes answer at %s after %s", strings.Join(k.Brokers, ","), time.Since(began).Round(100*time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("SPILLWAY_TEST_KEEP_KAFKA_LOGS") == "1" {
			if keep, err := os.MkdirTemp("", "spillway-realfaults-"); err == nil {
				for n := 1; n <= k.Nodes(); n++ {
					dst := filepath.Join(keep, fmt.Sprintf("node%d", n))
					_ = exec.Command("cp", "-r", filepath.Join(run, fmt.Sprintf("node%d", n), "logs"), dst).Run()
				}
				t.Logf("Kafka's logs kept in %s", keep)
			}
		}
		if err := k.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return &realCluster{k: k, run: run}
}

// heal starts the nodes a failed scenario left down and waits until every
// replica is in sync, so a scenario starts on a whole cluster.
func (rc *realCluster) heal(t *testing.T, adm *kadm.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	up, err := rc.k.Running(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= rc.k.Nodes(); n++ {
		if !up[n] {
			t.Logf("node %d is down after the previous scenario: starting it", n)
			if err := rc.k.Restart(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	rc.waitAnswering(t)
	waitInSync(t, adm, "before the scenario")
}

// waitAnswering waits until every node accepts connections on its client
// port. realkafka's Restart returns once the controller lists a node as an
// unfenced broker, a moment before the node opens its client listener, and
// a client that dials it then is refused.
func (rc *realCluster) waitAnswering(t *testing.T) {
	t.Helper()
	for n := 1; n <= rc.k.Nodes(); n++ {
		waitFor(t, fmt.Sprintf("node %d accepting connections", n), time.Minute, func() bool {
			c, err := net.DialTimeout("tcp", rc.k.Addr(n), time.Second)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
	}
}

// realEnv is a fault scenario on the real three-node cluster.
type realEnv struct {
	*faultEnv
	kc       *realCluster
	k        *realkafka.Kafka
	protocol string
	log      *syncBuffer // the job's log, shown when the test fails
}

// newRealFaultEnv makes a topic of realParts partitions (replication
// factor 3) holding realPreload records on rc, once rc is whole.
func newRealFaultEnv(t *testing.T, rc *realCluster) *realEnv {
	t.Helper()
	c := &cluster{Addrs: rc.k.Brokers, kind: "realkafka-cluster"}
	rc.heal(t, c.admin(t))
	r := &realEnv{faultEnv: newFaultEnvOn(t, c, realParts, realPreload), kc: rc, k: rc.k, protocol: groupProtocol(t), log: &syncBuffer{}}
	r.cfg.Log.KafkaLevel = "info"
	r.checkTopic()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("job log:\n%s", r.log.String())
		}
	})
	return r
}

// checkTopic fails t unless every partition of the topic has three
// replicas in sync and the topic requires two of them (acks=all).
func (r *realEnv) checkTopic() {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	td, err := r.adm.ListTopics(ctx, r.topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range td[r.topic].Partitions.Sorted() {
		if len(p.Replicas) != 3 || len(p.ISR) != 3 {
			t.Fatalf("partition %d: replicas %v, isr %v; want 3 in sync", p.Partition, p.Replicas, p.ISR)
		}
	}
	rcs, err := r.adm.DescribeTopicConfigs(ctx, r.topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(r.topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rc.Configs {
		if c.Key == "min.insync.replicas" && c.MaybeValue() != "2" {
			t.Fatalf("min.insync.replicas = %s, want 2", c.MaybeValue())
		}
	}
}

// leaders returns the leader of each partition of the topic.
func (r *realEnv) leaders() map[int32]int32 {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	td, err := r.adm.ListTopics(ctx, r.topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int32{}
	for _, p := range td[r.topic].Partitions {
		out[p.Partition] = p.Leader
	}
	return out
}

// coordinator returns the node coordinating the group. Right after a
// restart a node may refuse a connection or still load the group: it
// retries for a minute.
func (r *realEnv) coordinator() int {
	t := r.t
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		node, why := r.findCoordinator()
		if why == "" {
			return node
		}
		if time.Now().After(deadline) {
			t.Fatalf("no coordinator for group %s after 1m: %s", r.group, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// findCoordinator returns the group's coordinator, or why it has none.
func (r *realEnv) findCoordinator() (node int, why string) {
	t := r.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	co, ok := r.adm.FindGroupCoordinators(ctx, r.group)[r.group]
	if !ok || co.Err != nil {
		return 0, fmt.Sprintf("find coordinator: %+v", co)
	}
	return int(co.NodeID), ""
}

// waitInSync waits until every partition of every topic, the internal
// ones included, has a leader and all its replicas in sync.
func waitInSync(t *testing.T, adm *kadm.Client, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		td, err := adm.ListTopicsWithInternal(ctx)
		cancel()
		var lag []string
		if err != nil {
			lag = append(lag, err.Error())
		}
		for _, topic := range td.Sorted() {
			for _, p := range topic.Partitions.Sorted() {
				if p.Err != nil || p.Leader < 0 || len(p.ISR) != len(p.Replicas) {
					lag = append(lag, fmt.Sprintf("%s/%d leader %d isr %v of %v", topic.Topic, p.Partition, p.Leader, p.ISR, p.Replicas))
				}
			}
		}
		if len(lag) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d partitions not in sync after 3m, e.g. %s", what, len(lag), strings.Join(lag[:min(len(lag), 5)], "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// restarted waits, after a kill or restart of nodes, until every node
// accepts connections again.
func (r *realEnv) restarted() { r.kc.waitAnswering(r.t) }

// run runs one scenario: it starts the job and the feed (100 records every
// 25ms, acks=all), waits until delivery is under way, applies fault, waits
// for the cluster to have every replica in sync again and for 2,000 more
// records delivered, then stops the feed and checks with finish. It logs
// one line: records, lost, duplicates, wall time.
func (r *realEnv) run(scenario string, fault func()) {
	t := r.t
	t.Helper()
	began := time.Now()
	_, stopJob := startJobLogging(t, r.cfg, jobLogger(r.log))
	stopFeed := r.feed.keepProducing(t, 100, 25*time.Millisecond)
	r.waitDelivered("delivery under way", realPreload/2)
	checkGroupType(t, r.adm, r.group)
	t.Logf("group %s (%s protocol) coordinated by node %d", r.group, r.protocol, r.coordinator())
	fault()
	waitInSync(t, r.adm, "after "+scenario)
	r.waitDelivered("delivery after "+scenario, r.rc.uniqueCount()+2000)
	dups := r.finish(scenario, stopFeed, stopJob, nil)
	t.Logf("real kafka %s (%s protocol): %d records, 0 lost, %d duplicates, longest acks=all produce %s, wall %s; group: %s",
		scenario, r.protocol, r.feed.count(), dups, r.feed.longestWait().Round(time.Millisecond), time.Since(began).Round(100*time.Millisecond), groupEvents(r.log.String()))
}

// groupEvents summarises what the Kafka source logged about its group
// (sources/kafka/group.go, groupwatch.go): how often partitions were
// assigned, revoked and lost, how often lost ones came back unchanged (held
// work kept) or moved on (held work dropped), and the session failures with
// the longest time until the group was joined again.
func groupEvents(log string) string {
	count := func(msg string) int { return strings.Count(log, `msg="`+msg) }
	longest := time.Duration(0)
	for line := range strings.Lines(log) {
		if !strings.Contains(line, `msg="kafka group joined again"`) {
			continue
		}
		_, after, ok := strings.Cut(line, " after=")
		if !ok {
			continue
		}
		if d, err := time.ParseDuration(strings.Fields(after)[0]); err == nil {
			longest = max(longest, d)
		}
	}
	return fmt.Sprintf("%d assigned, %d revoked, %d lost (%d back unchanged, %d moved on), %d session failures, longest rejoin %s",
		count("partitions assigned\""), count("partitions revoked"), count("partitions lost (group session ended)"),
		count("partitions assigned back unchanged"), count("partitions assigned back after a lost session had moved on")+count("partitions lost earlier went to another member"),
		count("kafka group session failed"), longest)
}

// ctx bounds one cluster operation of a scenario.
func (r *realEnv) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.t.Context(), 3*time.Minute)
}

// realScenarios are the broker faults TestRealKafkaBrokerFaults runs, in
// order, on one cluster.
var realScenarios = []struct {
	name, title string
	fault       func(r *realEnv)
}{
	{"leader_kill9", "partition leader kill -9", leaderKill9},
	{"coordinator_kill9", "group coordinator kill -9", coordinatorKill9},
	{"cluster_restart", "whole cluster restart", clusterRestart},
	{"rolling_restart", "rolling restart", rollingRestart},
}

// TestRealKafkaBrokerFaults runs each broker fault scenario, a subtest, on
// one three-node cluster it starts (each scenario on its own topic and
// group, starting once every replica is in sync). Select scenarios with
// -run, e.g. 'TestRealKafkaBrokerFaults/(leader_kill9|rolling_restart)'.
func TestRealKafkaBrokerFaults(t *testing.T) {
	if os.Getenv(envRealKafka) != "1" {
		t.Skipf("starts a three-node Apache Kafka (fetched from Maven Central the first time): set %s=1 (make test-kafka does)", envRealKafka)
	}
	groupProtocol(t)
	rc := startRealCluster(t)
	for _, s := range realScenarios {
		t.Run(s.name, func(t *testing.T) {
			r := newRealFaultEnv(t, rc)
			r.run(s.title, func() { s.fault(r) })
		})
	}
}

// leaderKill9 kills -9 the leader of a partition of the topic, one that is
// not the group's coordinator (coordinatorKill9 kills that), and starts it
// again 5s later from its log folders. The feed's acks=all writes to its
// partitions wait for a new leader (the controller fences the dead broker
// after broker.session.timeout.ms, 9s by default, or when it registers
// again); the job follows the new leaders.
func leaderKill9(r *realEnv) {
	t := r.t
	coord := r.coordinator()
	leaders := r.leaders()
	victim := -1
	for p := range int32(realParts) {
		if l := int(leaders[p]); l != coord && victim < 0 {
			victim = l
		}
	}
	if victim < 0 { // the coordinator leads every partition
		victim = int(leaders[0])
	}
	var led []int32
	for p, l := range leaders {
		if int(l) == victim {
			led = append(led, p)
		}
	}
	slices.Sort(led)
	ctx, cancel := r.ctx()
	defer cancel()
	if err := r.k.Kill9(ctx, victim); err != nil {
		t.Fatal(err)
	}
	at := r.rc.uniqueCount()
	time.Sleep(5 * time.Second)
	if err := r.k.Restart(ctx, victim); err != nil {
		t.Fatal(err)
	}
	r.restarted()
	t.Logf("killed node %d (leader of partitions %v; coordinator %d) with %d records delivered; restarted it 5s later", victim, led, coord, at)
}

// coordinatorKill9 kills -9 the node coordinating the job's group and
// starts it again 5s later. The group moves with the leadership of its
// __consumer_offsets partition; the member's heartbeats and commits fail
// until it finds the new coordinator.
func coordinatorKill9(r *realEnv) {
	t := r.t
	coord := r.coordinator()
	ctx, cancel := r.ctx()
	defer cancel()
	if err := r.k.Kill9(ctx, coord); err != nil {
		t.Fatal(err)
	}
	at := r.rc.uniqueCount()
	time.Sleep(5 * time.Second)
	if err := r.k.Restart(ctx, coord); err != nil {
		t.Fatal(err)
	}
	r.restarted()
	t.Logf("killed coordinator node %d with %d records delivered; restarted it 5s later; coordinator now %d", coord, at, r.coordinator())
}

// clusterRestart kills -9 all three nodes mid-stream and starts them again
// 3s later from their log folders: the feed and the job see no broker at
// all, then a cluster that recovers its logs, elects leaders and reloads
// the group's offsets.
func clusterRestart(r *realEnv) {
	t := r.t
	ctx, cancel := r.ctx()
	defer cancel()
	if err := r.k.KillAll(ctx); err != nil {
		t.Fatal(err)
	}
	at := r.rc.uniqueCount()
	time.Sleep(3 * time.Second)
	down := time.Now()
	if err := r.k.RestartAll(ctx); err != nil {
		t.Fatal(err)
	}
	r.restarted()
	t.Logf("killed all three nodes with %d records delivered; restarted them 3s later (answering after %s)", at, time.Since(down).Round(100*time.Millisecond))
}

// rollingRestart restarts the three nodes one at a time under load
// (SIGTERM: a controlled shutdown that moves leadership away first), each
// once the cluster has every replica in sync again.
func rollingRestart(r *realEnv) {
	t := r.t
	for n := 1; n <= r.k.Nodes(); n++ {
		ctx, cancel := r.ctx()
		began := time.Now()
		err := r.k.Restart(ctx, n)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		r.restarted()
		took := time.Since(began)
		waitInSync(t, r.adm, fmt.Sprintf("node %d restarted", n))
		t.Logf("node %d restarted in %s, in sync after %s, %d records delivered", n, took.Round(100*time.Millisecond), time.Since(began).Round(100*time.Millisecond), r.rc.uniqueCount())
		r.waitDelivered(fmt.Sprintf("delivery after node %d restarted", n), r.rc.uniqueCount()+500)
	}
}

// jobLogger writes a job's log to buf at info, and to stderr as well with
// SPILLWAY_TEST_VERBOSE.
func jobLogger(buf *syncBuffer) *slog.Logger {
	var w io.Writer = buf
	if os.Getenv("SPILLWAY_TEST_VERBOSE") != "" {
		w = io.MultiWriter(buf, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
