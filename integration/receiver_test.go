package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// receiver is an HTTP endpoint that records which generated ids it was
// sent. hook, when set, may answer a request itself (return true) to inject
// failures; the records of such a request are not counted as received.
type receiver struct {
	srv *httptest.Server

	mu    sync.Mutex
	seen  map[int64]int // id → times received
	reqs  int
	keys  map[string]int // Idempotency-Key → requests
	hook  func(w http.ResponseWriter, r *http.Request, ids []int64) bool
	total int
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{seen: map[int64]int{}, keys: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) URL() string { return rc.srv.URL + "/ingest" }

func (rc *receiver) setHook(h func(w http.ResponseWriter, r *http.Request, ids []int64) bool) {
	rc.mu.Lock()
	rc.hook = h
	rc.mu.Unlock()
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var vals []struct {
		ID *int64 `json:"id"`
	}
	if err := json.Unmarshal(body, &vals); err != nil {
		http.Error(w, "bad json: "+err.Error(), http.StatusBadRequest)
		return
	}
	ids := make([]int64, 0, len(vals))
	for _, v := range vals {
		if v.ID != nil {
			ids = append(ids, *v.ID)
		}
	}
	rc.mu.Lock()
	hook := rc.hook
	rc.mu.Unlock()
	if hook != nil && hook(w, r, ids) {
		return
	}
	rc.mu.Lock()
	rc.reqs++
	rc.keys[r.Header.Get("Idempotency-Key")]++
	for _, id := range ids {
		rc.seen[id]++
		rc.total++
	}
	rc.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// stats returns unique ids received, duplicates, and the ids in [0,n) never received.
func (rc *receiver) stats(n int) (unique, dups int, missing []int64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for id := int64(0); id < int64(n); id++ {
		c := rc.seen[id]
		if c == 0 {
			missing = append(missing, id)
			continue
		}
		unique++
		dups += c - 1
	}
	return unique, dups, missing
}

func (rc *receiver) uniqueCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.seen)
}

// accept counts ids as received, for a hook that answers a request itself
// but accepted some of its records (a 207 partial failure).
func (rc *receiver) accept(r *http.Request, ids []int64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.reqs++
	rc.keys[r.Header.Get("Idempotency-Key")]++
	for _, id := range ids {
		rc.seen[id]++
		rc.total++
	}
}
