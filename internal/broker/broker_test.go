package broker

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/internal/testpki"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

func endOffset(t *testing.T, addrs []string, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// TestDataDirSurvivesRestart: with DataDir, a restarted broker still has
// the records and the topics it had.
func TestDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	e, err := Start(Options{DataDir: dir, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := EnsureTopics(ctx, e.Addrs(), 2, "persisted"); err != nil {
		t.Fatal(err)
	}
	if err := Produce(ctx, e.Addrs(), "persisted", 500, 64, 10); err != nil {
		t.Fatal(err)
	}
	e.Close()

	e2, err := Start(Options{DataDir: dir, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if got := endOffset(t, e2.Addrs(), "persisted"); got != 500 {
		t.Fatalf("after restart the topic holds %d records, want 500", got)
	}
	// EnsureTopics leaves an existing topic alone.
	if err := EnsureTopics(ctx, e2.Addrs(), 8, "persisted"); err != nil {
		t.Fatal(err)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{{Brokers: -1}, {Partitions: -2}, {Port: 70000}} {
		if e, err := Start(o); err == nil {
			e.Close()
			t.Errorf("Start(%+v) succeeded", o)
		}
	}
}

func TestSeveralBrokers(t *testing.T) {
	e, err := Start(Options{Brokers: 3, Topics: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if n := len(e.Addrs()); n != 3 {
		t.Fatalf("%d listen addresses, want 3", n)
	}
	if err := Produce(context.Background(), e.Addrs(), "t", 100, 32, 10); err != nil {
		t.Fatal(err)
	}
	if got := endOffset(t, e.Addrs(), "t"); got != 100 {
		t.Fatalf("end offsets sum %d, want 100", got)
	}
}

// TestSecured: with Users and TLS the broker accepts only clients that
// speak TLS and authenticate; EnsureTopicsWith and ProduceWith pass the
// client options on.
func TestSecured(t *testing.T) {
	p := testpki.New(t, "embedded")
	e, err := Start(Options{
		Users: []User{{Mechanism: "plain", Name: "alice", Password: "pw"}, {Mechanism: "SCRAM-SHA-256", Name: "bob", Password: "pw2"}},
		TLS:   p.ServerTLS(false),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	good := []kgo.Opt{
		kgo.DialTLSConfig(&tls.Config{RootCAs: p.Pool, MinVersion: tls.VersionTLS12}),
		kgo.SASL(scram.Auth{User: "bob", Pass: "pw2"}.AsSha256Mechanism()),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := EnsureTopicsWith(ctx, e.Addrs(), good, 2, "secured"); err != nil {
		t.Fatal(err)
	}
	if err := ProduceWith(ctx, e.Addrs(), good, "secured", 50, 32, 5); err != nil {
		t.Fatal(err)
	}
	plainOK := []kgo.Opt{
		kgo.DialTLSConfig(&tls.Config{RootCAs: p.Pool, MinVersion: tls.VersionTLS12}),
		kgo.SASL(plain.Auth{User: "alice", Pass: "pw"}.AsMechanism()),
	}
	if err := ProduceWith(ctx, e.Addrs(), plainOK, "secured", 50, 32, 5); err != nil {
		t.Fatal(err)
	}

	// Without SASL, or without TLS, nothing gets through.
	for name, opts := range map[string][]kgo.Opt{
		"no sasl":        good[:1],
		"no tls":         good[1:],
		"wrong password": {good[0], kgo.SASL(plain.Auth{User: "alice", Pass: "nope"}.AsMechanism())},
	} {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		err := EnsureTopicsWith(sctx, e.Addrs(), append(opts, kgo.RequestRetries(0)), 2, "other")
		cancel()
		if err == nil {
			t.Errorf("%s: EnsureTopicsWith succeeded", name)
		}
	}
}

func TestStartRejectsBadUsers(t *testing.T) {
	for _, u := range []User{{Mechanism: "GSSAPI", Name: "a", Password: "secret-pw"}, {Mechanism: "PLAIN", Password: "secret-pw"}} {
		e, err := Start(Options{Users: []User{u}})
		if err == nil {
			e.Close()
			t.Errorf("Start with user %v succeeded", u)
			continue
		}
		if strings.Contains(err.Error(), "secret-pw") {
			t.Errorf("error holds the password: %v", err)
		}
	}
	if s := fmt.Sprint(User{Mechanism: "PLAIN", Name: "a", Password: "secret-pw"}); strings.Contains(s, "secret-pw") {
		t.Errorf("User prints its password: %s", s)
	}
}
