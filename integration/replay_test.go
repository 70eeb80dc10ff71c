package integration

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Helpers of the crash-replay measurement (TestKillAndRestart): when was
// each record answered, and which answers repeat one the worker had, or
// had not, received before a kill.

// answerLog records when the receiver answered each id. Its hook answers
// the requests itself, so the time of an answer is known from outside.
type answerLog struct {
	mu    sync.Mutex
	times map[int64][]time.Time // id → the times its requests were answered
	busy  int                   // requests being answered
}

func newAnswerLog() *answerLog { return &answerLog{times: map[int64][]time.Time{}} }

// hook is a receiver hook that takes delay to answer, then accepts the
// request's records and notes the time of the answer.
func (a *answerLog) hook(rc *receiver, delay time.Duration) func(http.ResponseWriter, *http.Request, []int64) bool {
	return func(w http.ResponseWriter, r *http.Request, ids []int64) bool {
		a.mu.Lock()
		a.busy++
		a.mu.Unlock()
		time.Sleep(delay)
		rc.accept(r, ids)
		now := time.Now()
		a.mu.Lock()
		for _, id := range ids {
			a.times[id] = append(a.times[id], now)
		}
		a.busy--
		a.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		return true
	}
}

// idle waits until no request is being answered: after a kill, the
// requests in flight are answered before the next worker starts.
func (a *answerLog) idle(t *testing.T) {
	t.Helper()
	waitFor(t, "receiver idle", time.Minute, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.busy == 0
	})
}

// replay classifies the repeated answers of a run whose workers ran from
// starts[i] until kills[i] (the last one has no kill). A record answered
// again was answered before either while its worker lived (the worker got
// the answer, the record was done: replayed, with the time from that
// answer to the kill as its age) or after its worker was killed (the
// request was in flight at the kill).
type replay struct {
	inFlight int             // repeats of answers given after the kill
	ages     []time.Duration // per repeat of an answer the worker had: how long before the kill
	other    int             // repeats of an answer of the last worker (no kill)
}

func (a *answerLog) replay(starts, kills []time.Time) replay {
	a.mu.Lock()
	defer a.mu.Unlock()
	var r replay
	for _, ts := range a.times {
		for _, prev := range ts[:len(ts)-1] {
			// The worker generation prev fell in: the last start at or before it.
			i, found := slices.BinarySearchFunc(starts, prev, func(s, t time.Time) int { return s.Compare(t) })
			if !found {
				i--
			}
			switch {
			case i < 0 || i >= len(kills):
				r.other++
			case prev.Before(kills[i]):
				r.ages = append(r.ages, kills[i].Sub(prev))
			default:
				r.inFlight++
			}
		}
	}
	slices.Sort(r.ages)
	return r
}

// age returns the quantile q of the ages of the replayed records (0 when
// there are none).
func (r replay) age(q float64) time.Duration {
	if len(r.ages) == 0 {
		return 0
	}
	return r.ages[min(len(r.ages)-1, int(q*float64(len(r.ages))))]
}

func (r replay) String() string {
	q := func(p float64) time.Duration { return r.age(p).Round(time.Millisecond) }
	return fmt.Sprintf("%d in flight at the kills, %d done before the kills (answered a median %v, p90 %v, p99 %v, at most %v before), %d other",
		r.inFlight, len(r.ages), q(0.5), q(0.9), q(0.99), q(1), r.other)
}

// countCommits counts the OffsetCommit requests the cluster handles from
// now on; nil for an external cluster, which does not say.
func countCommits(c *cluster) *atomic.Int64 {
	if c.Fake == nil {
		return nil
	}
	var n atomic.Int64
	c.Fake.ControlKey(int16(kmsg.OffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		n.Add(1)
		return nil, nil, false
	})
	return &n
}
