package cli

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestDemoSink: batches are counted as JSON arrays or NDJSON, a bad body
// is refused with 400, and with a rate a batch larger than what the bucket
// holds gets 429 with Retry-After, as an API gateway answers.
func TestDemoSink(t *testing.T) {
	post := func(h http.Handler, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ingest", strings.NewReader(body)))
		return rec
	}
	d := &demoSink{}
	if rec := post(d, `[{"id":1},{"id":2},"x"]`); rec.Code != http.StatusNoContent {
		t.Fatalf("array: %d", rec.Code)
	}
	if rec := post(d, "{\"id\":3}\n{\"id\":4}\n"); rec.Code != http.StatusNoContent {
		t.Fatalf("ndjson: %d", rec.Code)
	}
	if rec := post(d, "{\"id\":5}\nnot json\n"); rec.Code != http.StatusBadRequest {
		t.Fatalf("bad ndjson: %d, want 400", rec.Code)
	}
	if st := d.snapshot(); st.Records != 5 || st.Requests != 2 {
		t.Fatalf("stats %+v, want 5 records in 2 requests", st)
	}

	limited := &demoSink{rate: 100, tokens: 10, last: time.Now()} // bucket of 10
	if rec := post(limited, `[1,2,3,4,5,6,7,8]`); rec.Code != http.StatusNoContent {
		t.Fatalf("first batch within the burst: %d", rec.Code)
	}
	rec := post(limited, `[1,2,3,4,5,6,7,8]`)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("second batch: %d Retry-After %q, want 429 and 1", rec.Code, rec.Header().Get("Retry-After"))
	}
	if st := limited.snapshot(); st.Records != 8 || st.Throttled != 1 {
		t.Fatalf("stats %+v, want 8 records and 1 refused", st)
	}
}
