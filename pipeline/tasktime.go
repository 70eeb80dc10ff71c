package pipeline

import (
	"sync"
	"time"
)

// TaskState is what a stage is doing, after Flink's task time metrics.
type TaskState int

const (
	// Idle: waiting for input.
	Idle TaskState = iota
	// Busy: processing.
	Busy
	// Backpressured: has output but the next stage has no room for it.
	Backpressured
)

// TaskTimer accounts the time a stage spends idle, busy and backpressured.
// Set is called on state changes (not per record); Times may be read
// concurrently. The zero value starts idle at its first Set.
type TaskTimer struct {
	mu    sync.Mutex
	now   func() time.Time
	state TaskState
	since time.Time
	total [3]time.Duration
}

// NewTaskTimer returns a timer that reads the clock with now (nil:
// time.Now).
func NewTaskTimer(now func() time.Time) *TaskTimer {
	if now == nil {
		now = time.Now
	}
	return &TaskTimer{now: now, since: now()}
}

// Set switches the stage to s. A nil timer ignores it.
func (t *TaskTimer) Set(s TaskState) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s == t.state {
		return
	}
	now := t.clock()
	t.total[t.state] += now.Sub(t.since)
	t.state, t.since = s, now
}

func (t *TaskTimer) clock() time.Time {
	if t.now == nil {
		t.now = time.Now
		t.since = t.now()
	}
	return t.now()
}

// TaskTimes are cumulative durations per state.
type TaskTimes struct {
	Idle, Busy, Backpressured time.Duration
}

// Times returns the cumulative time per state, the current one included.
func (t *TaskTimer) Times() TaskTimes {
	if t == nil {
		return TaskTimes{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	tot := t.total
	tot[t.state] += t.clock().Sub(t.since)
	return TaskTimes{Idle: tot[Idle], Busy: tot[Busy], Backpressured: tot[Backpressured]}
}

// PerSecond turns the difference between two readings into Flink's
// idleTimeMsPerSecond, busyTimeMsPerSecond and backPressuredTimeMsPerSecond.
func (t TaskTimes) PerSecond(prev TaskTimes) (idle, busy, backpressured float64) {
	d := (t.Idle - prev.Idle) + (t.Busy - prev.Busy) + (t.Backpressured - prev.Backpressured)
	if d <= 0 {
		return 0, 0, 0
	}
	f := func(x time.Duration) float64 { return 1000 * float64(x) / float64(d) }
	return f(t.Idle - prev.Idle), f(t.Busy - prev.Busy), f(t.Backpressured - prev.Backpressured)
}

// TaskTimed is implemented by sources that account their own task time
// (poll = idle, convert = busy, paused for credit = backpressured). The
// pipeline gives them its source-stage timer.
type TaskTimed interface {
	SetTaskTimer(*TaskTimer)
}
