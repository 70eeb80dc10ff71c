package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/internal/job"
)

// readTopic consumes topic from the start until want records arrived.
func (c *cluster) readTopic(t *testing.T, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append(c.clientOpts(t), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: got %d records, want %d", topic, len(out), want)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestBadRecordsDeadLettered covers an oversized record and a record the
// receiver rejects with 400 in any batch: both end in the dead-letter
// topic with headers saying why, alone (the refused batches are bisected),
// everything else is delivered, and all offsets are committed.
func TestBadRecordsDeadLettered(t *testing.T) {
	const n = 2000
	c := newCluster(t, 1)
	topic, group, dlq := name(t, "topic"), name(t, "group"), name(t, "dlq")
	c.createTopic(t, topic, 1)
	c.createTopic(t, dlq, 1)
	c.produce(t, topic, n, 100)
	// One oversized record after the generated ones.
	big := &kgo.Record{Topic: topic, Value: []byte(`{"id":` + fmt.Sprint(n) + `,"pad":"` + strings.Repeat("x", 5000) + `"}`)}
	pcl, _ := kgo.NewClient(kgo.SeedBrokers(c.Addrs...))
	if err := pcl.ProduceSync(context.Background(), big).FirstErr(); err != nil {
		t.Fatal(err)
	}
	pcl.Close()

	rc := newReceiver(t)
	var rejected atomic.Int64
	rc.setHook(func(w http.ResponseWriter, _ *http.Request, ids []int64) bool {
		// Reject every batch containing id 1000 with a 400 and a large body:
		// the writer bisects until id 1000 is alone.
		for _, id := range ids {
			if id == 1000 {
				rejected.Add(1)
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `{"error":"schema violation"}`+strings.Repeat(" ", 1<<20))
				return true
			}
		}
		return false
	})
	cfg := kafkaToHTTP(c, topic, group, rc.URL())
	cfg.Sink.Writer.MaxRecordBytes = 1024
	cfg.Sink.Writer.MaxBatchBytes = 1 << 20
	cfg.Errors.Tolerance = "all"
	cfg.Errors.Topic = dlq
	_, stop := startJob(t, cfg)
	waitFor(t, "all committed", 2*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if rejected.Load() == 0 {
		t.Fatal("the receiver never saw id 1000")
	}
	want := 2 // the oversized record and id 1000
	recs := c.readTopic(t, dlq, want)
	var oversized, http400 int
	for _, r := range recs {
		switch header(r, deadletter.HeaderClass) {
		case "oversized":
			oversized++
			if header(r, deadletter.HeaderOffset) != fmt.Sprint(n) || header(r, deadletter.HeaderTopic) != topic {
				t.Errorf("oversized origin headers: offset %q topic %q", header(r, deadletter.HeaderOffset), header(r, deadletter.HeaderTopic))
			}
		case "fatal":
			http400++
			if got := string(r.Value); !strings.HasPrefix(got, `{"id":1000,`) {
				t.Errorf("dead-lettered %.40q, want only id 1000", got)
			}
			if got := header(r, "spillway.http.status"); got != "400" {
				t.Errorf("http status header = %q, want 400", got)
			}
			body := header(r, "spillway.http.body")
			if !strings.Contains(body, "schema violation") || len(body) > 4096 {
				t.Errorf("body excerpt %d bytes, want a bounded excerpt containing the error", len(body))
			}
			if header(r, deadletter.HeaderAttempts) != "1" {
				t.Errorf("attempts = %q, want 1", header(r, deadletter.HeaderAttempts))
			}
		default:
			t.Errorf("unexpected class %q", header(r, deadletter.HeaderClass))
		}
	}
	if oversized != 1 || http400 != want-1 {
		t.Fatalf("dead letters: oversized=%d http400=%d, want 1 and %d", oversized, http400, want-1)
	}
	unique, _, missing := rc.stats(n)
	if unique+http400 != n {
		t.Fatalf("delivered %d + dead-lettered %d != %d (missing %d)", unique, http400, n, len(missing))
	}
}

// TestHangingReceiverRetried: a receiver that hangs for the first requests
// makes them time out; they are retried and everything is delivered.
func TestHangingReceiverRetried(t *testing.T) {
	const n = 3000
	c := newCluster(t, 2)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, 2)
	c.produce(t, topic, n, 100)
	rc := newReceiver(t)
	var hung atomic.Int64
	rc.setHook(func(_ http.ResponseWriter, r *http.Request, _ []int64) bool {
		if hung.Add(1) <= 3 {
			<-r.Context().Done() // hang until the client gives up
			return true
		}
		return false
	})
	cfg := kafkaToHTTP(c, topic, group, rc.URL())
	cfg.Sink.Writer.RequestTimeout = 300 * time.Millisecond
	_, stop := startJob(t, cfg)
	waitFor(t, "all committed", 2*time.Minute, func() bool {
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, missing := rc.stats(n); len(missing) > 0 {
		t.Fatalf("%d records lost", len(missing))
	}
	if hung.Load() < 3 {
		t.Fatalf("receiver hung %d times, want 3", hung.Load())
	}
}

// TestUnreachableBrokers: a clear error naming the addresses, within the
// connect timeout.
func TestUnreachableBrokers(t *testing.T) {
	rc := newReceiver(t)
	c := &cluster{Addrs: []string{"127.0.0.1:1"}}
	cfg := kafkaToHTTP(c, "t", "g", rc.URL())
	kafkaSrc(cfg).ConnectTimeout = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := job.Build(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	err = j.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("err = %v, want one naming 127.0.0.1:1", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the error came only after the test deadline")
	}
}
