package sinks

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// summaryEvery is how often at most the writer logs a summary of a kind of
// repeated event (retried failures, breaker transitions): an outage
// should be visible at info level without a line per request.
const summaryEvery = 10 * time.Second

// summary counts events by kind and logs, at most once per summaryEvery,
// one line with the counts since the last line and the last event's
// details. The first event is logged at once. Safe for concurrent use; it
// is only called on failure paths.
type summary struct {
	msg   string
	level slog.Level

	mu     sync.Mutex
	last   time.Time
	counts map[string]int64 // kind → events since the last line
	detail []any            // attributes of the last event
}

// note records one event of kind with n units at now and logs if due.
func (s *summary) note(log *slog.Logger, now time.Time, kind string, n int64, detail ...any) {
	s.mu.Lock()
	if s.counts == nil {
		s.counts = map[string]int64{}
	}
	s.counts[kind] += n
	s.detail = detail
	if !s.last.IsZero() && now.Sub(s.last) < summaryEvery {
		s.mu.Unlock()
		return
	}
	attrs := make([]any, 0, 2*len(s.counts)+len(detail)+2)
	for k, c := range s.counts {
		attrs = append(attrs, k, c)
	}
	if !s.last.IsZero() {
		attrs = append(attrs, "over", now.Sub(s.last).Round(time.Millisecond))
	}
	attrs = append(attrs, detail...)
	clear(s.counts)
	s.last = now
	s.mu.Unlock()
	log.Log(context.Background(), s.level, s.msg, attrs...)
}

// flush logs the events counted since the last line, if any, so that a
// run's last events are not lost when it ends within summaryEvery of the
// previous line.
func (s *summary) flush(log *slog.Logger, now time.Time) {
	s.mu.Lock()
	if len(s.counts) == 0 {
		s.mu.Unlock()
		return
	}
	attrs := make([]any, 0, 2*len(s.counts)+len(s.detail)+2)
	for k, c := range s.counts {
		attrs = append(attrs, k, c)
	}
	attrs = append(attrs, "over", now.Sub(s.last).Round(time.Millisecond))
	attrs = append(attrs, s.detail...)
	clear(s.counts)
	s.last = now
	s.mu.Unlock()
	log.Log(context.Background(), s.level, s.msg, attrs...)
}
