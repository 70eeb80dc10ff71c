package integration

// Issue 8: a pipeline on a secured cluster. The top-level kafka: section
// (TLS with a private CA, SASL/SCRAM) is used by every Kafka client of the
// job: the source, the topic creation and the dead-letter producer. A wrong
// password or an untrusted certificate stops the job at start with an error
// naming the broker and saying why, without the password.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	"github.com/spillway-io/spillway/internal/testpki"
	"github.com/spillway-io/spillway/kafkaclient"
)

// The embedded broker's one SASL user.
const (
	secureUser      = "spillway"
	securePassword  = "s3cret-Pa55word"
	secureMechanism = "SCRAM-SHA-512"
)

// secureCluster starts an embedded broker that speaks only TLS (with a
// certificate signed by ca) and requires SASL as secureUser. The test
// helpers' clients (topics, producing, offsets, reading the dead-letter
// topic) connect with the same kafkaclient settings as the job.
func secureCluster(t *testing.T, ca *testpki.PKI, partitions int) *cluster {
	t.Helper()
	e, err := broker.Start(broker.Options{
		Partitions: partitions,
		TLS:        ca.ServerTLS(false),
		Users:      []broker.User{{Mechanism: secureMechanism, Name: secureUser, Password: securePassword}},
	})
	if err != nil {
		t.Fatalf("start secured kfake: %v", err)
	}
	t.Cleanup(e.Close)
	kc := kafkaclient.Config{
		TLS:  &kafkaclient.TLS{CAFile: ca.CAFile},
		SASL: &kafkaclient.SASL{Mechanism: secureMechanism, Username: secureUser, Password: securePassword},
	}
	c := &cluster{Addrs: e.Addrs(), Fake: e.Cluster(), kind: "kfake-secure"}
	c.opts = func(t *testing.T) []kgo.Opt {
		t.Helper()
		o, err := kc.Opts(c.Addrs)
		if err != nil {
			t.Fatalf("kafkaclient options: %v", err)
		}
		return o
	}
	return c
}

// secureYAML is a pipeline file from topic on brokers to url, connecting
// with SASL/SCRAM as secureUser, the password taken from ${PW}, over TLS
// trusting caFile. extra is appended (an errors: section).
func secureYAML(brokers, caFile, topic, group, url, extra string) string {
	return fmt.Sprintf(`name: secure-it
brokers: %s
kafka:
  sasl:
    mechanism: %s
    username: %s
    password: ${PW}
  tls:
    ca_file: %s
source:
  kafka:
    topics: [%s]
    group: %s
    checkpoint_interval: 200ms
    connect_timeout: 2s
sink:
  http:
    url: %s
  writer:
    max_batch_size: 1
    max_time_in_buffer: 10ms
    request_timeout: 30s
shutdown_timeout: 20s
%s`, brokers, secureMechanism, secureUser, caFile, topic, group, url, extra)
}

// parseSecure parses text with ${PW} set to password.
func parseSecure(t *testing.T, text, password string) *config.Pipeline {
	t.Helper()
	cfg, err := config.Parse("secure-it.yaml", []byte(text), func(k string) (string, bool) {
		if k == "PW" {
			return password, true
		}
		return "", false
	})
	if err != nil {
		t.Fatalf("parse:\n%s\n%v", text, err)
	}
	return cfg
}

// TestSecureKafkaToHTTP: TLS + SASL/SCRAM-SHA-512 end to end. Every record
// but the one the receiver rejects with 400 arrives exactly once; that one
// is in the dead-letter topic, produced by a client that had to
// authenticate too; every offset is committed.
func TestSecureKafkaToHTTP(t *testing.T) {
	const n, bad = 300, 123
	ca := testpki.New(t, "spillway-test-ca")
	c := secureCluster(t, ca, 2)
	topic, group, dlq := name(t, "topic"), name(t, "group"), name(t, "dlq")
	c.createTopic(t, topic, 2)
	c.produce(t, topic, n, 100)

	rc := newReceiver(t)
	var rejected atomic.Int64
	rc.setHook(func(w http.ResponseWriter, _ *http.Request, ids []int64) bool {
		for _, id := range ids {
			if id == bad {
				rejected.Add(1)
				http.Error(w, `{"error":"record 123 rejected"}`, http.StatusBadRequest)
				return true
			}
		}
		return false
	})

	text := secureYAML(strings.Join(c.Addrs, ","), ca.CAFile, topic, group, rc.URL(),
		"errors:\n  tolerance: all\n  dead_letter_topic: "+dlq+"\n")
	cfg := parseSecure(t, text, securePassword)
	j, stop := startJob(t, cfg)
	waitFor(t, "all partitions committed to the end", 2*time.Minute, func() bool {
		if j.Health().Status == "stopped" {
			t.Fatalf("job stopped on its own: %v", stop())
		}
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatalf("job: %v", err)
	}

	unique, dups, missing := rc.stats(n)
	if len(missing) != 1 || missing[0] != bad || unique != n-1 || dups != 0 {
		t.Errorf("receiver got %d unique, %d duplicates, missing %v; want %d unique, 0 duplicates, missing [%d]",
			unique, dups, missing[:min(10, len(missing))], n-1, bad)
	}
	if got := rejected.Load(); got != 1 {
		t.Errorf("the receiver rejected record %d %d times, want once (a 400 is not retried)", bad, got)
	}
	if s := j.Snapshot(); s.DeadLettered != 1 {
		t.Errorf("job dead-lettered %d records, want 1", s.DeadLettered)
	}

	recs := c.readTopic(t, dlq, 1)
	d := recs[0]
	if !strings.HasPrefix(string(d.Value), fmt.Sprintf(`{"id":%d,`, bad)) {
		t.Errorf("dead letter value %.60q, want record %d", d.Value, bad)
	}
	for key, want := range map[string]string{
		deadletter.HeaderClass: "fatal",
		deadletter.HeaderTopic: topic,
		"spillway.http.status": "400",
	} {
		if got := header(d, key); got != want {
			t.Errorf("dead letter header %s = %q, want %q", key, got, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := c.admin(t).ListEndOffsets(ctx, dlq)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != 1 {
		t.Errorf("dead-letter topic holds %d records, want 1", total)
	}
	if ok, desc := c.committedEqualsEnd(t, group, topic); !ok {
		t.Errorf("committed offsets after shutdown: %s", desc)
	}
}

// TestSecureConnectFailures: a wrong password and a certificate the client
// does not trust each make Run return an error at start (bounded by
// connect_timeout: the source's startup check) naming the broker and saying
// why, with no password in it.
func TestSecureConnectFailures(t *testing.T) {
	ca := testpki.New(t, "spillway-test-ca")
	other := testpki.New(t, "other-ca")
	c := secureCluster(t, ca, 1)
	topic := name(t, "topic")
	c.createTopic(t, topic, 1)
	rc := newReceiver(t)
	const wrong = "not-the-Pa55word"
	for _, tc := range []struct {
		name     string
		caFile   string
		password string
		kind     error
		want     []string
	}{
		{"wrong password", ca.CAFile, wrong, kafkaclient.ErrAuthentication,
			[]string{`SASL authentication failed (SCRAM-SHA-512, user "spillway")`}},
		{"untrusted certificate", other.CAFile, securePassword, kafkaclient.ErrTLS,
			[]string{"TLS handshake failed: certificate signed by unknown authority", "kafka.tls.ca_file " + other.CAFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parseSecure(t, secureYAML(strings.Join(c.Addrs, ","), tc.caFile, topic, name(t, "group"), rc.URL(), ""), tc.password)
			if got := kafkaSrc(cfg).ConnectTimeout; got != 2*time.Second {
				t.Fatalf("connect_timeout = %v, want 2s", got)
			}
			// The limit only stops a job that wrongly keeps running.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			j, err := job.Build(ctx, cfg, testLogger(t))
			if err != nil {
				t.Fatalf("build job: %v", err)
			}
			err = j.Run(ctx)
			if ctx.Err() != nil {
				t.Fatalf("Run returned only after the test's limit: %v", err)
			}
			if err == nil {
				t.Fatal("Run succeeded against a broker it must not be able to use")
			}
			msg := err.Error()
			t.Logf("Run: %s", msg)
			addr := c.Addrs[0]
			if !strings.Contains(msg, "broker "+addr+": ") {
				t.Errorf("error does not name broker %s: %s", addr, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not say %q: %s", w, msg)
				}
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("errors.Is(err, %v) = false: %s", tc.kind, msg)
			}
			var be *kafkaclient.BrokerError
			if !errors.As(err, &be) || be.Broker != addr {
				t.Errorf("error is not a *kafkaclient.BrokerError for %s: %s", addr, msg)
			}
			if errors.Is(err, kafkaclient.ErrNoAnswer) {
				t.Errorf("the failure was not recognised before connect_timeout ran out: %s", msg)
			}
			for _, pw := range []string{tc.password, securePassword, wrong} {
				if strings.Contains(msg, pw) {
					t.Errorf("error holds a password: %s", msg)
				}
			}
			if rc.uniqueCount() != 0 {
				t.Errorf("the receiver got %d records", rc.uniqueCount())
			}
		})
	}
}
