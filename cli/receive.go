package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// cmdReceive runs a demo HTTP destination for the compose stack and for
// trying rate limits by hand: it takes batches (a JSON array or NDJSON)
// on any path, counts their records, and with --rate enforces a limit the
// way API gateways do: a token bucket of rate records/s holding rate/10,
// 429 with Retry-After: 1 for a batch that does not fit. GET /stats
// answers the counts as JSON; a line every --every goes to stderr.
func (s *session) cmdReceive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("receive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	rate := fs.Float64("rate", 0, "records per second accepted (0: no limit); burst rate/10")
	every := fs.Duration("every", 5*time.Second, "how often to print the counts (0: never)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *rate < 0 {
		return usagef("--rate must not be negative, got %v", *rate)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	rc := &demoSink{rate: *rate, tokens: *rate / 10, last: time.Now()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", rc.stats)
	mux.Handle("/", rc)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stdout, "receiving on http://%s (rate %v records/s; 0: unlimited)\n", ln.Addr(), *rate)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	var tick <-chan time.Time
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	var prev int64
	for {
		select {
		case <-ctx.Done():
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(shut)
		case err := <-done:
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return err
		case <-tick:
			st := rc.snapshot()
			fmt.Fprintf(stderr, "received %d records in %d requests (%.0f records/s), %d requests refused with 429\n",
				st.Records, st.Requests, float64(st.Records-prev)/every.Seconds(), st.Throttled)
			prev = st.Records
		}
	}
}

// demoSink is the receive command's handler.
type demoSink struct {
	mu        sync.Mutex
	rate      float64
	tokens    float64
	last      time.Time
	records   int64
	requests  int64
	throttled int64
}

type demoStats struct {
	Records   int64 `json:"records"`
	Requests  int64 `json:"requests"`
	Throttled int64 `json:"throttled"`
}

func (d *demoSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodPatch {
		http.Error(w, "send batches with POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n, err := countRecords(body)
	if err != nil {
		http.Error(w, "bad body: "+err.Error(), http.StatusBadRequest)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rate > 0 {
		now := time.Now()
		d.tokens = min(d.rate/10, d.tokens+now.Sub(d.last).Seconds()*d.rate)
		d.last = now
		if float64(n) > d.tokens {
			d.throttled++
			w.Header().Set("Retry-After", "1")
			http.Error(w, "rate limit exceeded", http.StatusTooManyRequests)
			return
		}
		d.tokens -= float64(n)
	}
	d.records += int64(n)
	d.requests++
	w.WriteHeader(http.StatusNoContent)
}

// countRecords counts the elements of a JSON array, or the lines of NDJSON.
func countRecords(body []byte) (int, error) {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		var vals []json.RawMessage
		if err := json.Unmarshal(body, &vals); err != nil {
			return 0, err
		}
		return len(vals), nil
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, len(body)+1)
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
			if !json.Valid(line) {
				return 0, fmt.Errorf("line %d is not JSON", n+1)
			}
			n++
		}
	}
	return n, sc.Err()
}

func (d *demoSink) snapshot() demoStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return demoStats{Records: d.records, Requests: d.requests, Throttled: d.throttled}
}

func (d *demoSink) stats(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(d.snapshot())
}
