package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/job"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
)

// cmdDemo shows a real pipeline end to end on one machine: it starts the
// embedded broker, fills the source topic, starts a local HTTP receiver,
// runs the pipeline from the config into it with a live summary, stops once
// every record is committed, and checks nothing was lost.
func (s *session) cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "configs/quickstart.yaml", "pipeline `file` (needs a kafka source and an http sink)")
	records := fs.Int("records", 100_000, "records to produce into the source topic")
	size := fs.Int("value-bytes", 100, "value size in bytes")
	every := fs.Duration("summary", time.Second, "live summary interval")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := s.loadConfig(*path)
	if err != nil {
		return err
	}
	topics, _ := cfg.SourceTopics()
	httpSink, _ := cfg.Sink.Config.(*sinkhttp.Config)
	if len(topics) == 0 || httpSink == nil || !job.IsEmbedded(cfg) {
		return usagef("%s: the demo needs brokers: embedded, a kafka source and an http sink", *path)
	}
	if *records < 1 || *size < 32 {
		return usagef("--records must be >= 1 and --value-bytes >= 32")
	}
	log := newLogger(stderr, cfg.Log.Level, "text")

	emb, err := job.StartEmbedded(cfg, log)
	if err != nil {
		return err
	}
	defer emb.Close()
	topic := topics[0]
	fmt.Fprintf(stdout, "producing %d records of %d bytes to %s on the embedded broker %v\n", *records, *size, topic, emb.Addrs())
	if err := broker.Produce(ctx, emb.Addrs(), topic, *records, *size, 1000); err != nil {
		return err
	}

	rcv := newReceiver(*records)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: rcv, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	httpSink.URL = "http://" + ln.Addr().String() + "/ingest"
	fmt.Fprintf(stdout, "receiver listening on %s; running pipeline %q\n", httpSink.URL, cfg.Name)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	j, err := job.Build(runCtx, cfg, log, job.WithEmbedded(emb))
	if err != nil {
		return err
	}
	start := time.Now()
	var act activity
	stopSummary := startSummary(stdout, j, *every, &act)
	done := make(chan error, 1)
	go func() { done <- j.Run(runCtx) }()

	// Stop once every produced record was committed.
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var runErr error
wait:
	for {
		select {
		case runErr = <-done:
			break wait
		case <-t.C:
			if j.Snapshot().CommittedTotal() >= int64(*records) {
				cancel()
				runErr = <-done
				break wait
			}
		}
	}
	stopSummary()
	elapsed := time.Since(start)
	snap := j.Snapshot()
	if snap.Delivered+snap.DeadLettered+snap.Dropped > 0 {
		act.saw(time.Now())
	}
	printReport(stdout, snap, elapsed, act.window(start, max(*every, time.Second)))
	uniq, dups := rcv.counts()
	missing := int64(*records) - uniq - snap.Dropped - snap.DeadLettered
	fmt.Fprintf(stdout, "  receiver:        %d unique records, %d duplicates, %d requests\n  lost:            %d\n", uniq, dups, rcv.requests(), max(missing, 0))
	if runErr != nil {
		return runErr
	}
	if ctx.Err() != nil {
		return nil // interrupted by the user
	}
	if missing > 0 {
		return fmt.Errorf("%d records were not delivered", missing)
	}
	return nil
}

// receiver counts the records POSTed to it, by the "id" of each value.
type receiver struct {
	mu   sync.Mutex
	seen []bool
	uniq int64
	dups int64
	reqs int64
}

func newReceiver(n int) *receiver { return &receiver{seen: make([]bool, n)} }

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var vals []struct {
		ID *int64 `json:"id"`
	}
	if err := json.NewDecoder(io.LimitReader(req.Body, 64<<20)).Decode(&vals); err != nil {
		http.Error(w, "bad body: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs++
	for _, v := range vals {
		if v.ID == nil || *v.ID < 0 || *v.ID >= int64(len(r.seen)) {
			continue
		}
		if r.seen[*v.ID] {
			r.dups++
		} else {
			r.seen[*v.ID] = true
			r.uniq++
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) counts() (uniq, dups int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.uniq, r.dups
}

func (r *receiver) requests() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs
}
