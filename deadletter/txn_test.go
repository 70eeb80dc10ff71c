package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/spillway-io/spillway/pipeline"
)

// txnClient returns a transactional client for e's brokers, closed at the
// end of the test.
func (e env) txnClient(t *testing.T) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.TransactionalID(fmt.Sprintf("%s-txn", e.topic)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// readCommitted reads the topic from the start with read_committed until
// the first record of the marker transaction (value "marker"), and
// returns the records before it.
func (e env) readCommitted(t *testing.T) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(e.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	var recs []*kgo.Record
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read_committed %s: %d records and no marker", e.topic, len(recs))
		}
		for _, r := range fs.Records() {
			if string(r.Value) == "marker" {
				return recs
			}
			recs = append(recs, r)
		}
	}
}

// TestSendInTransactions: with UseTransactions, Send fails until a client
// is handed over, then writes into the caller's open transaction: a
// read_committed reader sees the dead letters of a committed transaction
// once, with their headers, and never those of an aborted one.
func TestSendInTransactions(t *testing.T) {
	e := newEnv(t)
	d := e.deadLetter(t)
	d.UseTransactions()
	f := pipeline.Failure{Class: "operator", Err: errors.New("bad"), Attempts: 1}
	rec := func(v string) []pipeline.Record {
		return []pipeline.Record{{Key: []byte("k"), Value: []byte(v), Origin: pipeline.Origin{Topic: "in", Partition: 2, Offset: 7}}}
	}
	if err := d.Send(t.Context(), rec("early"), f); err == nil || !strings.Contains(err.Error(), "transactional client") {
		t.Fatalf("Send before the client was handed over: %v, want an error saying so", err)
	}
	if err := d.TakeTxnFailure(); err != nil {
		t.Fatalf("TakeTxnFailure after a Send that produced nothing: %v", err)
	}
	cl := e.txnClient(t)
	d.UseTransactClient(cl)
	ctx := t.Context()
	txn := func(commit kgo.TransactionEndTry, vals ...string) {
		t.Helper()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if err := d.Send(ctx, rec(v), f); err != nil {
				t.Fatalf("Send(%s) in a transaction: %v", v, err)
			}
		}
		if err := cl.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	txn(kgo.TryAbort, "aborted-1", "aborted-2")
	txn(kgo.TryCommit, "committed-1", "committed-2")
	txn(kgo.TryAbort, "aborted-3")
	txn(kgo.TryCommit, "marker")
	if err := d.TakeTxnFailure(); err != nil {
		t.Fatalf("TakeTxnFailure after Sends that succeeded: %v", err)
	}
	recs := e.readCommitted(t)
	var got []string
	for _, r := range recs {
		got = append(got, string(r.Value))
	}
	if strings.Join(got, ",") != "committed-1,committed-2" {
		t.Fatalf("read_committed: %q, want the committed dead letters once", got)
	}
	if n := e.endOffset(t); n < 6 {
		t.Fatalf("end offset %d: the aborted dead letters were not written at all", n)
	}
	// Transactional, with the headers of a Send outside transactions.
	if !recs[0].Attrs.IsTransactional() {
		t.Error("dead letter written outside a transaction")
	}
	for k, want := range map[string]string{HeaderClass: "operator", HeaderMessage: "bad", HeaderTopic: "in", HeaderPartition: "2", HeaderOffset: "7", HeaderAttempts: "1"} {
		if got := headerOf(recs[0], k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

// TestSendInTransactionsFailure: a Send in transactions that fails makes
// TakeTxnFailure return its error once, so the caller aborts.
func TestSendInTransactionsFailure(t *testing.T) {
	e := newEnv(t)
	c := e.faults(t)
	d := e.deadLetter(t)
	d.UseTransactions()
	cl := e.txnClient(t)
	d.UseTransactClient(cl)
	f := pipeline.Failure{Class: "fatal", Err: errors.New("bad")}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return produceError(req, kerr.InvalidRecord.Code), nil, true
	})
	err := d.Send(t.Context(), []pipeline.Record{{Value: []byte("v")}}, f)
	if err == nil {
		t.Fatal("Send succeeded although the broker refused the record")
	}
	if got := d.TakeTxnFailure(); got == nil || !strings.Contains(got.Error(), err.Error()) {
		t.Fatalf("TakeTxnFailure = %v, want Send's error %v", got, err)
	}
	if got := d.TakeTxnFailure(); got != nil {
		t.Fatalf("TakeTxnFailure again = %v, want nil (taken)", got)
	}
	ectx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	if err := cl.EndTransaction(ectx, kgo.TryAbort); err != nil {
		t.Fatalf("abort: %v", err)
	}
}

func headerOf(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
