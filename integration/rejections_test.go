package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-io/spillway/deadletter"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
)

// TestRejectionsDeadLetterOnlyBadRecords (issue 10, finding 1, part 1): the
// receiver answers 400 {"error":…,"bad_ids":[…]} to any batch holding an
// invalid record (every id divisible by 50) and stores nothing of it. With
// sink.http.rejections reading bad_ids, only the invalid records are
// dead-lettered, each with its own id in its message; every valid record
// is delivered (dlq_good = 0) and every offset committed.
func TestRejectionsDeadLetterOnlyBadRecords(t *testing.T) {
	const n, every = 2000, 50
	c := newCluster(t, 2)
	topic, group, dlq := name(t, "topic"), name(t, "group"), name(t, "dlq")
	c.createTopic(t, topic, 2)
	c.createTopic(t, dlq, 1)
	c.produce(t, topic, n, 100)

	rc := newReceiver(t)
	var refusals atomic.Int64
	rc.setHook(func(w http.ResponseWriter, _ *http.Request, ids []int64) bool {
		var bad []int64
		for _, id := range ids {
			if id%every == 0 {
				bad = append(bad, id)
			}
		}
		if len(bad) == 0 {
			return false
		}
		refusals.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": "invalid record", "bad_ids": bad})
		return true
	})
	cfg := kafkaToHTTP(c, topic, group, rc.URL())
	httpSink(cfg).Rejections = &sinkhttp.Rejections{Path: "bad_ids", Match: "field", Field: "id"}
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
	wantBad := n / every
	dead := c.readTopic(t, dlq, wantBad)
	var dlqGood int
	seen := map[string]bool{}
	for _, d := range dead {
		var v struct{ ID int64 }
		if err := json.Unmarshal(d.Value, &v); err != nil {
			t.Fatalf("dead letter %q: %v", d.Value, err)
		}
		if v.ID%every != 0 {
			dlqGood++
			continue
		}
		id := fmt.Sprint(v.ID)
		seen[id] = true
		msg := header(d, deadletter.HeaderMessage)
		if !strings.Contains(msg, `bad_ids names id "`+id+`"`) || !strings.Contains(msg, "invalid record") {
			t.Errorf("dead letter of id %s: message %q, want its own id and the answer's error", id, msg)
		}
		if cl, st := header(d, deadletter.HeaderClass), header(d, "spillway.http.status"); cl != "fatal" || st != "400" {
			t.Errorf("dead letter of id %s: class %q status %q", id, cl, st)
		}
	}
	unique, _, missing := rc.stats(n)
	t.Logf("%d refusals (400), %d dead letters (%d valid), %d delivered", refusals.Load(), len(dead), dlqGood, unique)
	if dlqGood != 0 || len(dead) != wantBad || len(seen) != wantBad {
		t.Fatalf("dead letters: %d, %d of them valid, %d distinct bad ids; want %d bad, 0 valid", len(dead), dlqGood, len(seen), wantBad)
	}
	if unique != n-wantBad || len(missing) != wantBad {
		t.Fatalf("delivered %d valid records, want %d", unique, n-wantBad)
	}
}
