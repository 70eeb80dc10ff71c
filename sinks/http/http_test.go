package http_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
	"github.com/spillway-io/spillway/sinks/sinktest"
)

func newSink(t *testing.T, cfg sinkhttp.Config, opts ...sinkhttp.Option) *sinkhttp.Sink {
	t.Helper()
	s, err := sinkhttp.New(cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func recs(values ...string) []pipeline.Record {
	out := make([]pipeline.Record, len(values))
	for i, v := range values {
		out[i] = pipeline.Record{Value: []byte(v), Origin: pipeline.Origin{Topic: "orders", Partition: 3, Offset: int64(100 + i)}}
	}
	return out
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	for _, format := range []string{"json", "ndjson"} {
		t.Run(format, func(t *testing.T) {
			// The receiver keeps the order of requests, answers 207 for
			// part of a batch and, as an API supporting idempotent requests
			// does, acknowledges a repeated Idempotency-Key without storing
			// the records again.
			f := sinktest.Features{Ordering: sinktest.OrderTotal, PartialFailure: true, ExactlyOnce: true, Restartable: true}
			sinktest.Run(t, f, func(t *testing.T) sinktest.Target {
				rc, srv := newReceiver(t)
				rc.dedupe = true
				cfg := sinkhttp.Config{URL: srv.URL + "/ingest", Format: format}
				return sinktest.Target{Sink: newSink(t, cfg), Received: rc.Received, Reject: rc.Reject,
					Reopen: func() (sinks.Sink, error) { return sinkhttp.New(cfg) }}
			})
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := sinkhttp.Config{URL: "https://api.example.com/ingest"}
	tests := []struct {
		name string
		mod  func(*sinkhttp.Config)
		want string // one of the errors, exactly ("path: message"); "" = valid
	}{
		{"minimal", func(*sinkhttp.Config) {}, ""},
		{"all set", func(c *sinkhttp.Config) {
			c.URL = "http://127.0.0.1:8080/x?y=1"
			c.Method, c.Format, c.Timeout, c.MaxErrorBody = "put", "ndjson", time.Second, 10
			c.Headers = map[string]string{"X-Source": "spillway", "Content-Type": "application/vnd.x+json", "Host": "ingest.internal"}
			c.BasicAuth = &sinkhttp.BasicAuth{Username: "u", Password: "p"}
			c.SuccessfulOn, c.BackoffOn, c.ThrottleOn, c.DropOn = []int{409}, []int{400}, []int{502}, []int{500, 500}
		}, ""},
		{"patch in lower case", func(c *sinkhttp.Config) { c.Method = "patch" }, ""},
		{"empty url", func(c *sinkhttp.Config) { c.URL = "" }, "url: required"},
		{"malformed url", func(c *sinkhttp.Config) { c.URL = "http://[::1" }, `url: malformed sink URL "http://[::1": missing ']' in host`},
		{"control char in url", func(c *sinkhttp.Config) { c.URL = "http://a.b/\x7f" }, `url: malformed sink URL "http://a.b/\x7f": net/url: invalid control character in URL`},
		{"no scheme", func(c *sinkhttp.Config) { c.URL = "api.example.com/ingest" }, `url: malformed sink URL "api.example.com/ingest": scheme must be http or https, got none; did you mean "http://api.example.com/ingest"?`},
		{"ftp", func(c *sinkhttp.Config) { c.URL = "ftp://example.com/x" }, `url: malformed sink URL "ftp://example.com/x": scheme must be http or https, got "ftp"`},
		{"no host", func(c *sinkhttp.Config) { c.URL = "http:///ingest" }, `url: malformed sink URL "http:///ingest": missing host`},
		{"port only", func(c *sinkhttp.Config) { c.URL = "http://:8080/ingest" }, `url: malformed sink URL "http://:8080/ingest": missing host`},
		{"port zero", func(c *sinkhttp.Config) { c.URL = "http://h:0/ingest" }, "url: port must be from 1 to 65535, got 0"},
		{"port too large", func(c *sinkhttp.Config) { c.URL = "http://h:65536/ingest" }, "url: port must be from 1 to 65535, got 65536"},
		{"password not in error", func(c *sinkhttp.Config) { c.URL = "ftp://user:s3cret@h/x" },
			`url: malformed sink URL "ftp://user:xxxxx@h/x": scheme must be http or https, got "ftp"`},
		{"password not in error of a url that does not parse", func(c *sinkhttp.Config) { c.URL = "http://user:s3cret@[::1/x" },
			`url: malformed sink URL "http://user:xxxxx@[::1/x": missing ']' in host`},
		{"bad method", func(c *sinkhttp.Config) { c.Method = "PO ST" }, `method: must be "POST", "PUT" or "PATCH", got "PO ST"`},
		{"method of another kind", func(c *sinkhttp.Config) { c.Method = "get" }, `method: must be "POST", "PUT" or "PATCH", got "GET"`},
		{"bad format", func(c *sinkhttp.Config) { c.Format = "xml" }, `format: must be "json" or "ndjson", got "xml"`},
		{"not a status", func(c *sinkhttp.Config) { c.BackoffOn = []int{99} }, "backoff_on: 99 is not an HTTP status"},
		{"status in two lists", func(c *sinkhttp.Config) { c.ThrottleOn, c.DropOn = []int{429}, []int{429} }, "drop_on: status 429 is also in throttle_on"},
		{"bad header name", func(c *sinkhttp.Config) { c.Headers = map[string]string{"X Bad": "v"} }, `headers.X Bad: invalid header name "X Bad"`},
		{"header injection", func(c *sinkhttp.Config) { c.Headers = map[string]string{"X-A": "v\r\nX-B: w"} }, "headers.X-A: value contains control characters"},
		{"reserved header", func(c *sinkhttp.Config) { c.Headers = map[string]string{"content-length": "3"} }, "headers.content-length: set by the sink, cannot be configured"},
		{"idempotency header", func(c *sinkhttp.Config) { c.Headers = map[string]string{"Idempotency-Key": "k"} }, "headers.Idempotency-Key: set by the sink, cannot be configured"},
		{"authorization twice", func(c *sinkhttp.Config) {
			c.Headers = map[string]string{"Authorization": "x"}
			c.BearerToken = "t"
		}, "headers.Authorization: conflicts with basic_auth or bearer_token"},
		{"authorization and basic auth", func(c *sinkhttp.Config) {
			c.Headers = map[string]string{"authorization": "x"}
			c.BasicAuth = &sinkhttp.BasicAuth{Username: "u"}
		}, "headers.authorization: conflicts with basic_auth or bearer_token"},
		{"bearer and basic", func(c *sinkhttp.Config) {
			c.BearerToken, c.BasicAuth = "s3cret", &sinkhttp.BasicAuth{Username: "u"}
		}, "bearer_token: conflicts with basic_auth"},
		{"basic auth without user", func(c *sinkhttp.Config) { c.BasicAuth = &sinkhttp.BasicAuth{} }, "basic_auth.username: required"},
		{"password without user", func(c *sinkhttp.Config) { c.BasicAuth = &sinkhttp.BasicAuth{Password: "s3cret"} }, "basic_auth.username: required"},
		{"colon in user", func(c *sinkhttp.Config) { c.BasicAuth = &sinkhttp.BasicAuth{Username: "a:b", Password: "s3cret"} }, "basic_auth.username: must not contain ':'"},
		{"token newline", func(c *sinkhttp.Config) { c.BearerToken = "s3cret\n" }, "bearer_token: contains control characters"},
		{"negative timeout", func(c *sinkhttp.Config) { c.Timeout = -time.Second }, "timeout: must be positive, got -1s"},
		{"negative max_error_body", func(c *sinkhttp.Config) { c.MaxErrorBody = -1 }, "max_error_body: must not be negative, got -1"},
		{"encodings", func(c *sinkhttp.Config) {
			c.ValueEncoding, c.BinaryValues, c.Tombstones = "auto", "base64", "drop"
			c.Rejections = &sinkhttp.Rejections{Path: "error.bad_ids", Match: "field", Field: "id"}
		}, ""},
		{"rejections by index", func(c *sinkhttp.Config) { c.Rejections = &sinkhttp.Rejections{Path: "failed"} }, ""},
		{"bad value_encoding", func(c *sinkhttp.Config) { c.ValueEncoding = "utf8" }, `value_encoding: must be "auto", "json", "string" or "base64", got "utf8"`},
		{"bad binary_values", func(c *sinkhttp.Config) { c.BinaryValues = "replace" }, `binary_values: must be "dead_letter" or "base64", got "replace"`},
		{"binary_values without auto", func(c *sinkhttp.Config) { c.ValueEncoding, c.BinaryValues = "string", "base64" },
			"binary_values: only with value_encoding auto (with string, a value the encoding cannot carry is dead-lettered)"},
		{"bad tombstones", func(c *sinkhttp.Config) { c.Tombstones = "skip" }, `tombstones: must be "send" or "drop", got "skip"`},
		{"rejections without path", func(c *sinkhttp.Config) { c.Rejections = &sinkhttp.Rejections{} }, "rejections.path: required"},
		{"rejections path with an empty segment", func(c *sinkhttp.Config) { c.Rejections = &sinkhttp.Rejections{Path: "a..b"} },
			`rejections.path: "a..b" has an empty segment; write names separated by single dots ("errors.id")`},
		{"bad rejections.match", func(c *sinkhttp.Config) { c.Rejections = &sinkhttp.Rejections{Path: "x", Match: "id"} },
			`rejections.match: must be "index", "field" or "key", got "id"`},
		{"match field without field", func(c *sinkhttp.Config) { c.Rejections = &sinkhttp.Rejections{Path: "x", Match: "field"} },
			"rejections.field: required with match field"},
		{"field without match field", func(c *sinkhttp.Config) { c.Rejections = &sinkhttp.Rejections{Path: "x", Field: "id"} },
			"rejections.field: only with match field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.Validate()
			_, nerr := sinkhttp.New(c)
			if tc.want == "" {
				if err != nil || nerr != nil {
					t.Fatalf("Validate = %v, New = %v, want valid", err, nerr)
				}
				return
			}
			var got []string
			for _, e := range field.Split(err) {
				var fe *field.Error
				if !errors.As(e, &fe) {
					t.Errorf("%v is not a *field.Error", e)
				}
				got = append(got, e.Error())
			}
			if !slices.Contains(got, tc.want) {
				t.Fatalf("Validate = %q, want %q among them", got, tc.want)
			}
			if nerr == nil {
				t.Fatal("New accepted an invalid config")
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks a password or token: %v", err)
			}
		})
	}
	t.Run("several errors", func(t *testing.T) {
		err := sinkhttp.Config{URL: "ftp://x", Format: "xml", Timeout: -1}.Validate()
		for _, want := range []string{"url:", "format:", "timeout:"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Validate = %v, want it to mention %q", err, want)
			}
		}
	})
	t.Run("no I/O in New", func(t *testing.T) {
		// Nothing listens here; New must not notice.
		if _, err := sinkhttp.New(sinkhttp.Config{URL: "http://127.0.0.1:1/x"}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBody(t *testing.T) {
	long := strings.Repeat("é", 3)
	tests := []struct {
		name   string
		values []string
		json   string
		ndjson string
	}{
		{"raw JSON", []string{`{"a":1}`, `[1,2]`, `42`, `"s"`, `true`},
			`[{"a":1},[1,2],42,"s",true]`, "{\"a\":1}\n[1,2]\n42\n\"s\"\ntrue\n"},
		{"text as string", []string{`hello`, `{"a":`, `a"b\c`},
			`["hello","{\"a\":","a\"b\\c"]`, "\"hello\"\n\"{\\\"a\\\":\"\n\"a\\\"b\\\\c\"\n"},
		{"control characters", []string{"a\nb\tc\x00\x1f<>&"},
			`["a\nb\tc\u0000\u001f<>&"]`, "\"a\\nb\\tc\\u0000\\u001f<>&\"\n"},
		{"UTF-8", []string{long, "\u2028"},
			`["` + long + `","\u2028"]`, "\"" + long + "\"\n\"\\u2028\"\n"},
		{"tombstone, empty and null", []string{"", "", "null"}, `[null,"",null]`, "null\n\"\"\nnull\n"},
		{"multi-line JSON", []string{"{\n  \"a\": [1,\n 2]\n}"},
			"[{\n  \"a\": [1,\n 2]\n}]", "{\"a\":[1,2]}\n"},
	}
	for _, tc := range tests {
		for _, format := range []string{"json", "ndjson"} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				rc, srv := newReceiver(t)
				s := newSink(t, sinkhttp.Config{URL: srv.URL, Format: format})
				batch := recs(tc.values...)
				if tc.name == "tombstone, empty and null" {
					batch[0].Value = nil
				}
				if err := s.WriteBatch(ctxT(t), batch); err != nil {
					t.Fatal(err)
				}
				want := tc.json
				if format == "ndjson" {
					want = tc.ndjson
				}
				reqs := rc.requests()
				if got := string(reqs[0].body); got != want {
					t.Fatalf("body\n got %q\nwant %q", got, want)
				}
				if got := rc.Received(); len(got) != len(tc.values) {
					t.Fatalf("receiver decoded %d values, want %d", len(got), len(tc.values))
				}
			})
		}
	}
}

func TestHeaders(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name  string
		cfg   sinkhttp.Config
		batch func() []pipeline.Record
		want  map[string]string // "" = absent
	}{
		{"json defaults", sinkhttp.Config{}, func() []pipeline.Record { return recs("1", "2") }, map[string]string{
			"Content-Type": "application/json", "Authorization": "", "Idempotency-Key": "orders-3-100-101",
			"Traceparent": "", "User-Agent": "spillway",
		}},
		{"ndjson, custom headers", sinkhttp.Config{Format: "ndjson", Headers: map[string]string{"x-source": "spillway", "X-Tenant": "a b"}},
			func() []pipeline.Record { return recs("1") }, map[string]string{
				"Content-Type": "application/x-ndjson", "X-Source": "spillway", "X-Tenant": "a b",
			}},
		{"content type override", sinkhttp.Config{Headers: map[string]string{"Content-Type": "application/vnd.api+json"}},
			func() []pipeline.Record { return recs("1") }, map[string]string{"Content-Type": "application/vnd.api+json"}},
		{"bearer", sinkhttp.Config{BearerToken: "tok"}, func() []pipeline.Record { return recs("1") },
			map[string]string{"Authorization": "Bearer tok"}},
		{"basic", sinkhttp.Config{BasicAuth: &sinkhttp.BasicAuth{Username: "user", Password: "pa:ss"}}, func() []pipeline.Record { return recs("1") },
			map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("user:pa:ss"))}},
		{"traceparent from first record", sinkhttp.Config{}, func() []pipeline.Record {
			b := recs("1", "2")
			b[0].Headers = []pipeline.Header{{Key: "traceparent", Value: []byte(tp)}, {Key: "tracestate", Value: []byte("congo=t61rcWkgMzE")}}
			b[1].Headers = []pipeline.Header{{Key: "traceparent", Value: []byte("00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01")}}
			return b
		}, map[string]string{"Traceparent": tp, "Tracestate": "congo=t61rcWkgMzE"}},
		{"invalid traceparent dropped", sinkhttp.Config{}, func() []pipeline.Record {
			b := recs("1")
			b[0].Headers = []pipeline.Header{{Key: "traceparent", Value: []byte("00-XYZ\r\nInjected: 1")}}
			return b
		}, map[string]string{"Traceparent": "", "Injected": ""}},
		{"traceparent only on first record", sinkhttp.Config{}, func() []pipeline.Record {
			b := recs("1", "2")
			b[1].Headers = []pipeline.Header{{Key: "traceparent", Value: []byte(tp)}}
			return b
		}, map[string]string{"Traceparent": ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, srv := newReceiver(t)
			cfg := tc.cfg
			cfg.URL = srv.URL
			if err := newSink(t, cfg).WriteBatch(ctxT(t), tc.batch()); err != nil {
				t.Fatal(err)
			}
			r := rc.requests()[0]
			if r.method != http.MethodPost {
				t.Errorf("method %s, want POST", r.method)
			}
			for k, want := range tc.want {
				if got := r.header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
		})
	}
	t.Run("method and host", func(t *testing.T) {
		var gotMethod, gotHost string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			gotMethod, gotHost = r.Method, r.Host
		}))
		defer srv.Close()
		s := newSink(t, sinkhttp.Config{URL: srv.URL, Method: "put", Headers: map[string]string{"Host": "ingest.internal"}})
		if err := s.WriteBatch(ctxT(t), recs("1")); err != nil {
			t.Fatal(err)
		}
		if gotMethod != "PUT" || gotHost != "ingest.internal" {
			t.Fatalf("method %q host %q, want PUT ingest.internal", gotMethod, gotHost)
		}
	})
}

func TestIdempotencyKey(t *testing.T) {
	rec := func(topic string, p int32, off int64, value string) pipeline.Record {
		return pipeline.Record{Value: []byte(value), Origin: pipeline.Origin{Topic: topic, Partition: p, Offset: off}}
	}
	run := func(topic string, p int32, from, to int64) []pipeline.Record {
		var out []pipeline.Record
		for o := from; o <= to; o++ {
			out = append(out, rec(topic, p, o, "v"))
		}
		return out
	}
	cat := func(bs ...[]pipeline.Record) []pipeline.Record {
		var out []pipeline.Record
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	orders := run("orders", 3, 1200, 1699)
	multi := cat(run("orders", 3, 1200, 1299), run("orders", 1, 50, 99), run("payments", 0, 7, 9))

	t.Run("readable", func(t *testing.T) {
		for _, tc := range []struct {
			batch []pipeline.Record
			want  string
		}{
			{orders, "orders-3-1200-1699"},
			{orders[:1], "orders-3-1200-1200"},
			{run("my.topic_v2-x", 0, 0, 9), "my.topic_v2-x-0-0-9"},
			{run("/tmp/in put.jsonl", 0, 1, 2), "%2Ftmp%2Fin%20put.jsonl-0-1-2"},
			{nil, ""},
		} {
			if got := sinkhttp.IdempotencyKey(tc.batch); got != tc.want {
				t.Errorf("IdempotencyKey = %q, want %q", got, tc.want)
			}
		}
	})
	t.Run("hashed", func(t *testing.T) {
		got := sinkhttp.IdempotencyKey(multi)
		prefix, sum, ok := strings.Cut(got, "-")
		if !ok || prefix != "153" || len(sum) != 64 {
			t.Fatalf("IdempotencyKey = %q, want 153-<64 hex>", got)
		}
	})
	t.Run("stable", func(t *testing.T) {
		// Copies with other values and keys: the key depends on origins only.
		other := cat(run("orders", 3, 1200, 1299), run("orders", 1, 50, 99), run("payments", 0, 7, 9))
		for i := range other {
			other[i].Value = []byte("changed")
			other[i].Key = []byte("k")
		}
		if a, b := sinkhttp.IdempotencyKey(multi), sinkhttp.IdempotencyKey(other); a != b {
			t.Fatalf("same origins, different keys: %q %q", a, b)
		}
		// The order of partitions in the batch does not matter.
		swapped := cat(run("payments", 0, 7, 9), run("orders", 1, 50, 99), run("orders", 3, 1200, 1299))
		if a, b := sinkhttp.IdempotencyKey(multi), sinkhttp.IdempotencyKey(swapped); a != b {
			t.Fatalf("reordered partitions, different keys: %q %q", a, b)
		}
	})
	t.Run("distinct", func(t *testing.T) {
		gap := cat(orders[:1], orders[2:])              // a filtered record
		ends := cat(orders[:1], orders[len(orders)-1:]) // retry of the first and last entries
		dupA := []pipeline.Record{rec("orders", 3, 1200, "child-1"), rec("orders", 3, 1200, "child-2")}
		dupB := []pipeline.Record{rec("orders", 3, 1200, "child-3"), rec("orders", 3, 1200, "child-4")}
		batches := map[string][]pipeline.Record{
			"orders":        orders,
			"orders minus1": orders[:len(orders)-1],
			"orders plus1":  cat(orders, run("orders", 3, 1700, 1700)),
			"other part":    run("orders", 4, 1200, 1699),
			"other topic":   run("order", 3, 1200, 1699),
			"gap":           gap,
			"ends":          ends,
			"multi":         multi,
			"multi minus":   multi[1:],
			"multi other":   cat(run("orders", 3, 1200, 1299), run("orders", 1, 50, 99), run("payments", 1, 7, 9)),
			"fanout A":      dupA,
			"fanout B":      dupB,
			"topic dash 1":  run("a-1", 2, 3, 3),
			"topic dash 2":  run("a", 12, 3, 3),
		}
		seen := map[string]string{}
		for name, b := range batches {
			k := sinkhttp.IdempotencyKey(b)
			if prev, dup := seen[k]; dup {
				t.Errorf("batches %q and %q share the key %q", prev, name, k)
			}
			seen[k] = name
		}
	})
	t.Run("sent and repeated on retry", func(t *testing.T) {
		var keys []string
		var n atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			keys = append(keys, r.Header.Get("Idempotency-Key"))
			if n.Add(1) == 1 {
				w.WriteHeader(http.StatusBadGateway)
			}
		}))
		defer srv.Close()
		s := newSink(t, sinkhttp.Config{URL: srv.URL})
		if err := s.WriteBatch(ctxT(t), multi); sinks.Classify(err) != sinks.Retryable || err == nil {
			t.Fatalf("first attempt = %v, want retryable", err)
		}
		if err := s.WriteBatch(ctxT(t), multi); err != nil {
			t.Fatal(err)
		}
		if len(keys) != 2 || keys[0] != keys[1] || keys[0] != sinkhttp.IdempotencyKey(multi) {
			t.Fatalf("keys sent %q, want the same key twice", keys)
		}
	})
}

// details returns the DetailedError details in err's chain.
func details(t *testing.T, err error) map[string]string {
	t.Helper()
	var de *sinks.DetailedError
	if !errors.As(err, &de) {
		t.Fatalf("%v (%T) has no *sinks.DetailedError", err, err)
	}
	return de.Details
}

func TestStatus(t *testing.T) {
	const none = sinks.Class(-1) // success
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		status     int
		header     map[string]string
		body       string
		want       sinks.Class
		retryAfter [2]time.Duration // bounds
	}{
		{status: 200, want: none},
		{status: 201, want: none},
		{status: 202, want: none},
		{status: 204, want: none},
		{status: 207, want: none}, // no partial-failure body
		{status: 400, body: `{"error":"bad record"}`, want: sinks.Fatal},
		{status: 401, want: sinks.Misconfigured},
		{status: 403, want: sinks.Misconfigured},
		{status: 404, want: sinks.Misconfigured},
		{status: 405, want: sinks.Misconfigured},
		{status: 407, want: sinks.Misconfigured},
		{status: 409, want: sinks.Fatal},
		{status: 431, want: sinks.Misconfigured},
		{status: 413, want: sinks.Misconfigured},
		{status: 422, want: sinks.Fatal},
		{status: 408, want: sinks.Retryable},
		{status: 425, want: sinks.Retryable},
		{status: 429, want: sinks.Throttled},
		{status: 429, header: map[string]string{"Retry-After": "7"}, want: sinks.Throttled, retryAfter: [2]time.Duration{7 * time.Second, 7 * time.Second}},
		{status: 503, header: map[string]string{"Retry-After": future}, want: sinks.Throttled, retryAfter: [2]time.Duration{80 * time.Second, 91 * time.Second}},
		{status: 503, header: map[string]string{"Retry-After": "86400"}, want: sinks.Throttled, retryAfter: [2]time.Duration{sinkhttp.MaxRetryAfter, sinkhttp.MaxRetryAfter}},
		{status: 503, header: map[string]string{"Retry-After": "soon"}, want: sinks.Throttled},
		{status: 500, body: "boom", want: sinks.Retryable},
		{status: 502, want: sinks.Retryable},
		{status: 504, want: sinks.Retryable},
		{status: 301, header: map[string]string{"Location": "/elsewhere"}, want: sinks.Fatal},
		{status: 302, header: map[string]string{"Location": "/elsewhere"}, want: sinks.Fatal},
		{status: 303, header: map[string]string{"Location": "/elsewhere"}, want: sinks.Fatal},
		{status: 304, want: sinks.Fatal},
	}
	for _, tc := range tests {
		name := strconv.Itoa(tc.status)
		if ra := tc.header["Retry-After"]; ra != "" {
			name += " Retry-After " + ra
		}
		t.Run(name, func(t *testing.T) {
			var elsewhere atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					elsewhere.Store(true)
					return
				}
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			err := newSink(t, sinkhttp.Config{URL: srv.URL + "/ingest"}).WriteBatch(ctxT(t), recs("1", "2"))
			if elsewhere.Load() {
				t.Error("followed a redirect that changes the method")
			}
			if tc.want == none {
				if err != nil {
					t.Fatalf("WriteBatch = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("WriteBatch = nil, want an error")
			}
			if got := sinks.Classify(err); got != tc.want {
				t.Fatalf("Classify(%v) = %v, want %v", err, got, tc.want)
			}
			d := details(t, err)
			if d["http.status"] != strconv.Itoa(tc.status) || d["http.body"] != tc.body {
				t.Fatalf("details %q, want status %d and body %q", d, tc.status, tc.body)
			}
			if !strings.Contains(err.Error(), strconv.Itoa(tc.status)) {
				t.Errorf("message %q does not name the status", err)
			}
			var te *sinks.ThrottledError
			if errors.As(err, &te) {
				if te.RetryAfter < tc.retryAfter[0] || te.RetryAfter > tc.retryAfter[1] {
					t.Fatalf("RetryAfter = %v, want within %v", te.RetryAfter, tc.retryAfter)
				}
				if want := tc.status == http.StatusServiceUnavailable; te.Unavailable != want {
					t.Errorf("Unavailable = %v for %d, want %v (503 is an outage, 429 a rate limit)", te.Unavailable, tc.status, want)
				}
			}
		})
	}
}

func TestRedirect(t *testing.T) {
	mux := http.NewServeMux()
	var got atomic.Value
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/new", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/new", http.StatusFound)
	})
	mux.HandleFunc("/new", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(r.Method + " " + string(b))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	t.Run("307 followed with method and body", func(t *testing.T) {
		if err := newSink(t, sinkhttp.Config{URL: srv.URL + "/old"}).WriteBatch(ctxT(t), recs(`{"a":1}`)); err != nil {
			t.Fatal(err)
		}
		if g := got.Load(); g != `POST [{"a":1}]` {
			t.Fatalf("target got %q", g)
		}
	})
	t.Run("custom client turning POST into GET", func(t *testing.T) {
		s := newSink(t, sinkhttp.Config{URL: srv.URL + "/moved"}, sinkhttp.WithClient(&http.Client{}))
		err := s.WriteBatch(ctxT(t), recs("1"))
		if sinks.Classify(err) != sinks.Fatal {
			t.Fatalf("WriteBatch = %v, want fatal", err)
		}
		if !strings.Contains(err.Error(), "redirected to GET") {
			t.Fatalf("message %q does not explain the redirect", err)
		}
	})
}

func TestErrorBodyBounded(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		chunk := []byte(strings.Repeat("e", 32<<10))
		for range 1 << 10 { // 32 MiB unless the client hangs up
			n, err := w.Write(chunk)
			served.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	for _, max := range []int{0, 100} {
		t.Run(fmt.Sprint("max_error_body=", max), func(t *testing.T) {
			want := max
			if want == 0 {
				want = sinkhttp.DefaultMaxErrorBody
			}
			start := time.Now()
			err := newSink(t, sinkhttp.Config{URL: srv.URL, MaxErrorBody: max}).WriteBatch(ctxT(t), recs("1"))
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("took %v to give up on a huge error body", el)
			}
			if sinks.Classify(err) != sinks.Fatal {
				t.Fatalf("WriteBatch = %v, want fatal", err)
			}
			if body := details(t, err)["http.body"]; body != strings.Repeat("e", want) {
				t.Fatalf("http.body has %d bytes, want %d", len(body), want)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("message has %d bytes, want a short one", len(err.Error()))
			}
		})
	}
}

func TestErrorBodyUTF8(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "ab\xffc"+strings.Repeat("é", 10)) // cut inside an é
	}))
	defer srv.Close()
	err := newSink(t, sinkhttp.Config{URL: srv.URL, MaxErrorBody: 10}).WriteBatch(ctxT(t), recs("1"))
	if got, want := details(t, err)["http.body"], "ab\uFFFDcéé"; got != want {
		t.Fatalf("http.body = %q, want %q", got, want)
	}
}

func TestConnectionReuse(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Query().Get("s") {
		case "400":
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, strings.Repeat("x", 8<<10)) // > max_error_body, < drain limit
		case "503":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			io.WriteString(w, `{"ok":true}`)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	for _, q := range []string{"400", "200", "503", "400", "200"} {
		s := newSink(t, sinkhttp.Config{URL: srv.URL + "/?s=" + q}, sinkhttp.WithClient(srv.Client()))
		_ = s.WriteBatch(ctxT(t), recs("1"))
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 5 sequential requests, want 1 (bodies not drained?)", n)
	}
}

func TestHangingServer(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)

	check := func(t *testing.T, err error, start time.Time, kind string) {
		t.Helper()
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("returned after %v", el)
		}
		if sinks.Classify(err) != sinks.Retryable {
			t.Fatalf("WriteBatch = %v, want retryable", err)
		}
		if d := details(t, err); d["http.error"] != kind {
			t.Fatalf("details %q, want http.error %s", d, kind)
		}
	}
	t.Run("context deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := newSink(t, sinkhttp.Config{URL: srv.URL}).WriteBatch(ctx, recs("1"))
		check(t, err, start, "timeout")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%v does not wrap context.DeadlineExceeded", err)
		}
	})
	t.Run("config timeout", func(t *testing.T) {
		start := time.Now()
		err := newSink(t, sinkhttp.Config{URL: srv.URL, Timeout: 100 * time.Millisecond}).WriteBatch(t.Context(), recs("1"))
		check(t, err, start, "timeout")
		if !strings.Contains(err.Error(), "timed out after 100ms") || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%v does not name the timeout or wrap context.DeadlineExceeded", err)
		}
	})
	t.Run("deadline with a cause", func(t *testing.T) {
		// The writer's request timeout: the transport returns the cause,
		// the sink adds the context's error.
		ctx, cancel := context.WithTimeoutCause(t.Context(), 100*time.Millisecond, sinks.ErrRequestTimeout)
		defer cancel()
		start := time.Now()
		err := newSink(t, sinkhttp.Config{URL: srv.URL}).WriteBatch(ctx, recs("1"))
		check(t, err, start, "timeout")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%v does not wrap context.DeadlineExceeded", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		err := newSink(t, sinkhttp.Config{URL: srv.URL}).WriteBatch(ctx, recs("1"))
		check(t, err, start, "canceled")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%v does not wrap context.Canceled", err)
		}
	})
}

func TestConnectionErrors(t *testing.T) {
	t.Run("reset", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0) // RST instead of FIN
			}
			conn.Close()
		}))
		defer srv.Close()
		err := newSink(t, sinkhttp.Config{URL: srv.URL}).WriteBatch(ctxT(t), recs("1"))
		if err == nil || sinks.Classify(err) != sinks.Retryable {
			t.Fatalf("WriteBatch = %v, want retryable", err)
		}
		if d := details(t, err); d["http.error"] != "transport" {
			t.Fatalf("details %q", d)
		}
	})
	t.Run("garbage response", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, buf, _ := w.(http.Hijacker).Hijack()
			defer conn.Close()
			buf.WriteString("SMTP ready\r\n\r\n")
			buf.Flush()
		}))
		defer srv.Close()
		err := newSink(t, sinkhttp.Config{URL: srv.URL}).WriteBatch(ctxT(t), recs("1"))
		if err == nil || sinks.Classify(err) != sinks.Retryable {
			t.Fatalf("WriteBatch = %v, want retryable", err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		err = newSink(t, sinkhttp.Config{URL: "http://" + addr + "/x?token=secret"}).WriteBatch(ctxT(t), recs("1"))
		if err == nil || sinks.Classify(err) != sinks.Retryable {
			t.Fatalf("WriteBatch = %v, want retryable", err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Fatalf("message leaks the query: %v", err)
		}
	})
}

func TestPartialFailure(t *testing.T) {
	tests := []struct {
		name string
		body string
		want map[int]sinks.Class // nil with wantErr: whole batch fails
		err  sinks.Class
	}{
		{"classified per entry", `{"failed":[{"index":3,"status":400,"error":"bad"},{"index":0,"status":503,"error":"busy"},{"index":1,"status":500},{"index":2}]}`,
			map[int]sinks.Class{0: sinks.Throttled, 1: sinks.Retryable, 2: sinks.Retryable, 3: sinks.Fatal}, 0},
		{"duplicate index", `{"failed":[{"index":1,"status":422},{"index":1,"status":500}]}`, map[int]sinks.Class{1: sinks.Fatal}, 0},
		{"extra fields ignored", `{"accepted":3,"failed":[{"index":2,"status":429,"error":"slow down","id":"x"}]}`, map[int]sinks.Class{2: sinks.Throttled}, 0},
		{"nothing failed", `{"failed":[]}`, map[int]sinks.Class{}, 0},
		{"empty body", ``, map[int]sinks.Class{}, 0},
		{"index out of range", `{"failed":[{"index":4,"status":400}]}`, nil, sinks.Retryable},
		{"negative index", `{"failed":[{"index":-1,"status":400}]}`, nil, sinks.Retryable},
		{"missing index", `{"failed":[{"status":400}]}`, nil, sinks.Retryable},
		{"malformed", `{"failed":[`, nil, sinks.Retryable},
		{"not the protocol", `<multistatus/>`, nil, sinks.Retryable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", "3")
				w.WriteHeader(http.StatusMultiStatus)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			err := newSink(t, sinkhttp.Config{URL: srv.URL}).WriteBatch(ctxT(t), recs("a", "b", "c", "d"))
			if tc.want == nil {
				var be *sinks.BatchError
				if err == nil || errors.As(err, &be) || sinks.Classify(err) != tc.err {
					t.Fatalf("WriteBatch = %v, want a %v whole-batch error", err, tc.err)
				}
				if d := details(t, err); d["http.status"] != "207" {
					t.Fatalf("details %q", d)
				}
				return
			}
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("WriteBatch = %v, want nil", err)
				}
				return
			}
			var be *sinks.BatchError
			if !errors.As(err, &be) {
				t.Fatalf("WriteBatch = %v, want *sinks.BatchError", err)
			}
			if len(be.Failed) != len(tc.want) {
				t.Fatalf("failed entries %+v, want %v", be.Failed, tc.want)
			}
			for i, f := range be.Failed {
				if i > 0 && f.Index <= be.Failed[i-1].Index {
					t.Errorf("entries not sorted by index: %+v", be.Failed)
				}
				want, ok := tc.want[f.Index]
				if !ok || sinks.Classify(f.Err) != want {
					t.Errorf("entry %d: %v classified %v, want %v", f.Index, f.Err, sinks.Classify(f.Err), want)
				}
				d := details(t, f.Err)
				if _, ok := d["http.status"]; !ok {
					t.Errorf("entry %d details %q lack http.status", f.Index, d)
				}
				var te *sinks.ThrottledError
				if errors.As(f.Err, &te) && te.RetryAfter != 3*time.Second {
					t.Errorf("entry %d RetryAfter %v, want the response's 3s", f.Index, te.RetryAfter)
				}
			}
		})
	}
}

func TestTLS(t *testing.T) {
	var got atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			got.Add(1)
		}
	}))
	defer srv.Close()
	s := newSink(t, sinkhttp.Config{URL: srv.URL, Format: "ndjson"}, sinkhttp.WithClient(srv.Client()))
	if err := s.WriteBatch(ctxT(t), recs("1", "2", "3")); err != nil {
		t.Fatal(err)
	}
	if got.Load() != 3 {
		t.Fatalf("server read %d lines, want 3", got.Load())
	}
}
