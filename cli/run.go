package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	"github.com/spillway-io/spillway/internal/ops"
	"github.com/spillway-io/spillway/state"
)

func (s *session) loadConfig(path string) (*config.Pipeline, error) {
	if path == "" {
		return nil, usagef("-c FILE is required")
	}
	cfg, err := config.Load(path, config.WithRegistry(s.reg))
	if err != nil {
		return nil, usageError{err}
	}
	return cfg, nil
}

func (s *session) cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "pipeline `file`")
	print := fs.Bool("print", false, "print the pipeline with every default filled in (secrets redacted)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := s.loadConfig(*path)
	if err != nil {
		return err
	}
	if *print {
		out, err := cfg.Marshal()
		if err != nil {
			return err
		}
		_, err = stdout.Write(out)
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return nil
}

// cmdConfig prints reference material about pipeline files.
func (s *session) cmdConfig(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "defaults" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, configUsage)
			return nil
		}
		return usagef("config: want a subcommand\n\n%s", configUsage)
	}
	fs := flag.NewFlagSet("config defaults", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	out, err := config.Reference(s.reg)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

const configUsage = `Usage:
  spillway config defaults    print every key of a pipeline file with its default, for every kind
`

func (s *session) cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "pipeline `file`")
	every := fs.Duration("summary", 2*time.Second, "print a live summary line to stderr this often (0 disables)")
	fromID := fs.String("from-savepoint", "", "restore the job's savepoint `id` (state topic) before consuming: offsets (the group must be empty) and state")
	fromFile := fs.String("from-savepoint-file", "", "restore the savepoint written to `path` (savepoint create --file) before consuming")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := s.loadConfig(*path)
	if err != nil {
		return err
	}
	var restore job.Option
	switch {
	case *fromID != "" && *fromFile != "":
		return usageError{errSavepointFlags}
	case *fromID != "":
		if err := state.ValidateSavepointID(*fromID); err != nil {
			return usagef("--from-savepoint: %v", err)
		}
		restore = job.FromSavepoint(*fromID)
	case *fromFile != "":
		restore = job.FromSavepointFile(*fromFile)
	}
	if restore != nil {
		if _, ok := cfg.SourceTopics(); !ok {
			return usagef("--from-savepoint: the source is %s: only a Kafka source's consumer group can be restored", cfg.Source.Kind)
		}
	}
	log := newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	s.log.Store(log)
	jopts := []job.Option{job.WithStdout(stdout)}
	if restore != nil {
		jopts = append(jopts, restore)
	}
	var opsOpts []ops.Option
	tel, err := startTelemetry(ctx, cfg.Ops.Listen != "", log)
	if err != nil {
		return err
	}
	defer tel.shutdown()
	if tel.metrics != nil {
		jopts = append(jopts, job.WithMeterProvider(tel.metrics.MeterProvider()))
		opsOpts = append(opsOpts, ops.WithMetrics(tel.metrics.Handler()))
	}
	if tel.tp != nil {
		jopts = append(jopts, job.WithTracerProvider(tel.tp))
	}
	j, err := job.Build(ctx, cfg, log, jopts...)
	if err != nil {
		return err
	}
	commit := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := j.Checkpoint(cctx); err != nil {
			log.Warn("final commit on second signal failed", "err", err)
		}
	}
	s.onSecondSignal.Store(&commit)
	if cfg.Ops.Listen != "" {
		srv, err := ops.Start(cfg.Ops.Listen, j.Health, log, opsOpts...)
		if err != nil {
			return usageError{err}
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Close(cctx)
		}()
	}
	start := time.Now()
	var act activity
	stopSummary := startSummary(stderr, j, *every, &act)
	err = j.Run(ctx)
	stopSummary()
	// A job that failed before anything reached it has nothing to report
	// but its error.
	if snap := j.Snapshot(); err == nil || snap.In > 0 || snap.Requests > 0 {
		end := time.Now()
		if snap.Delivered+snap.DeadLettered+snap.Dropped > 0 {
			act.saw(end) // the drain may have finished the last records
		}
		printReport(stderr, snap, end.Sub(start), act.window(start, max(*every, time.Second)))
	}
	return err
}

// activity is when a job's records were being done: its first and last
// samples with progress, for a rate over the time the job worked rather
// than the time it waited.
type activity struct {
	mu          sync.Mutex
	first, last time.Time
}

func (a *activity) saw(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.first.IsZero() {
		a.first = now
	}
	a.last = now
}

// window is the active time: from the start (or the first progress, when
// later, minus one sample: records were done during it) to the last
// progress; zero without progress.
func (a *activity) window(start time.Time, sample time.Duration) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.first.IsZero() {
		return 0
	}
	from := max(start.UnixNano(), a.first.Add(-sample).UnixNano())
	return a.last.Sub(time.Unix(0, from))
}

// startSummary prints one line every interval (none when every is 0)
// until the returned func is called, and samples progress (at least every
// second) into act.
func startSummary(w io.Writer, j *job.Job, every time.Duration, act *activity) func() {
	sample := every
	if every <= 0 || every > time.Second {
		sample = time.Second
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(sample)
		defer t.Stop()
		start := time.Now()
		var last, lastSampled int64
		lastT, lastPrint := start, start
		var lastS job.Snapshot
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				s := j.Snapshot()
				done := s.Delivered + s.DeadLettered + s.Dropped
				if done != lastSampled {
					act.saw(now)
					lastSampled = done
				}
				if every <= 0 || now.Sub(lastPrint) < every-sample/2 {
					continue
				}
				lastPrint = now
				rate := float64(done-last) / now.Sub(lastT).Seconds()
				last, lastT = done, now
				si, sb, sp := s.SourceTask.PerSecond(lastS.SourceTask)
				ki, kb, kp := s.SinkTask.PerSecond(lastS.SinkTask)
				lastS = s
				fmt.Fprintf(w, "[%s] %6.0fs  %9.0f rec/s  in=%d delivered=%d dead_lettered=%d dropped=%d buffered=%d (%s) in_flight_requests=%d retried=%d breaker=%s state=%s%s fetch_pauses=%d  ms/s idle/busy/backpressured: source %.0f/%.0f/%.0f sink %.0f/%.0f/%.0f  committed=%s\n",
					j.Name, now.Sub(start).Seconds(), rate, s.In, s.Delivered, s.DeadLettered, s.Dropped,
					s.Buffered, fmtBytes(s.BufferedBytes), s.InFlightRequests, s.Retried, s.Breaker, s.State, fmtLimit(s.Limit), s.FetchPauses,
					si, sb, sp, ki, kb, kp, fmtCommitted(s.Committed))
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// printReport prints the final counts. The rate is over the time records
// were being done (active), not the whole run: a job that waited for
// input does not report a fraction of what it did.
func printReport(w io.Writer, s job.Snapshot, elapsed, active time.Duration) {
	done := s.Delivered + s.DeadLettered + s.Dropped
	rate := "-"
	if active > 0 {
		rate = fmt.Sprintf("%.0f rec/s over %s of activity", float64(done)/active.Seconds(), active.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "\nfinal report after %s\n  records in:      %d\n  delivered:       %d\n  dead-lettered:   %d\n  dropped (filter):%d\n  retried:         %d\n  requests:        %d\n  still buffered:  %d\n  throughput:      %s\n  committed:       %s\n",
		elapsed.Round(time.Millisecond), s.In, s.Delivered, s.DeadLettered, s.Dropped, s.Retried, s.Requests,
		s.Buffered, rate, fmtCommitted(s.Committed))
	if s.Abandoned > 0 {
		fmt.Fprintf(w, "  not sent (partition moved to another worker): %d\n", s.Abandoned)
	}
}

// fmtLimit shows a live limit (spillway limits set) in the summary line.
func fmtLimit(l string) string {
	if l == "" {
		return ""
	}
	return " limit=" + strings.ReplaceAll(l, " ", ",")
}

func fmtBytes(b int64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func fmtCommitted(m map[string]map[int32]int64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for t, ps := range m {
		var ids []int32
		for p := range ps {
			ids = append(ids, p)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		var xs []string
		for _, p := range ids {
			xs = append(xs, fmt.Sprintf("%d:%d", p, ps[p]))
		}
		parts = append(parts, t+"["+strings.Join(xs, " ")+"]")
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func (s *session) cmdBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data-dir", "", "persist the log and offsets in `dir` (empty: memory only)")
	port := fs.Int("port", 9092, "listen `port` of the first broker (127.0.0.1)")
	n := fs.Int("brokers", 1, "number of brokers")
	parts := fs.Int("partitions", 4, "default partitions of created topics")
	topics := fs.String("topics", "", "comma-separated topics to create at start")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *port < 0 || *port > 65535 || *n < 1 || *parts < 1 {
		return usagef("--port must be 0-65535, --brokers and --partitions at least 1")
	}
	var ts []string
	for _, t := range strings.Split(*topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			ts = append(ts, t)
		}
	}
	e, err := broker.Start(broker.Options{DataDir: *dir, Port: *port, Brokers: *n, Partitions: *parts, Topics: ts})
	if err != nil {
		return err
	}
	defer e.Close()
	fmt.Fprintf(stdout, "kafka broker listening on %s (data dir: %q); Ctrl-C stops\n", strings.Join(e.Addrs(), ","), *dir)
	<-ctx.Done()
	return nil
}

func (s *session) cmdProduce(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated broker `addresses`")
	topic := fs.String("topic", "", "topic to write (required)")
	count := fs.Int("count", 10000, "records to write")
	size := fs.Int("value-bytes", 100, "value size in bytes")
	keys := fs.Int("keys", 1000, "distinct keys")
	parts := fs.Int("partitions", 4, "partitions if the topic must be created")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *topic == "" || *count < 0 || *size < 16 || *keys < 1 {
		return usagef("--topic is required; --count >= 0, --value-bytes >= 16, --keys >= 1")
	}
	bs := strings.Split(*brokers, ",")
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := broker.EnsureTopics(tctx, bs, int32(*parts), *topic); err != nil {
		return err
	}
	start := time.Now()
	if err := broker.Produce(ctx, bs, *topic, *count, *size, *keys); err != nil {
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	fmt.Fprintf(stdout, "produced %d records to %s in %s\n", *count, *topic, time.Since(start).Round(time.Millisecond))
	return nil
}
