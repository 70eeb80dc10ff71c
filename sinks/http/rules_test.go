package http_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
)

// TestStatusRules: successful_on / backoff_on / throttle_on / drop_on
// override the default classification, per status.
func TestStatusRules(t *testing.T) {
	cfg := sinkhttp.Config{
		SuccessfulOn: []int{409},      // duplicate = already delivered
		BackoffOn:    []int{400},      // a flaky gateway answers 400 under load
		ThrottleOn:   []int{420},      // an old rate-limit status
		DropOn:       []int{500, 202}, // a 500 that never heals; 202 = rejected async
	}
	cases := []struct {
		status  int
		success bool
		class   sinks.Class
	}{
		{409, true, 0},
		{400, false, sinks.Retryable},
		{420, false, sinks.Throttled},
		{500, false, sinks.Fatal},
		{202, false, sinks.Fatal},
		{200, true, 0},                    // defaults still apply elsewhere
		{404, false, sinks.Misconfigured}, // default: wrong for every record
		{422, false, sinks.Fatal},         // default 4xx
		{502, false, sinks.Retryable},     // default 5xx
		{429, false, sinks.Throttled},     // default throttling
	}
	for _, tc := range cases {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(tc.status)
		}))
		c := cfg
		c.URL = srv.URL
		s, err := sinkhttp.New(c)
		if err != nil {
			t.Fatal(err)
		}
		err = s.WriteBatch(context.Background(), []pipeline.Record{{Value: []byte(`{}`)}})
		srv.Close()
		if tc.success {
			if err != nil {
				t.Errorf("status %d: err %v, want delivered", tc.status, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("status %d: delivered, want %v", tc.status, tc.class)
			continue
		}
		if got := sinks.Classify(err); got != tc.class {
			t.Errorf("status %d: class %v, want %v", tc.status, got, tc.class)
		}
	}
}

func TestStatusRulesValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  sinkhttp.Config
		want string
	}{
		{sinkhttp.Config{URL: "http://x", DropOn: []int{99}}, "drop_on: 99"},
		{sinkhttp.Config{URL: "http://x", BackoffOn: []int{500}, DropOn: []int{500}}, "also in backoff_on"},
	} {
		_, err := sinkhttp.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
