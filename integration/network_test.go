package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/internal/job"
	"github.com/spillway-io/spillway/sinks"
)

// Network fault scenarios (issue 4): a real TCP fault proxy (toxiproxy,
// used as a library) sits between Spillway and its HTTP sink, or between
// every client and the Kafka broker, and degrades the traffic mid-stream:
// latency, a bandwidth limit, a stall (timeout toxic), connection resets and
// sliced TCP segments. Each scenario feeds a topic with generated ids while
// the fault is on, removes the fault, and then checks with finish that no
// record was lost and every partition is committed to its end; duplicates
// are logged. Each one also checks that the fault really hit the traffic.
//
// Nothing asserts that something was fast. The only time-based checks are
// lower bounds that the toxics themselves guarantee (a latency toxic never
// delivers a byte early, a bandwidth toxic never passes more than its rate),
// which a slow machine can only make easier to meet.

const skipNoProxy = "broker network faults need the in-process kfake cluster behind a fault proxy; " +
	"unset SPILLWAY_TEST_BROKERS and SPILLWAY_TEST_TESTCONTAINERS to run it"

const (
	netParts   = 4
	netPreload = 2000
)

// newToxiServer returns the toxiproxy server its proxies report to. Its
// metrics container must not be nil: every proxied connection asks it
// whether proxy metrics are enabled when the connection ends. Some toxics
// (bandwidth) log to zerolog's global logger at trace level, which would
// print to stderr, so zerolog is silenced for the test binary (only
// toxiproxy uses it).
func newToxiServer() *toxiproxy.ApiServer {
	zerolog.SetGlobalLevel(zerolog.Disabled)
	return toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
}

// startProxy starts a proxy on a free loopback port forwarding to upstream.
// Its address is in proxy.Listen once it returns.
func startProxy(srv *toxiproxy.ApiServer, name, upstream string) (*toxiproxy.Proxy, error) {
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("start proxy %s to %s: %w", name, upstream, err)
	}
	return p, nil
}

// toxic is the JSON form toxiproxy takes. Stream "both" adds one toxic per
// direction, named Name+"_up" and Name+"_down".
type toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float32        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// poison adds tx to every proxy; the returned heal removes it again (the
// first call only; it also runs at cleanup).
func poison(t *testing.T, proxies []*toxiproxy.Proxy, tx toxic) (heal func()) {
	t.Helper()
	tx.Toxicity = 1
	var parts []toxic
	if tx.Stream == "both" {
		up, down := tx, tx
		up.Name, up.Stream = tx.Name+"_up", "upstream"
		down.Name, down.Stream = tx.Name+"_down", "downstream"
		parts = []toxic{up, down}
	} else {
		parts = []toxic{tx}
	}
	var added []func()
	for _, p := range proxies {
		for _, x := range parts {
			body, err := json.Marshal(x)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
				t.Fatalf("add toxic %s to proxy %s: %v", x.Name, p.Name, err)
			}
			added = append(added, func() {
				if err := p.Toxics.RemoveToxic(context.Background(), x.Name); err != nil {
					t.Errorf("remove toxic %s from proxy %s: %v", x.Name, p.Name, err)
				}
			})
		}
	}
	heal = sync.OnceFunc(func() {
		for _, rm := range added {
			rm()
		}
	})
	t.Cleanup(heal)
	return heal
}

// connStats counts what the server behind a proxy sees of its connections:
// they all come from the proxy.
type connStats struct {
	accepted atomic.Int64 // connections accepted
	resets   atomic.Int64 // reads that failed with ECONNRESET

	mu    sync.Mutex
	conns []*countingConn
}

// read returns the bytes read so far from each connection.
func (s *connStats) read() map[*countingConn]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[*countingConn]int64, len(s.conns))
	for _, c := range s.conns {
		out[c] = c.n.Load()
	}
	return out
}

// readSince returns, per connection, the bytes read since base, and their
// sum.
func (s *connStats) readSince(base map[*countingConn]int64) (per map[*countingConn]int64, total int64) {
	per = s.read()
	for c, n := range per {
		per[c] = n - base[c]
		total += per[c]
	}
	return per, total
}

// countingListener accepts connections that count what is read from them.
// addr, when set, is the address it reports instead of its own.
type countingListener struct {
	net.Listener
	st   *connStats
	addr net.Addr
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countingConn{Conn: c, st: l.st}
	l.st.accepted.Add(1)
	l.st.mu.Lock()
	l.st.conns = append(l.st.conns, cc)
	l.st.mu.Unlock()
	return cc, nil
}

func (l *countingListener) Addr() net.Addr {
	if l.addr != nil {
		return l.addr
	}
	return l.Listener.Addr()
}

type countingConn struct {
	net.Conn
	st *connStats
	n  atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	if errors.Is(err, syscall.ECONNRESET) {
		c.st.resets.Add(1)
	}
	return n, err
}

// sinkFront is the receiver's handler served on a counting listener, with
// a fault proxy in front of it. The job sends to URL, through the proxy.
type sinkFront struct {
	proxy *toxiproxy.Proxy
	st    *connStats
	URL   string
}

// newSinkFront serves rc's handler behind a proxy. It serves on its own
// listener rather than rc.srv's so that it can count the connections and
// bytes that reach the receiver.
func newSinkFront(t *testing.T, rc *receiver) *sinkFront {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &sinkFront{st: &connStats{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
	_ = srv.Listener.Close()
	srv.Listener = &countingListener{Listener: l, st: f.st}
	srv.Start()
	t.Cleanup(srv.Close)
	if f.proxy, err = startProxy(newToxiServer(), "sink", l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.proxy.Stop) // runs before srv.Close
	f.URL = "http://" + f.proxy.Listen + "/ingest"
	return f
}

// newSinkNetEnv is a fault environment on any cluster whose job sends to
// the receiver through a fault proxy.
func newSinkNetEnv(t *testing.T) (*faultEnv, *sinkFront) {
	t.Helper()
	e := newFaultEnvOn(t, newCluster(t, netParts), netParts, netPreload)
	f := newSinkFront(t, e.rc)
	httpSink(e.cfg).URL = f.URL
	return e, f
}

// proxiedBroker is an in-process kfake cluster whose brokers clients reach
// only through fault proxies: each broker advertises its proxy's address,
// so seed and discovered connections alike go through it.
type proxiedBroker struct {
	proxies []*toxiproxy.Proxy
	st      *connStats // the brokers' side of the proxied connections
}

// newBrokerNetEnv is a fault environment on a kfake cluster behind fault
// proxies, or skips t on external brokers.
func newBrokerNetEnv(t *testing.T) (*faultEnv, *proxiedBroker) {
	t.Helper()
	if os.Getenv("SPILLWAY_TEST_BROKERS") != "" || os.Getenv("SPILLWAY_TEST_TESTCONTAINERS") == "1" {
		t.Skip(skipNoProxy)
	}
	srv := newToxiServer()
	pb := &proxiedBroker{st: &connStats{}}
	var mu sync.Mutex
	// Registered before the cluster's Close, so it runs after it.
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range pb.proxies {
			p.Stop()
		}
	})
	listen := func(network, address string) (net.Listener, error) {
		l, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		p, err := startProxy(srv, fmt.Sprintf("kafka-%d", len(pb.proxies)), l.Addr().String())
		if err != nil {
			_ = l.Close()
			return nil, err
		}
		pb.proxies = append(pb.proxies, p)
		addr, err := net.ResolveTCPAddr("tcp", p.Listen)
		if err != nil {
			_ = l.Close()
			return nil, err
		}
		return &countingListener{Listener: l, st: pb.st, addr: addr}, nil
	}
	b, err := broker.Start(broker.Options{Partitions: netParts, ListenFn: listen})
	if err != nil {
		t.Fatalf("start kfake behind a fault proxy: %v", err)
	}
	t.Cleanup(b.Close)
	c := &cluster{Addrs: b.Addrs(), Fake: b.Cluster(), kind: "kfake+toxiproxy"}
	for i, a := range c.Addrs {
		if a != pb.proxies[i].Listen {
			t.Fatalf("broker %d advertises %s, want its proxy %s", i, a, pb.proxies[i].Listen)
		}
	}
	e := newFaultEnvOn(t, c, netParts, netPreload)
	// Small fetches (128 KiB, 64 KiB per partition): a fetch response must
	// cross a degraded link well within the client's read timeout.
	e.cfg.Sink.Writer.MaxBufferedBytes = 1 << 20
	e.cfg.Sink.Writer.MaxBatchBytes = 256 << 10
	return e, pb
}

// waitDeliveredSince waits until the receiver accepted n distinct ids of at
// least from. On the broker side, ids the feed had not produced when a fault
// began (from = e.feed.count() then) crossed the faulted link both ways,
// produced and fetched, except those of the one produce call in flight.
func waitDeliveredSince(e *faultEnv, what string, from int64, n int) {
	e.t.Helper()
	waitFor(e.t, what, time.Minute, func() bool {
		e.rc.mu.Lock()
		defer e.rc.mu.Unlock()
		got := 0
		for id := range e.rc.seen {
			if id >= from {
				got++
			}
		}
		return got >= n
	})
}

// sinkFailures counts the sink failures the job logs, by kind.
type sinkFailures struct {
	timeouts  atomic.Int64 // requests that ran past request_timeout
	transport atomic.Int64 // requests that failed without a response (reset, closed)
}

// failureHandler feeds sinkFailures from the job's log records and passes
// them on to the test logger.
type failureHandler struct {
	next slog.Handler
	f    *sinkFailures
}

func (h failureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h failureHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		err, ok := a.Value.Any().(error)
		if !ok {
			return true
		}
		var de *sinks.DetailedError
		switch {
		case errors.Is(err, sinks.ErrRequestTimeout):
			h.f.timeouts.Add(1)
		case errors.As(err, &de) && de.Details["http.error"] == "transport":
			h.f.transport.Add(1)
		}
		return true
	})
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h failureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return failureHandler{next: h.next.WithAttrs(as), f: h.f}
}

func (h failureHandler) WithGroup(name string) slog.Handler {
	return failureHandler{next: h.next.WithGroup(name), f: h.f}
}

// startWatchedJob is startJob with the job's sink failures counted.
func startWatchedJob(t *testing.T, cfg *config.Pipeline) (*job.Job, *sinkFailures, func() error) {
	t.Helper()
	f := &sinkFailures{}
	j, stop := startJobLogging(t, cfg, slog.New(failureHandler{next: testLogger(t).Handler(), f: f}))
	return j, f, stop
}

// httpProbe sends one request to url on a new connection and returns how
// long the answer took, its status and body.
func httpProbe(url string) (time.Duration, int, string, error) {
	cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	start := time.Now()
	resp, err := cl.Get(url)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return time.Since(start), resp.StatusCode, string(body), err
}

// kafkaProbe sends one ApiVersions request to addr on a new connection and
// returns how long the answer took. limit bounds the whole exchange.
func kafkaProbe(addr string, limit time.Duration) (time.Duration, error) {
	return kafkaProbeID(addr, "spillway-probe", limit)
}

// kafkaProbeID is kafkaProbe with the request's client id, which can pad
// the request (up to 32 KiB).
func kafkaProbeID(addr, clientID string, limit time.Duration) (time.Duration, error) {
	conn, err := net.DialTimeout("tcp", addr, limit)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(limit)); err != nil {
		return 0, err
	}
	const corr = 7
	req := kmsg.NewPtrApiVersionsRequest() // v0: no flexible header
	msg := kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID)).AppendRequest(nil, req, corr)
	start := time.Now()
	if _, err := conn.Write(msg); err != nil {
		return 0, err
	}
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return 0, err
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(conn, body); err != nil {
		return 0, err
	}
	rtt := time.Since(start)
	if len(body) < 4 || binary.BigEndian.Uint32(body) != corr {
		return rtt, fmt.Errorf("ApiVersions answer of %d bytes with the wrong correlation id", len(body))
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	if err := resp.ReadFrom(body[4:]); err != nil {
		return rtt, fmt.Errorf("parse ApiVersions answer: %w", err)
	}
	if resp.ErrorCode != 0 || len(resp.ApiKeys) == 0 {
		return rtt, fmt.Errorf("ApiVersions answered error %d with %d keys", resp.ErrorCode, len(resp.ApiKeys))
	}
	return rtt, nil
}

// checkRate fails t if a connection read more during a window of elapsed
// than a bandwidth toxic of kbps lets through. slack covers what was already
// past the toxic when it was added: a chunk inside the proxy (at most 32
// KiB) and what the peer had not read yet.
func checkRate(t *testing.T, what string, per map[*countingConn]int64, kbps int64, elapsed time.Duration) {
	t.Helper()
	const slack = 64 << 10
	limit := kbps*1000*int64(elapsed)/int64(time.Second) + slack
	for _, n := range per {
		if n > limit {
			t.Fatalf("%s: a connection carried %d bytes in %v, more than a %d KB/s toxic lets through (%d with slack); the toxic was not in effect",
				what, n, elapsed.Round(time.Millisecond), kbps, limit)
		}
	}
}

// TestNetworkSinkLatency: every response from the sink is delayed by
// 300±50ms. The job keeps delivering with requests in flight, nothing is
// retried (request_timeout is far above the latency), and a probe through
// the proxy takes at least the minimum latency.
func TestNetworkSinkLatency(t *testing.T) {
	e, f := newSinkNetEnv(t)
	e.cfg.Sink.Writer.RequestTimeout = 30 * time.Second
	j, _, stopJob := startWatchedJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 50, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 500)

	heal := poison(t, []*toxiproxy.Proxy{f.proxy}, toxic{Name: "latency", Type: "latency", Stream: "downstream",
		Attributes: map[string]any{"latency": 300, "jitter": 50}})
	before, s0 := e.rc.uniqueCount(), j.Snapshot()
	rtt, _, _, err := httpProbe(f.URL)
	if err != nil {
		t.Fatalf("probe through the latency: %v", err)
	}
	if rtt < 250*time.Millisecond {
		t.Fatalf("a probe answered in %v through a 300±50ms latency toxic; the toxic was not in effect", rtt)
	}
	e.waitDelivered("delivery through the latency", before+1500)
	s1 := j.Snapshot()
	heal()
	if s1.Retried != s0.Retried {
		t.Fatalf("%d records retried under latency alone", s1.Retried-s0.Retried)
	}
	dups := e.finish("sink latency", stopFeed, stopJob, nil)
	t.Logf("sink latency: probe %v, %d requests and %d records delivered under the toxic, %d duplicates",
		rtt.Round(time.Millisecond), s1.Requests-s0.Requests, s1.Delivered-s0.Delivered, dups)
}

// TestNetworkSinkBandwidth: requests to the sink are limited to 64 KB/s per
// connection (two connections in flight) while the topic keeps filling. The
// job keeps delivering through the narrow link; no connection carries more
// than the limit allows, so the toxic was in effect.
func TestNetworkSinkBandwidth(t *testing.T) {
	const kbps = 64
	e, f := newSinkNetEnv(t)
	e.cfg.Sink.Writer.MaxInFlightRequests = 2
	e.cfg.Sink.Writer.RequestTimeout = 30 * time.Second
	j, _, stopJob := startWatchedJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 50, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 500)

	start := time.Now() // before the toxic: only widens the allowance
	heal := poison(t, []*toxiproxy.Proxy{f.proxy}, toxic{Name: "bandwidth", Type: "bandwidth", Stream: "upstream",
		Attributes: map[string]any{"rate": kbps}})
	base, before, s0 := f.st.read(), e.rc.uniqueCount(), j.Snapshot()
	var per map[*countingConn]int64
	var total int64
	waitFor(t, "300 KB through the throttled link", time.Minute, func() bool {
		per, total = f.st.readSince(base)
		return total >= 300_000
	})
	elapsed := time.Since(start)
	delivered, s1 := e.rc.uniqueCount()-before, j.Snapshot()
	heal()
	checkRate(t, "sink bandwidth", per, kbps, elapsed)
	if delivered == 0 {
		t.Fatal("no record delivered through the throttled link")
	}
	dups := e.finish("sink bandwidth", stopFeed, stopJob, nil)
	t.Logf("sink bandwidth: %d bytes over %d connections in %v, %d records delivered and %d retried under the toxic, %d duplicates",
		total, len(per), elapsed.Round(time.Millisecond), delivered, s1.Retried-s0.Retried, dups)
}

// TestNetworkSinkTimeout: the link to the sink stalls (data is dropped, the
// connection closed only after 4s). request_timeout (1s) fires, the job
// retries, and once the stall ends every record arrives.
func TestNetworkSinkTimeout(t *testing.T) {
	e, f := newSinkNetEnv(t)
	e.cfg.Sink.Writer.RequestTimeout = time.Second
	j, fails, stopJob := startWatchedJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 50, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 500)

	heal := poison(t, []*toxiproxy.Proxy{f.proxy}, toxic{Name: "stall", Type: "timeout", Stream: "upstream",
		Attributes: map[string]any{"timeout": 4000}})
	timeouts, s0 := fails.timeouts.Load(), j.Snapshot()
	// Duplicates are possible and fine: a request stalled on a kept-alive
	// connection is replayed by net/http on a new one when the stall ends
	// (the Idempotency-Key makes it replayable), and that replay can reach
	// the receiver just as request_timeout abandons the attempt.
	waitFor(t, "a request timed out and retried", 30*time.Second, func() bool {
		return fails.timeouts.Load() > timeouts && j.Snapshot().Retried > s0.Retried
	})
	s1 := j.Snapshot()
	heal()
	dups := e.finish("sink timeout", stopFeed, stopJob, nil)
	t.Logf("sink timeout: %d timed-out requests logged, %d records retried during the stall, %d duplicates",
		fails.timeouts.Load()-timeouts, s1.Retried-s0.Retried, dups)
}

// TestNetworkSinkResetPeer: every connection to the sink is reset as soon
// as the response starts, after the receiver took the batch. The job sees
// transport errors and retries, the receiver sees resets, and the batches
// whose answers were lost arrive again: at-least-once, with duplicates.
func TestNetworkSinkResetPeer(t *testing.T) {
	e, f := newSinkNetEnv(t)
	j, fails, stopJob := startWatchedJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 50, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 500)

	heal := poison(t, []*toxiproxy.Proxy{f.proxy}, toxic{Name: "reset", Type: "reset_peer", Stream: "downstream",
		Attributes: map[string]any{"timeout": 0}})
	transport, resets, accepted, s0 := fails.transport.Load(), f.st.resets.Load(), f.st.accepted.Load(), j.Snapshot()
	waitFor(t, "resets seen by the job and the receiver", 30*time.Second, func() bool {
		return fails.transport.Load() > transport && f.st.resets.Load() > resets
	})
	s1 := j.Snapshot()
	heal()
	dups := e.finish("sink reset_peer", stopFeed, stopJob, nil)
	if dups == 0 {
		t.Fatal("no duplicates: the batches whose responses were reset were not sent again")
	}
	t.Logf("sink reset_peer: %d transport failures logged, %d resets at the receiver, %d new connections, %d records retried, %d duplicates",
		fails.transport.Load()-transport, f.st.resets.Load()-resets, f.st.accepted.Load()-accepted, s1.Retried-s0.Retried, dups)
}

// TestNetworkSinkSlicer: both directions of the sink link are cut into
// 32-96 byte segments with a pause between them. HTTP still parses: the
// job keeps delivering without a single failed request, and a probe gets a
// well-formed answer.
func TestNetworkSinkSlicer(t *testing.T) {
	e, f := newSinkNetEnv(t)
	e.cfg.Sink.Writer.RequestTimeout = 30 * time.Second
	j, _, stopJob := startWatchedJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 50, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 500)

	heal := poison(t, []*toxiproxy.Proxy{f.proxy}, toxic{Name: "slicer", Type: "slicer", Stream: "both",
		Attributes: map[string]any{"average_size": 64, "size_variation": 32, "delay": 100}})
	before, s0 := e.rc.uniqueCount(), j.Snapshot()
	// The receiver answers a GET without a JSON body with 400 "bad json".
	if _, status, body, err := httpProbe(f.URL); err != nil || status != http.StatusBadRequest || !strings.HasPrefix(body, "bad json") {
		t.Fatalf("probe through the slicer: status %d, body %q, err %v", status, body, err)
	}
	e.waitDelivered("delivery through the slicer", before+1000)
	s1 := j.Snapshot()
	heal()
	if s1.Retried != s0.Retried {
		t.Fatalf("%d records retried through the slicer: sliced HTTP did not parse", s1.Retried-s0.Retried)
	}
	if s1.Requests == s0.Requests {
		t.Fatal("no request went through the slicer")
	}
	dups := e.finish("sink slicer", stopFeed, stopJob, nil)
	t.Logf("sink slicer: %d requests and %d records delivered through the slicer, %d duplicates",
		s1.Requests-s0.Requests, s1.Delivered-s0.Delivered, dups)
}

// TestNetworkBrokerLatency: 100±20ms on both directions of every broker
// connection (the job's, the producer's, the admin's). The job keeps
// consuming and committing; a probe takes at least two minimum latencies.
func TestNetworkBrokerLatency(t *testing.T) {
	e, pb := newBrokerNetEnv(t)
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 50, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 500)

	heal := poison(t, pb.proxies, toxic{Name: "latency", Type: "latency", Stream: "both",
		Attributes: map[string]any{"latency": 100, "jitter": 20}})
	from, base := int64(e.feed.count()), pb.st.read()
	rtt, err := kafkaProbe(pb.proxies[0].Listen, 30*time.Second)
	if err != nil {
		t.Fatalf("probe through the latency: %v", err)
	}
	if rtt < 160*time.Millisecond {
		t.Fatalf("a broker answered in %v through 100±20ms each way; the toxic was not in effect", rtt)
	}
	waitDeliveredSince(e, "records produced and consumed through the latency", from, 1000)
	_, total := pb.st.readSince(base)
	heal()
	dups := e.finish("broker latency", stopFeed, stopJob, nil)
	t.Logf("broker latency: probe %v, brokers read %d bytes under the toxic, %d duplicates", rtt.Round(time.Millisecond), total, dups)
}

// TestNetworkBrokerResetPeer: every broker connection is reset as soon as
// the broker answers (so the request took effect, the answer is lost), new
// ones included, until the clients have reconnected a few times. Then the
// fault ends and the job finishes with nothing lost.
func TestNetworkBrokerResetPeer(t *testing.T) {
	e, pb := newBrokerNetEnv(t)
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 50, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 500)

	heal := poison(t, pb.proxies, toxic{Name: "reset", Type: "reset_peer", Stream: "downstream",
		Attributes: map[string]any{"timeout": 0}})
	if _, err := kafkaProbe(pb.proxies[0].Listen, 30*time.Second); err == nil {
		t.Fatal("a probe got its answer through reset_peer; the toxic was not in effect")
	}
	accepted := pb.st.accepted.Load()
	waitFor(t, "the clients reconnecting", 30*time.Second, func() bool { return pb.st.accepted.Load() >= accepted+3 })
	atHeal := e.rc.uniqueCount()
	heal()
	e.waitDelivered("delivery after the resets", atHeal+1)
	dups := e.finish("broker reset_peer", stopFeed, stopJob, nil)
	t.Logf("broker reset_peer: %d connections accepted by the broker during the resets, %d duplicates",
		pb.st.accepted.Load()-accepted, dups)
}

// TestNetworkBrokerTimeout: every broker connection stalls for about two
// seconds (requests dropped, nothing answered), shorter than the 6s
// session timeout. A probe gets no answer. Removing the stall closes the
// stalled connections, the clients reconnect and the job finishes.
func TestNetworkBrokerTimeout(t *testing.T) {
	e, pb := newBrokerNetEnv(t)
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 50, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 500)

	heal := poison(t, pb.proxies, toxic{Name: "stall", Type: "timeout", Stream: "upstream",
		Attributes: map[string]any{"timeout": 0}})
	_, err := kafkaProbe(pb.proxies[0].Listen, time.Second)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a probe through the stall ended with %v, want a timeout", err)
	}
	time.Sleep(time.Second) // the rest of the stall; nothing is timed
	accepted, base := pb.st.accepted.Load(), pb.st.read()
	heal()
	waitFor(t, "the clients reconnecting after the stall", 30*time.Second, func() bool { return pb.st.accepted.Load() > accepted })
	dups := e.finish("broker timeout", stopFeed, stopJob, nil)
	_, after := pb.st.readSince(base)
	t.Logf("broker timeout: %d reconnections after the stall, brokers read %d bytes since, %d duplicates",
		pb.st.accepted.Load()-accepted, after, dups)
}

// TestNetworkBrokerSlicer: both directions of every broker connection are
// cut into 64-192 byte segments with a pause between them. The Kafka
// framing still parses: a probe gets a well-formed answer, and the job
// keeps consuming through the slicer.
func TestNetworkBrokerSlicer(t *testing.T) {
	e, pb := newBrokerNetEnv(t)
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 50, 25*time.Millisecond)
	e.waitDelivered("delivery under way", 500)

	heal := poison(t, pb.proxies, toxic{Name: "slicer", Type: "slicer", Stream: "both",
		Attributes: map[string]any{"average_size": 128, "size_variation": 64, "delay": 50}})
	from, accepted, base := int64(e.feed.count()), pb.st.accepted.Load(), pb.st.read()
	if _, err := kafkaProbe(pb.proxies[0].Listen, 30*time.Second); err != nil {
		t.Fatalf("probe through the slicer: %v", err)
	}
	waitDeliveredSince(e, "records produced and consumed through the slicer", from, 1000)
	_, total := pb.st.readSince(base)
	reconnects := pb.st.accepted.Load() - accepted - 1 // the probe's
	heal()
	dups := e.finish("broker slicer", stopFeed, stopJob, nil)
	t.Logf("broker slicer: brokers read %d bytes through the slicer, %d other new connections, %d duplicates", total, reconnects, dups)
}

// TestNetworkBrokerBandwidth: both directions of every broker connection
// are limited to 32 KB/s: fetches and produces crawl. The job keeps
// consuming through the narrow link. A probe request padded to 16 KB takes
// at least the half second the limit imposes, and no connection carries
// more than the limit allows: the toxic was in effect.
func TestNetworkBrokerBandwidth(t *testing.T) {
	const kbps = 32
	e, pb := newBrokerNetEnv(t)
	_, stopJob := startJob(t, e.cfg)
	stopFeed := e.feed.keepProducing(t, 50, 25*time.Millisecond)
	e.waitDelivered("the preload delivered", netPreload)

	start := time.Now() // before the toxic: only widens the allowance
	heal := poison(t, pb.proxies, toxic{Name: "bandwidth", Type: "bandwidth", Stream: "both",
		Attributes: map[string]any{"rate": kbps}})
	from, base := int64(e.feed.count()), pb.st.read()
	const pad = 16_000
	rtt, err := kafkaProbeID(pb.proxies[0].Listen, strings.Repeat("p", pad), 30*time.Second)
	if err != nil {
		t.Fatalf("probe through the throttled link: %v", err)
	}
	if floor := time.Duration(pad) * time.Second / (kbps * 1000); rtt < floor {
		t.Fatalf("a %d byte request was answered in %v, under the %v a %d KB/s toxic takes to pass it; the toxic was not in effect",
			pad, rtt, floor, kbps)
	}
	waitDeliveredSince(e, "records produced and consumed through the throttled link", from, 1000)
	per, total := pb.st.readSince(base)
	elapsed := time.Since(start)
	heal()
	checkRate(t, "broker bandwidth", per, kbps, elapsed)
	dups := e.finish("broker bandwidth", stopFeed, stopJob, nil)
	t.Logf("broker bandwidth: probe %v, brokers read %d bytes over %d connections in %v under the toxic, %d duplicates",
		rtt.Round(time.Millisecond), total, len(per), elapsed.Round(time.Millisecond), dups)
}
