package kafka

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/pipeline"
)

// txnSink produces each emitted record to out through the source's
// transactional client and fails the first transaction.
type txnSink struct {
	mu     sync.Mutex
	cl     *kgo.Client
	failed bool
}

func (f *txnSink) UseTransactClient(cl *kgo.Client) { f.mu.Lock(); f.cl = cl; f.mu.Unlock() }

func (f *txnSink) TakeTxnFailure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failed {
		f.failed = true
		return errors.New("first transaction fails on purpose")
	}
	return nil
}

func (f *txnSink) client() *kgo.Client { f.mu.Lock(); defer f.mu.Unlock(); return f.cl }

// TestTransactionsAbortReadsAgain runs the exactly-once mode with a sink,
// or a dead-letter producer (Transactions.DeadLetters, which gets the
// shared client too), that fails the first transaction: it is aborted, its
// records are read and produced again, and a read_committed reader of the
// output sees each input record once while the group commits everything.
func TestTransactionsAbortReadsAgain(t *testing.T) {
	for _, tc := range []struct {
		name            string
		deadLettersFail bool
	}{{"sink fails", false}, {"dead letters fail", true}} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 200
			in, out, group := name("txn-in"), name("txn-out"), name("txn-group")
			e := newEnv(t, 1, in, out)
			recs := make([]*kgo.Record, n)
			for i := range recs {
				recs[i] = &kgo.Record{Topic: in, Value: []byte(strconv.Itoa(i))}
			}
			e.produce(t, recs...)

			// The side that fails the first transaction produces the records.
			sink, dlq := &txnSink{}, &txnSink{failed: true}
			producer := sink
			if tc.deadLettersFail {
				sink.failed, dlq.failed = true, false
				producer = dlq
			}
			s, err := New(Config{Brokers: e.brokers, Topics: []string{in}, Group: group})
			if err != nil {
				t.Fatal(err)
			}
			s.UseTransactions(Transactions{IDPrefix: group, Interval: 100 * time.Millisecond, Records: 1000, Timeout: 10 * time.Second,
				Sink: sink, DeadLetters: dlq, Flush: func(context.Context) error { return nil }})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			var emitted sync.Map // value → times emitted
			go func() {
				done <- s.Run(ctx, func(ctx context.Context, batch []pipeline.Record) error {
					cl := producer.client()
					for _, r := range batch {
						if err := cl.ProduceSync(ctx, &kgo.Record{Topic: out, Value: r.Value}).FirstErr(); err != nil {
							return err
						}
						v, _ := emitted.LoadOrStore(string(r.Value), new(int))
						*v.(*int)++ // the poll loop emits serially
					}
					pipeline.AckAll(batch)
					return nil
				})
			}()
			deadline := time.Now().Add(bound)
			for s.Committed()[in][0] < n {
				if time.Now().After(deadline) {
					t.Fatalf("committed %v, want %d", s.Committed(), n)
				}
				time.Sleep(20 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			if err := s.Close(context.Background()); err != nil {
				t.Fatalf("Close: %v", err)
			}
			committed, aborted := s.TxnStats()
			if aborted < 1 || committed < 1 {
				t.Fatalf("transactions: %d committed, %d aborted; want the first aborted and later ones committed", committed, aborted)
			}
			if v, _ := emitted.Load("0"); v == nil || *v.(*int) < 2 {
				t.Fatal("the first record was not read again after the abort")
			}

			cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(out),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			seen := map[string]int{}
			for total := 0; total < n; {
				pctx, pcancel := context.WithTimeout(t.Context(), bound)
				fs := cl.PollFetches(pctx)
				timedOut := pctx.Err() != nil
				pcancel()
				if timedOut {
					t.Fatalf("read_committed: %d records, want %d", total, n)
				}
				fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++; total++ })
			}
			for i := range n {
				if c := seen[strconv.Itoa(i)]; c != 1 {
					t.Fatalf("read_committed: record %d seen %d times, want once (%d distinct)", i, c, len(seen))
				}
			}
		})
	}
}
