package http_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// receiver is an ingest endpoint: it decodes json and ndjson bodies, keeps
// the values and the requests, and can refuse some entries of the next
// request with the 207 partial-failure protocol. With dedupe it answers a
// request whose Idempotency-Key it already stored in full with 200 and
// stores nothing.
type receiver struct {
	mu     sync.Mutex
	values [][]byte
	reqs   []received
	reject []int
	dedupe bool
	stored map[string]bool // Idempotency-Keys of requests stored in full
}

type received struct {
	method string
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, srv
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	vals, err := decodeBody(r.Header.Get("Content-Type"), body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.reqs = append(rc.reqs, received{r.Method, r.Header.Clone(), body})
	rej := rc.reject
	rc.reject = nil
	key := r.Header.Get("Idempotency-Key")
	if rc.dedupe && rc.stored[key] {
		w.WriteHeader(http.StatusOK)
		return
	}
	if len(rej) == 0 {
		rc.values = append(rc.values, vals...)
		if rc.stored == nil {
			rc.stored = map[string]bool{}
		}
		rc.stored[key] = true
		w.WriteHeader(http.StatusOK)
		return
	}
	var failed []string
	refused := map[int]bool{}
	for _, i := range rej {
		refused[i] = true
		failed = append(failed, fmt.Sprintf(`{"index":%d,"status":503,"error":"busy"}`, i))
	}
	for i, v := range vals {
		if !refused[i] {
			rc.values = append(rc.values, v)
		}
	}
	w.WriteHeader(http.StatusMultiStatus)
	fmt.Fprintf(w, `{"failed":[%s]}`, strings.Join(failed, ","))
}

// decodeBody returns the elements of a json or ndjson body: JSON strings
// decoded, null as nil, anything else as its JSON text.
func decodeBody(contentType string, body []byte) ([][]byte, error) {
	var elems []json.RawMessage
	switch contentType {
	case "application/json", "application/vnd.api+json":
		if err := json.Unmarshal(body, &elems); err != nil {
			return nil, fmt.Errorf("json body: %w", err)
		}
	case "application/x-ndjson":
		if len(body) > 0 && body[len(body)-1] != '\n' {
			return nil, fmt.Errorf("ndjson body does not end with a newline")
		}
		for i, line := range bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n")) {
			if !json.Valid(line) {
				return nil, fmt.Errorf("ndjson line %d is not JSON: %q", i, line)
			}
			elems = append(elems, line)
		}
	default:
		return nil, fmt.Errorf("unexpected content type %q", contentType)
	}
	out := make([][]byte, len(elems))
	for i, e := range elems {
		switch {
		case string(e) == "null":
		case len(e) > 0 && e[0] == '"':
			var s string
			if err := json.Unmarshal(e, &s); err != nil {
				return nil, err
			}
			out[i] = []byte(s)
		default:
			out[i] = e
		}
	}
	return out, nil
}

func (rc *receiver) Received() [][]byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([][]byte(nil), rc.values...)
}

func (rc *receiver) Reject(indexes ...int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.reject = indexes
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}
