package http_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
)

// TestRejections: a fatal answer to the whole request whose body names the
// refused records fails those alone (fatal, each naming itself and carrying
// the answer's error), and the others come back as sinks.Resend: not
// delivered, to be sent again without them. An answer that names nothing,
// or anything that is not a record of the request, fails the whole request
// as without rejections.
func TestRejections(t *testing.T) {
	ids := func(n int) []pipeline.Record {
		var vals []string
		for i := range n {
			vals = append(vals, fmt.Sprintf(`{"id":%d,"name":"n%d"}`, i, i))
		}
		b := recs(vals...)
		for i := range b {
			b[i].Key = fmt.Appendf(nil, "k%d", i)
		}
		return b
	}
	const answer = `"error":"schema violation"`
	tests := []struct {
		name    string
		rej     *sinkhttp.Rejections
		status  int
		body    string
		batch   []pipeline.Record
		refused map[int]string // index → a part of its error; nil: the whole request failed with class whole
		whole   sinks.Class
	}{
		{"indexes", &sinkhttp.Rejections{Path: "failed"}, 400, `{` + answer + `,"failed":[1,3]}`, ids(5),
			map[int]string{1: "refused by the receiver (failed names index 1): {\"error\":\"schema violation\"", 3: "failed names index 3"}, 0},
		{"ids in a field, as numbers and strings", &sinkhttp.Rejections{Path: "bad_ids", Match: "field", Field: "id"}, 422,
			`{` + answer + `,"bad_ids":[2,"4"]}`, ids(5), map[int]string{2: `bad_ids names id "2"`, 4: `bad_ids names id "4"`}, 0},
		{"keys through an array of objects", &sinkhttp.Rejections{Path: "result.errors.key", Match: "key"}, 400,
			`{"result":{"errors":[{"key":"k0","error":"x"},{"key":"k2","error":"y"}]}}`, ids(3),
			map[int]string{0: `result.errors.key names key "k0"`, 2: `key "k2"`}, 0},
		{"every record refused", &sinkhttp.Rejections{Path: "failed"}, 400, `{"failed":[0,1]}`, ids(2),
			map[int]string{0: "index 0", 1: "index 1"}, 0},
		{"unknown id: not trusted", &sinkhttp.Rejections{Path: "bad_ids", Match: "field", Field: "id"}, 400,
			`{"bad_ids":[2,9]}`, ids(3), nil, sinks.Fatal},
		{"index outside the batch: not trusted", &sinkhttp.Rejections{Path: "failed"}, 400, `{"failed":[0,3]}`, ids(3), nil, sinks.Fatal},
		{"empty list: not trusted", &sinkhttp.Rejections{Path: "failed"}, 400, `{"failed":[]}`, ids(3), nil, sinks.Fatal},
		{"no list", &sinkhttp.Rejections{Path: "failed"}, 400, `{"error":"bad"}`, ids(3), nil, sinks.Fatal},
		{"not JSON", &sinkhttp.Rejections{Path: "failed"}, 400, `bad request`, ids(3), nil, sinks.Fatal},
		{"objects at the end of the path", &sinkhttp.Rejections{Path: "failed"}, 400, `{"failed":[{"index":1}]}`, ids(3), nil, sinks.Fatal},
		{"retryable status: body not read", &sinkhttp.Rejections{Path: "failed"}, 500, `{"failed":[1]}`, ids(3), nil, sinks.Retryable},
		{"configuration fault: body not read", &sinkhttp.Rejections{Path: "failed"}, 404, `{"failed":[1]}`, ids(3), nil, sinks.Misconfigured},
		{"off", nil, 400, `{"failed":[1]}`, ids(3), nil, sinks.Fatal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			s := newSink(t, sinkhttp.Config{URL: srv.URL, Rejections: tc.rej})
			err := s.WriteBatch(ctxT(t), tc.batch)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.refused == nil {
				if got := failures(t, asBatch(err)); got != nil {
					t.Fatalf("per-entry failures %v, want the whole request failed", got)
				}
				if c := sinks.Classify(err); c != tc.whole {
					t.Fatalf("class %v, want %v: %v", c, tc.whole, err)
				}
				if tc.rej != nil && tc.whole == sinks.Fatal && !strings.Contains(err.Error(), "rejections.path "+tc.rej.Path) {
					t.Errorf("error %q does not say why the answer was not used", err)
				}
				return
			}
			got := failures(t, err)
			if len(got) != len(tc.batch) {
				t.Fatalf("%d entries listed, want all %d (refused or resent)", len(got), len(tc.batch))
			}
			for i, ferr := range got {
				want, refused := tc.refused[i]
				if !refused {
					if c := sinks.Classify(ferr); c != sinks.Resend {
						t.Errorf("entry %d: class %v, want resend: %v", i, c, ferr)
					}
					continue
				}
				if c := sinks.Classify(ferr); c != sinks.Fatal {
					t.Errorf("entry %d: class %v, want fatal", i, c)
				}
				if !strings.Contains(ferr.Error(), want) {
					t.Errorf("entry %d: %q, want it to contain %q", i, ferr, want)
				}
				if d := details(t, ferr); d["http.status"] != fmt.Sprint(tc.status) || d["http.body"] != tc.body {
					t.Errorf("entry %d: details %v", i, d)
				}
			}
		})
	}
}

// asBatch returns err when it is a *sinks.BatchError, else nil.
func asBatch(err error) error {
	if be, ok := err.(*sinks.BatchError); ok {
		return be
	}
	return nil
}

// TestRejectionsAfterEncoding: indexes in the answer are positions in the
// request body, which lacks the records that failed to encode; the result
// names batch indexes.
func TestRejectionsAfterEncoding(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"failed":[1]}`))
	}))
	t.Cleanup(srv.Close)
	s := newSink(t, sinkhttp.Config{URL: srv.URL, Rejections: &sinkhttp.Rejections{Path: "failed"}})
	got := failures(t, s.WriteBatch(ctxT(t), recs("\xff", "a", "b")))
	if len(got) != 3 || sinks.Classify(got[0]) != sinks.Fatal || sinks.Classify(got[1]) != sinks.Resend || sinks.Classify(got[2]) != sinks.Fatal {
		t.Fatalf("failed %v, want 0 fatal (encoding), 1 resend, 2 fatal (refused)", got)
	}
	if !strings.Contains(got[0].Error(), "UTF-8") || !strings.Contains(got[2].Error(), "index 1") {
		t.Fatalf("errors %q and %q", got[0], got[2])
	}
}

func TestClassifyResend(t *testing.T) {
	err := sinks.AsResend(sinks.AsFatal(nil))
	if err != nil {
		t.Fatalf("AsResend(nil) = %v", err)
	}
	base := &sinks.DetailedError{Err: http.ErrBodyNotAllowed}
	if c := sinks.Classify(sinks.AsResend(base)); c != sinks.Resend || c.String() != "resend" {
		t.Fatalf("Classify(AsResend) = %v", c)
	}
	if c := sinks.Classify(sinks.AsFatal(sinks.AsResend(base))); c != sinks.Fatal {
		t.Fatalf("fatal wins over resend, got %v", c)
	}
}
