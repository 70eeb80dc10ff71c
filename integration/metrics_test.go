package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads url's Prometheus text and parses it.
func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %s", url, resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return mfs, string(body)
}

// sumOf adds the values of every series of name (counter, gauge, or a
// histogram's count); -1 when the family is absent.
func sumOf(mfs map[string]*dto.MetricFamily, name string) float64 {
	mf, ok := mfs[name]
	if !ok {
		return -1
	}
	var v float64
	for _, m := range mf.GetMetric() {
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return v
}

// TestMetricsScrapedDuringRun runs `spillway run` with ops.listen from
// Kafka to a receiver that answers only the requests the test lets
// through, scrapes /metrics twice while records are still waiting, and
// checks that the counters moved and the lag fell between the scrapes;
// then it lets everything through and checks the totals.
func TestMetricsScrapedDuringRun(t *testing.T) {
	const n, batch, partitions = 4000, 100, 4
	c := newCluster(t, partitions)
	topic, group := name(t, "topic"), name(t, "group")
	c.createTopic(t, topic, partitions)
	c.produce(t, topic, n, 100)
	rc := newReceiver(t)
	allow := make(chan struct{}, n/batch+partitions*2)
	rc.setHook(func(w http.ResponseWriter, r *http.Request, ids []int64) bool {
		select {
		case <-allow:
		case <-r.Context().Done():
		}
		return false
	})
	let := func(k int) {
		for range k {
			allow <- struct{}{}
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := writeConfig(t, fmt.Sprintf(`
name: metrics-test
brokers: %q
source:
  kafka:
    topics: [%s]
    group: %s
    checkpoint_interval: 100ms
sink:
  http:
    url: %s
  writer:
    max_batch_size: %d
    max_in_flight_requests: 1
    max_buffered_requests: 400
    max_time_in_buffer: 10ms
    request_timeout: 2m
ops:
  listen: %s
log:
  kafka_level: error
`, strings.Join(c.Addrs, ","), topic, group, rc.URL(), batch, addr))
	cmd := exec.Command(spillwayBin, "run", "-c", cfg, "-summary", "0")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	url := "http://" + addr + "/metrics"

	const (
		delivered = "spillway_records_delivered_total"
		consumed  = "messaging_client_consumed_messages_total"
		lag       = "spillway_source_lag"
		requests  = "spillway_sink_request_duration_seconds"
	)
	// Scrape 1: some requests answered and committed, most records waiting.
	let(5)
	var first map[string]*dto.MetricFamily
	var body string
	waitFor(t, "a scrape with 500 records delivered and the lag reported", 2*time.Minute, func() bool {
		if rc.uniqueCount() < 5*batch {
			return false
		}
		first, body = scrape(t, url)
		return sumOf(first, delivered) >= 5*batch && sumOf(first, lag) > 0 && sumOf(first, lag) <= n-5*batch
	})
	t.Logf("first scrape: delivered=%v consumed=%v lag=%v requests=%v",
		sumOf(first, delivered), sumOf(first, consumed), sumOf(first, lag), sumOf(first, requests))

	// Scrape 2: ten more requests answered.
	let(10)
	var second map[string]*dto.MetricFamily
	waitFor(t, "a scrape after ten more requests with the lag committed", 2*time.Minute, func() bool {
		if rc.uniqueCount() < 15*batch {
			return false
		}
		second, body = scrape(t, url)
		return sumOf(second, delivered) >= 15*batch && sumOf(second, lag) >= 0 && sumOf(second, lag) <= n-15*batch
	})
	t.Logf("second scrape: delivered=%v consumed=%v lag=%v requests=%v",
		sumOf(second, delivered), sumOf(second, consumed), sumOf(second, lag), sumOf(second, requests))
	for _, m := range []string{delivered, requests, "spillway_sink_requests_total", "spillway_sink_request_records", "spillway_sink_request_size_bytes"} {
		if a, b := sumOf(first, m), sumOf(second, m); a < 0 || b <= a {
			t.Errorf("%s did not grow between scrapes: %v then %v", m, a, b)
		}
	}
	if a, b := sumOf(first, consumed), sumOf(second, consumed); a <= 0 || b < a {
		t.Errorf("%s: %v then %v", consumed, a, b)
	}
	if a, b := sumOf(first, lag), sumOf(second, lag); b >= a {
		t.Errorf("lag did not fall between scrapes: %v then %v", a, b)
	}
	// Every family of the README's table is served (those of a breaker,
	// a rate limit and the commit failures appear only with one).
	for _, m := range []string{
		"spillway_records_dead_lettered_total", "spillway_records_dropped_total", "spillway_records_retried_total",
		"spillway_records_resent_total", "spillway_records_abandoned_total", "spillway_sink_requests_failed_total",
		"spillway_sink_batches_bisected_total", "spillway_sink_requests_in_flight", "spillway_sink_buffered_records",
		"spillway_sink_buffered_size_bytes", "spillway_sink_buffered_size_peak_bytes", "spillway_source_fetch_pauses_total",
		"spillway_source_fetch_paused_seconds_total", "spillway_source_partitions", "spillway_stage_time_seconds_total",
		"spillway_rate_limit_rate_per_second", "messaging_client_operation_duration_seconds",
	} {
		if _, ok := second[m]; !ok {
			t.Errorf("/metrics lacks %s:\n%s", m, body)
		}
	}

	// Everything through: the lag reaches 0.
	let(cap(allow) - 15)
	waitFor(t, "every record delivered and the lag at 0", 2*time.Minute, func() bool {
		if rc.uniqueCount() < n {
			return false
		}
		last, _ := scrape(t, url)
		return sumOf(last, delivered) >= n && sumOf(last, lag) == 0
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run after SIGTERM: %v\n%s", err, out.String())
	}
}
