package backpressure

import (
	"container/heap"
	"math/rand/v2"
	"time"
)

// A deterministic discrete-event simulation of a saturated writer sending
// through a Strategy to a sink of limited capacity. Time is simulated: no
// clock, no goroutines; AIMD needs none (its only time input is
// Result.Latency, which the simulation supplies).

// simSink decides the fate of a request sent at time t.
type simSink interface {
	// send returns whether the request of n records is accepted and its
	// latency.
	send(t time.Duration, n int) (ok bool, latency time.Duration)
	setCapacity(t time.Duration, perSecond float64)
}

// throttlingSink accepts up to perSecond records per second, with a burst
// of burstTime's worth, and answers throttled above it (like Kinesis or
// DynamoDB); latency is base plus a deterministic jitter.
type throttlingSink struct {
	perSecond float64
	burst     float64
	tokens    float64
	last      time.Duration
	base      time.Duration
	jitter    time.Duration
	rng       *rand.Rand
	burstTime time.Duration
}

func newThrottlingSink(perSecond float64, burstTime, base, jitter time.Duration) *throttlingSink {
	s := &throttlingSink{base: base, jitter: jitter, rng: rand.New(rand.NewPCG(1, 2)), burstTime: burstTime}
	s.setCapacity(0, perSecond)
	s.tokens = s.burst
	return s
}

func (s *throttlingSink) refill(t time.Duration) {
	s.tokens = min(s.burst, s.tokens+s.perSecond*(t-s.last).Seconds())
	s.last = t
}

func (s *throttlingSink) setCapacity(t time.Duration, perSecond float64) {
	s.refill(t)
	s.perSecond = perSecond
	s.burst = perSecond * s.burstTime.Seconds()
	s.tokens = min(s.tokens, s.burst)
}

func (s *throttlingSink) send(t time.Duration, n int) (bool, time.Duration) {
	s.refill(t)
	lat := s.base
	if s.jitter > 0 {
		lat += time.Duration(s.rng.Int64N(int64(s.jitter)))
	}
	if s.tokens < float64(n) {
		return false, lat
	}
	s.tokens -= float64(n)
	return true, lat
}

// queueingSink serves perSecond records per second in arrival order, with
// a queue bounded by maxDelay of work (throttled beyond it); latency is
// base plus the wait in the queue and the service time.
type queueingSink struct {
	perSecond float64
	free      time.Duration // when the server has finished all queued work
	base      time.Duration
	maxDelay  time.Duration
}

func (s *queueingSink) setCapacity(_ time.Duration, perSecond float64) { s.perSecond = perSecond }

func (s *queueingSink) send(t time.Duration, n int) (bool, time.Duration) {
	start := max(t, s.free)
	if start-t > s.maxDelay {
		return false, s.base
	}
	s.free = start + time.Duration(float64(n)/s.perSecond*float64(time.Second))
	return true, s.base + (s.free - t)
}

type simEvent struct {
	at  time.Duration
	res Result
	ok  bool
}

type simQueue []simEvent

func (q simQueue) Len() int           { return len(q) }
func (q simQueue) Less(i, j int) bool { return q[i].at < q[j].at }
func (q simQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)        { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// simStats are counts over a measurement interval.
type simStats struct {
	accepted  int // records
	requests  int
	throttled int // requests
	latency   time.Duration
	seconds   float64
}

func (s simStats) goodput() float64 { return float64(s.accepted) / s.seconds }
func (s simStats) throttledFraction() float64 {
	if s.requests == 0 {
		return 0
	}
	return float64(s.throttled) / float64(s.requests)
}
func (s simStats) meanLatency() time.Duration {
	if s.requests == 0 {
		return 0
	}
	return s.latency / time.Duration(s.requests)
}

// simPhase runs the sink at capacity for a duration and measures the part
// after settle.
type simPhase struct {
	capacity float64
	duration time.Duration
	settle   time.Duration
	setup    func() // called at the start of the phase, if set
}

// simulate drives a writer that always has records to send: whenever the
// strategy admits a batch of min(maxBatch, MaxBatchSize()) records it is
// sent; completions are the only events (AIMD changes only on them).
func simulate(s Strategy, sink simSink, maxBatch int, phases []simPhase) []simStats {
	var (
		q   simQueue
		now time.Duration
		out []simStats
	)
	end := time.Duration(0)
	for _, ph := range phases {
		start := end
		end += ph.duration
		measureFrom := start + ph.settle
		sink.setCapacity(start, ph.capacity)
		if ph.setup != nil {
			ph.setup()
		}
		st := simStats{seconds: (end - measureFrom).Seconds()}
		for now < end {
			// Send while admitted.
			for {
				n := maxBatch
				if m := s.MaxBatchSize(); m > 0 {
					n = min(n, m)
				}
				req := Request{Records: n}
				if !s.TryAcquire(req) {
					break
				}
				ok, lat := sink.send(now, n)
				res := Result{Request: req, Throttled: !ok, Latency: lat}
				if !ok {
					res.Failed = n
				}
				heap.Push(&q, simEvent{at: now + lat, res: res, ok: ok})
			}
			if q.Len() == 0 {
				panic("simulation stalled: nothing in flight and nothing admitted")
			}
			e := heap.Pop(&q).(simEvent)
			now = e.at
			s.Complete(e.res)
			if now >= measureFrom && now < end {
				st.requests++
				st.latency += e.res.Latency
				if e.ok {
					st.accepted += e.res.Request.Records
				} else {
					st.throttled++
				}
			}
		}
		out = append(out, st)
	}
	return out
}
