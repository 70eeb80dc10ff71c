package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-io/spillway/internal/bench"
	"github.com/spillway-io/spillway/sinks"
)

func (s *session) cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.Options
	fs.IntVar(&o.Records, "records", 1_000_000, "records in the benchmark topic")
	fs.IntVar(&o.ValueBytes, "value-bytes", 100, "value size")
	fs.IntVar(&o.Partitions, "partitions", 4, "partitions")
	fs.IntVar(&o.Rounds, "rounds", 3, "alternating rounds per contender (median reported)")
	fs.BoolVar(&o.Metrics, "metrics", false, "throughput scenario: also run the pipeline with its OpenTelemetry metrics on (scraped every --metrics-scrape), alternating with metrics off, and report both ratios")
	fs.DurationVar(&o.MetricsScrape, "metrics-scrape", time.Second, "with --metrics: how often /metrics is collected")
	var w sinks.Config
	fs.IntVar(&w.MaxBatchSize, "max-batch-size", 0, "writer max_batch_size (0: default)")
	fs.IntVar(&w.MaxInFlightRequests, "max-in-flight", 0, "writer max_in_flight_requests (0: default)")
	fs.IntVar(&w.MaxBufferedRequests, "max-buffered", 0, "writer max_buffered_requests (0: default)")
	fs.StringVar(&w.Ordering, "ordering", "", "writer ordering: partition (default), key or none")
	scenario := fs.String("scenario", "throughput", "throughput: pipeline vs raw consumer; kafka: Kafka → Kafka sink vs a raw consume-produce loop; memory: slow sink, peak heap/RSS against the byte budget; ordering: each writer ordering against a slow sink, on topics of --ordering-partitions")
	orderParts := fs.String("ordering-partitions", "1,4,12", "ordering scenario: the partition counts of its topics, comma-separated")
	latency := fs.Duration("latency", 20*time.Millisecond, "ordering scenario: how long the sink takes to answer each request")
	keys := fs.Int("keys", 1000, "ordering scenario: distinct record keys")
	produceBatch := fs.Int("produce-batch-bytes", 1<<20, "ordering scenario: the producer's largest record batch when filling the topics (a fetch returns whole batches)")
	fetchPart := fs.Int("fetch-max-partition-bytes", 0, "ordering scenario: source.kafka.fetch_max_partition_bytes (0: its default)")
	budget := fs.Int("budget", 32<<20, "memory scenario: writer max_buffered_bytes")
	fs.StringVar(&o.Delivery, "delivery", "", "kafka scenario: the sink's delivery, at_least_once (default) or exactly_once (then the at_least_once pipeline runs in the same rounds too)")
	fs.DurationVar(&o.TxnInterval, "transaction-interval", 0, "kafka scenario with --delivery exactly_once: the sink's transaction_interval (0: its default)")
	brokers := fs.String("brokers", "", "throughput and kafka scenarios: an external cluster (host:port,...) instead of the embedded broker; a topic of the run's own is created and deleted")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	run := bench.Run
	switch *scenario {
	case "throughput":
	case "kafka":
		run = bench.RunKafka
	case "memory":
		return benchMemory(ctx, stdout, stderr, *budget)
	case "ordering":
		oo := bench.OrderingOptions{Keys: *keys, Latency: *latency, ProduceBatchBytes: *produceBatch, FetchMaxPartitionBytes: *fetchPart}
		return benchOrdering(ctx, fs, stdout, stderr, o, w, oo, *orderParts)
	default:
		return usagef("--scenario must be throughput, kafka, memory or ordering, got %q", *scenario)
	}
	if o.Delivery != "" && *scenario != "kafka" {
		return usagef("--delivery applies to --scenario kafka only")
	}
	if o.Records < 1 || o.ValueBytes < 32 || o.Partitions < 1 || o.Rounds < 1 {
		return usagef("--records, --partitions, --rounds must be >= 1 and --value-bytes >= 32")
	}
	o.Writer, o.Log = w, stderr
	if *brokers != "" {
		o.Brokers = strings.Split(*brokers, ",")
	}
	res, err := run(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res)
	return nil
}

// benchOrdering runs the ordering scenario oo with o's records (200,000
// unless --records is given), value size and rounds and w's writer
// settings, on topics of each partition count in parts.
func benchOrdering(ctx context.Context, fs *flag.FlagSet, stdout, stderr io.Writer, o bench.Options, w sinks.Config, oo bench.OrderingOptions, parts string) error {
	oo.ValueBytes, oo.Rounds, oo.Writer, oo.Log = o.ValueBytes, o.Rounds, w, stderr
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "records" {
			oo.Records = o.Records
		}
	})
	if w.Ordering != "" {
		return usagef("--ordering does not apply to the ordering scenario, which runs every mode")
	}
	for _, p := range strings.Split(parts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return usagef("--ordering-partitions must be positive numbers separated by commas, got %q", parts)
		}
		oo.Partitions = append(oo.Partitions, n)
	}
	if o.Records < 1 || o.ValueBytes < 32 || o.Rounds < 1 || oo.Keys < 1 || oo.Latency <= 0 || oo.ProduceBatchBytes < 1024 || oo.FetchMaxPartitionBytes < 0 {
		return usagef("--records, --rounds, --keys must be >= 1, --value-bytes >= 32, --latency > 0, --produce-batch-bytes >= 1024 and --fetch-max-partition-bytes >= 0")
	}
	res, err := bench.RunOrdering(ctx, oo)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res)
	return nil
}

// benchMemory runs the broker in a child process (so its log is not in this
// process's memory) and measures the pipeline against a slow sink.
func benchMemory(ctx context.Context, stdout, stderr io.Writer, budget int) error {
	if budget < 1<<20 {
		return usagef("--budget must be at least 1 MiB")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "spillway-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.CommandContext(ctx, exe, "broker", "--port", strconv.Itoa(port), "--data-dir", dir)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			return fmt.Errorf("broker child did not listen on %s: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	res, err := bench.Memory(ctx, bench.MemoryOptions{Brokers: []string{addr}, Budget: budget, Log: stderr})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res)
	return nil
}
