package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// MemoryOptions configures the bounded-memory scenario.
type MemoryOptions struct {
	Brokers    []string      // a broker in another process, so its log is not in our heap
	Records    int           // default 200,000
	ValueBytes int           // default 1024
	Budget     int           // writer max_buffered_bytes; default 32 MiB
	SinkDelay  time.Duration // per request, to make the sink the bottleneck; default 2ms
	Log        io.Writer
}

// MemoryResult is what the scenario measured.
type MemoryResult struct {
	Records           int
	Budget            int64
	PeakBufferedBytes int64 // writer's own accounting
	PeakHeapInuse     int64 // sampled every 5ms
	BaselineRSS       int64 // VmRSS before the pipeline started
	PeakRSS           int64 // VmHWM at the end
	FetchPauses       int64
	Elapsed           time.Duration
}

// MemoryGoal is the most peak RSS may exceed the byte budget by.
const MemoryGoal = 64 << 20

// OverGoal reports whether peak RSS exceeded the budget by more than
// MemoryGoal.
func (r MemoryResult) OverGoal() bool { return r.PeakRSS-r.Budget > MemoryGoal }

func (r MemoryResult) String() string {
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	verdict := "within goal"
	if r.OverGoal() {
		verdict = "OVER GOAL"
	}
	return fmt.Sprintf("records=%d budget=%s peak_buffered=%s peak_heap_inuse=%s rss_baseline=%s peak_rss=%s (peak_rss - budget = %s: %s, goal <= %s) fetch_pauses=%d elapsed=%v",
		r.Records, mib(r.Budget), mib(r.PeakBufferedBytes), mib(r.PeakHeapInuse), mib(r.BaselineRSS), mib(r.PeakRSS),
		mib(r.PeakRSS-r.Budget), verdict, mib(MemoryGoal), r.FetchPauses, r.Elapsed.Round(time.Millisecond))
}

type slowSink struct{ d time.Duration }

func (s slowSink) WriteBatch(ctx context.Context, _ []pipeline.Record) error {
	t := time.NewTimer(s.d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Memory fills a topic on an external broker much faster than a slow sink
// drains it and reports peak memory against the writer's byte budget.
func Memory(ctx context.Context, o MemoryOptions) (MemoryResult, error) {
	if o.Records == 0 {
		o.Records = 200_000
	}
	if o.ValueBytes == 0 {
		o.ValueBytes = 1024
	}
	if o.Budget == 0 {
		o.Budget = 32 << 20
	}
	if o.SinkDelay == 0 {
		o.SinkDelay = 2 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	topic := fmt.Sprintf("memory-%d", time.Now().UnixNano())
	if err := broker.EnsureTopics(ctx, o.Brokers, 4, topic); err != nil {
		return MemoryResult{}, err
	}
	fmt.Fprintf(o.Log, "producing %d records of %d bytes (%d MiB) to %s\n", o.Records, o.ValueBytes, o.Records*o.ValueBytes>>20, topic)
	if err := broker.Produce(ctx, o.Brokers, topic, o.Records, o.ValueBytes, 1000); err != nil {
		return MemoryResult{}, err
	}
	// Forget the producer's memory: return it to the OS and reset the
	// peak-RSS mark (Linux: "5" to clear_refs), so VmHWM covers the pipeline.
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	// Tell the Go runtime the process's memory budget (what GOMEMLIMIT
	// does in production): without it the heap grows to twice the live
	// data before a collection, whatever the writer's budget.
	if os.Getenv("GOMEMLIMIT") == "" {
		prev := debug.SetMemoryLimit(int64(o.Budget) + 48<<20)
		defer debug.SetMemoryLimit(prev)
	}
	res := MemoryResult{Records: o.Records, Budget: int64(o.Budget), BaselineRSS: procStatus("VmRSS")}
	// The fetch sizes follow the writer's byte budget (its credit).
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j, err := benchJob(rctx, o.Brokers, topic, topic, slowSink{o.SinkDelay}, sinks.Config{MaxBatchSize: 500, MaxBatchBytes: 1 << 20,
		MaxBufferedBytes: o.Budget, MaxBufferedRequests: 1 << 20, MaxInFlightRequests: 8}, nil)
	if err != nil {
		return res, err
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- j.Run(rctx) }()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	var ms runtime.MemStats
	for _, d := j.Progress(); d < int64(o.Records); _, d = j.Progress() {
		select {
		case err := <-done:
			return res, fmt.Errorf("pipeline stopped early: %v", err)
		case <-ctx.Done():
			return res, ctx.Err()
		case <-t.C:
			runtime.ReadMemStats(&ms)
			res.PeakHeapInuse = max(res.PeakHeapInuse, int64(ms.HeapInuse))
		}
	}
	res.Elapsed = time.Since(start)
	cancel()
	if err := <-done; err != nil {
		return res, err
	}
	snap := j.Snapshot()
	res.PeakBufferedBytes, res.FetchPauses = snap.PeakBufferedBytes, snap.FetchPauses
	res.PeakRSS = procStatus("VmHWM")
	return res, nil
}

// procStatus reads a "kB" field of /proc/self/status in bytes; 0 if absent.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}
