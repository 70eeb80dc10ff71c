package ops

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spillway-io/spillway/internal/job"
)

func TestEndpoints(t *testing.T) {
	var cur atomic.Pointer[job.Health]
	set := func(h job.Health) { cur.Store(&h) }
	set(job.Health{Status: "starting", Reasons: []string{"waiting for the Kafka brokers to answer"}, Breaker: "closed"})
	s, err := Start("127.0.0.1:0", func() job.Health { return *cur.Load() }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := get("/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	for _, tc := range []struct {
		h    job.Health
		code int
	}{
		{job.Health{Status: "starting", Reasons: []string{"waiting for the Kafka brokers to answer"}, Breaker: "closed"}, 503},
		{job.Health{Status: "ready", Breaker: "closed", Partitions: 4}, 200},
		{job.Health{Status: "degraded", Reasons: []string{"sink circuit breaker open"}, Breaker: "open", Buffered: 2000}, 503},
		{job.Health{Status: "draining", Reasons: []string{"shutting down"}, Breaker: "closed"}, 503},
	} {
		set(tc.h)
		code, body := get("/readyz")
		if code != tc.code {
			t.Errorf("%s: /readyz = %d, want %d", tc.h.Status, code, tc.code)
		}
		var got job.Health
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("%s: body %q: %v", tc.h.Status, body, err)
		}
		if got.Status != tc.h.Status || got.Breaker != tc.h.Breaker || got.Buffered != tc.h.Buffered || len(got.Reasons) != len(tc.h.Reasons) {
			t.Errorf("/readyz body %+v, want %+v", got, tc.h)
		}
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope = %d, want 404", code)
	}
	resp, err := http.Post("http://"+s.Addr()+"/readyz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz = %d, want 405", resp.StatusCode)
	}
}

func TestStartBadAddress(t *testing.T) {
	_, err := Start("127.0.0.1:99999", func() job.Health { return job.Health{} }, slog.Default())
	if err == nil || !strings.Contains(err.Error(), "ops.listen") {
		t.Fatalf("err = %v, want an ops.listen error", err)
	}
}
