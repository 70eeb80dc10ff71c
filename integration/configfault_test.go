package integration

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// TestSinkConfigFaultStopsJob (issue 10, finding 4): a destination that
// refuses every request for a reason that has nothing to do with the
// records (431 Request Header Fields Too Large: a header set in the config)
// stops the job with that reason. Measured from outside: the dead-letter
// topic stays empty, nothing is committed and the receiver got nothing, so
// the records are all delivered once the config is fixed. Before, every
// record was dead-lettered (2,000 of 2,000). The fault is the sink's, so it
// runs on external brokers too.
func TestSinkConfigFaultStopsJob(t *testing.T) {
	const parts, preload = 2, 2000
	e := newFaultEnvOn(t, newCluster(t, parts), parts, preload)
	dlq := name(t, "dlq")
	e.c.createTopic(t, dlq, 1)
	e.cfg.Errors.Tolerance = "all"
	e.cfg.Errors.Topic = dlq
	var refused atomic.Int64
	e.rc.setHook(func(w http.ResponseWriter, _ *http.Request, _ []int64) bool {
		refused.Add(1)
		http.Error(w, "request header fields too large", http.StatusRequestHeaderFieldsTooLarge)
		return true
	})
	j, stop := startJob(t, e.cfg)
	waitFor(t, "the job to stop on its own", time.Minute, func() bool { return j.Health().Status == "stopped" })
	err := stop()
	if err == nil || !strings.Contains(err.Error(), "configuration fault") || !strings.Contains(err.Error(), "431") {
		t.Fatalf("job ended with %v; want a configuration fault naming 431", err)
	}
	if refused.Load() == 0 {
		t.Fatal("the receiver saw no request")
	}
	if got := e.committed(); sum(got) != 0 {
		t.Errorf("committed %v; want nothing: no record was delivered or dead-lettered", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := e.adm.ListEndOffsets(ctx, dlq)
	if err != nil {
		t.Fatal(err)
	}
	var dead int64
	ends.Each(func(o kadm.ListedOffset) { dead += o.Offset })
	if dead != 0 {
		t.Errorf("the dead-letter topic holds %d records; a configuration fault must not dead-letter data", dead)
	}
	if s := j.Snapshot(); s.Delivered != 0 || s.DeadLettered != 0 {
		t.Errorf("snapshot: delivered %d, dead-lettered %d; want 0, 0", s.Delivered, s.DeadLettered)
	}
}

func sum(m map[int32]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
