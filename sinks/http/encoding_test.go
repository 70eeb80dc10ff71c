package http_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
)

// tomb stands for a tombstone (nil value) in the encoding tables.
const tomb = "\x00tombstone"

// encRecs is recs with tomb turned into a nil value.
func encRecs(values ...string) []pipeline.Record {
	batch := recs(values...)
	for i, v := range values {
		if v == tomb {
			batch[i].Value = nil
		}
	}
	return batch
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// failures maps each failed entry of err to its error; nil for nil.
func failures(t *testing.T, err error) map[int]error {
	t.Helper()
	if err == nil {
		return nil
	}
	var be *sinks.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("%v (%T) is not a *sinks.BatchError", err, err)
	}
	out := map[int]error{}
	for _, f := range be.Failed {
		if _, dup := out[f.Index]; dup {
			t.Fatalf("entry %d listed twice", f.Index)
		}
		out[f.Index] = f.Err
	}
	return out
}

// TestValueEncoding sends one batch per case and checks the body byte for
// byte, which records failed (alone, fatal, with the reason and no bytes
// replaced) and that the others were sent.
func TestValueEncoding(t *testing.T) {
	const (
		binary  = "\xff\xfe\x00\x01\xc3"
		rawFF   = "{\"name\":\"caf\xff\"}"
		objJSON = `{"a":[1,2]}`
	)
	tests := []struct {
		name    string
		cfg     sinkhttp.Config
		values  []string
		json    string         // the body with format json; "" = no request
		ndjson  string         // with format ndjson; "" = as json without brackets, one per line
		failed  map[int]string // index → a part of its error
		dropped int64
	}{
		{"auto: JSON, text, empty, tombstone", sinkhttp.Config{},
			[]string{objJSON, "hello", "", tomb, `"quoted"`, "42", "a\"b"},
			`[{"a":[1,2]},"hello","",null,"quoted",42,"a\"b"]`, "", nil, 0},
		{"auto: binary and invalid UTF-8 in JSON dead-lettered", sinkhttp.Config{},
			[]string{binary, objJSON, rawFF, "text"},
			`[{"a":[1,2]},"text"]`, "", map[int]string{
				0: "value is not valid UTF-8: byte 0xff at offset 0; set sink.http.value_encoding: base64, or sink.http.binary_values: base64, to send it base64-encoded",
				2: "JSON value is not valid UTF-8: byte 0xff at offset 12",
			}, 0},
		{"auto: every value binary, no request", sinkhttp.Config{},
			[]string{binary, "\x80"}, "", "", map[int]string{0: "offset 0", 1: "byte 0x80 at offset 0"}, 0},
		{"auto with binary_values base64", sinkhttp.Config{BinaryValues: "base64"},
			[]string{binary, objJSON, rawFF, "", tomb},
			`[{"$base64":"` + b64(binary) + `"},{"a":[1,2]},{"$base64":"` + b64(rawFF) + `"},"",null]`, "", nil, 0},
		{"json", sinkhttp.Config{ValueEncoding: "json"},
			[]string{objJSON, "hello", "", tomb, binary, rawFF, " [1,\n2]"},
			"[{\"a\":[1,2]},null, [1,\n2]]", "{\"a\":[1,2]}\nnull\n[1,2]\n", map[int]string{
				1: "value is not valid JSON: invalid character 'h' looking for beginning of value (offset 1); value_encoding json sends only JSON",
				2: "value is not valid JSON: the value is empty",
				4: "value is not valid UTF-8: byte 0xff at offset 0; value_encoding json sends only JSON, set sink.http.value_encoding: base64",
				5: "value is not valid UTF-8: byte 0xff at offset 12",
			}, 0},
		{"string", sinkhttp.Config{ValueEncoding: "string"},
			[]string{objJSON, "", tomb, "é\n", binary},
			`["{\"a\":[1,2]}","",null,"é\n"]`, "", map[int]string{
				4: "value is not valid UTF-8: byte 0xff at offset 0; value_encoding string sends only text, set sink.http.value_encoding: base64",
			}, 0},
		{"base64", sinkhttp.Config{ValueEncoding: "base64"},
			[]string{binary, objJSON, "", tomb, rawFF},
			`["` + b64(binary) + `","` + b64(objJSON) + `","",null,"` + b64(rawFF) + `"]`, "", nil, 0},
		{"tombstones dropped", sinkhttp.Config{Tombstones: "drop"},
			[]string{tomb, "a", tomb, "", tomb},
			`["a",""]`, "", nil, 3},
		{"tombstones dropped, binary failed", sinkhttp.Config{Tombstones: "drop"},
			[]string{binary, tomb, "a"},
			`["a"]`, "", map[int]string{0: "not valid UTF-8"}, 1},
		{"only tombstones, dropped: no request", sinkhttp.Config{Tombstones: "drop"},
			[]string{tomb, tomb}, "", "", nil, 2},
	}
	for _, tc := range tests {
		for _, format := range []string{"json", "ndjson"} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				rc, srv := newReceiver(t)
				cfg := tc.cfg
				cfg.URL, cfg.Format = srv.URL, format
				s := newSink(t, cfg)
				batch := encRecs(tc.values...)
				err := s.WriteBatch(ctxT(t), batch)
				got := failures(t, err)
				for i, want := range tc.failed {
					ferr, ok := got[i]
					switch {
					case !ok:
						t.Errorf("entry %d (%q) did not fail, want %q", i, tc.values[i], want)
					case sinks.Classify(ferr) != sinks.Fatal:
						t.Errorf("entry %d: class %v, want fatal", i, sinks.Classify(ferr))
					case !strings.Contains(ferr.Error(), want):
						t.Errorf("entry %d: error %q, want it to contain %q", i, ferr, want)
					case details(t, ferr)["http.error"] != "value_encoding":
						t.Errorf("entry %d: details %v", i, details(t, ferr))
					}
					if ok && strings.Contains(ferr.Error(), "\ufffd") {
						t.Errorf("entry %d: error %q shows a replacement character", i, ferr)
					}
				}
				if len(got) != len(tc.failed) {
					t.Errorf("failed entries %v, want those of %v", got, tc.failed)
				}
				if n := s.DroppedTombstones(); n != tc.dropped {
					t.Errorf("DroppedTombstones = %d, want %d", n, tc.dropped)
				}
				reqs := rc.requests()
				want := tc.json
				if format == "ndjson" && want != "" {
					want = tc.ndjson
					if want == "" {
						want = ndjsonOf(t, tc.json)
					}
				}
				switch {
				case want == "" && len(reqs) != 0:
					t.Fatalf("%d requests sent, want none: %q", len(reqs), reqs[0].body)
				case want == "":
				case len(reqs) != 1:
					t.Fatalf("%d requests, want 1", len(reqs))
				case string(reqs[0].body) != want:
					t.Fatalf("body\n got %q\nwant %q", reqs[0].body, want)
				}
				// The sent records were delivered: only the failed ones are listed.
				for i := range batch {
					if _, failed := got[i]; failed && tc.failed[i] == "" {
						t.Errorf("entry %d listed as failed: %v", i, got[i])
					}
				}
			})
		}
	}
}

// ndjsonOf turns the elements of a JSON array body into ndjson lines.
func ndjsonOf(t *testing.T, body string) string {
	t.Helper()
	vals, err := decodeRawElements(body)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, v := range vals {
		b.WriteString(v)
		b.WriteByte('\n')
	}
	return b.String()
}

// decodeRawElements splits a compact JSON array into its elements' text.
func decodeRawElements(body string) ([]string, error) {
	var elems []string
	body = strings.TrimPrefix(strings.TrimSuffix(body, "]"), "[")
	depth, inStr, esc, start := 0, false, false, 0
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		case c == ',' && depth == 0:
			elems = append(elems, body[start:i])
			start = i + 1
		}
	}
	if start < len(body) {
		elems = append(elems, body[start:])
	}
	if depth != 0 || inStr {
		return nil, fmt.Errorf("unbalanced %q", body)
	}
	return elems, nil
}

// TestValueEncodingWithRequestOutcome: the entries of a request that
// carried only part of the batch (the others failed to encode) are
// reported at their batch indexes, for a 207 as for a whole-request
// failure, which lists each sent entry with the same error.
func TestValueEncodingWithRequestOutcome(t *testing.T) {
	const binary = "\xff"
	t.Run("207", func(t *testing.T) {
		rc, srv := newReceiver(t)
		s := newSink(t, sinkhttp.Config{URL: srv.URL})
		rc.Reject(1) // the second element of the body: batch entry 3
		got := failures(t, s.WriteBatch(ctxT(t), encRecs(binary, "a", binary, "b", "c")))
		if len(got) != 3 || sinks.Classify(got[0]) != sinks.Fatal || sinks.Classify(got[2]) != sinks.Fatal || sinks.Classify(got[3]) != sinks.Throttled {
			t.Fatalf("failed %v, want 0 and 2 fatal, 3 throttled", got)
		}
		if r := rc.Received(); len(r) != 2 || string(r[0]) != "a" || string(r[1]) != "c" {
			t.Fatalf("received %q", r)
		}
	})
	t.Run("500", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "down", http.StatusInternalServerError)
		}))
		t.Cleanup(srv.Close)
		s := newSink(t, sinkhttp.Config{URL: srv.URL, Tombstones: "drop"})
		got := failures(t, s.WriteBatch(ctxT(t), encRecs("a", binary, tomb, "b")))
		if len(got) != 3 || sinks.Classify(got[1]) != sinks.Fatal || sinks.Classify(got[0]) != sinks.Retryable {
			t.Fatalf("failed %v, want 0 and 3 retryable, 1 fatal, the tombstone delivered", got)
		}
		if got[0] != got[3] || !strings.Contains(got[0].Error(), "500") {
			t.Fatalf("entries 0 and 3 failed as one request, want one error value: %v / %v", got[0], got[3])
		}
	})
	t.Run("all sent: the request's error as is", func(t *testing.T) {
		var calls atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			calls.Add(1)
			http.Error(w, "down", http.StatusInternalServerError)
		}))
		t.Cleanup(srv.Close)
		s := newSink(t, sinkhttp.Config{URL: srv.URL})
		err := s.WriteBatch(ctxT(t), encRecs("a", "b"))
		var be *sinks.BatchError
		if err == nil || errors.As(err, &be) || calls.Load() != 1 {
			t.Fatalf("err %v (%T), want the request's error", err, err)
		}
	})
}

// TestValueEncodingIdempotencyKey: the key of a request that left records
// out is that of the records it carries, the same on every retry.
func TestValueEncodingIdempotencyKey(t *testing.T) {
	rc, srv := newReceiver(t)
	s := newSink(t, sinkhttp.Config{URL: srv.URL})
	batch := encRecs("a", "\xff", "b")
	for range 2 {
		_ = s.WriteBatch(ctxT(t), batch)
	}
	reqs := rc.requests()
	want := sinkhttp.IdempotencyKey([]pipeline.Record{batch[0], batch[2]})
	var keys []string
	for _, r := range reqs {
		keys = append(keys, r.header.Get("Idempotency-Key"))
	}
	if !slices.Equal(keys, []string{want, want}) {
		t.Fatalf("keys %q, want %q twice", keys, want)
	}
}
