package sinks

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

type captured struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (c *captured) Enabled(context.Context, slog.Level) bool { return true }
func (c *captured) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, r.Clone())
	return nil
}
func (c *captured) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *captured) WithGroup(string) slog.Handler      { return c }

func attrsOf(r slog.Record) map[string]slog.Value {
	m := map[string]slog.Value{}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value; return true })
	return m
}

// TestSummary: the first event is logged at once; later ones within the
// interval are counted and come out in the next line, with the time they
// cover and the last event's details.
func TestSummary(t *testing.T) {
	h := &captured{}
	log := slog.New(h)
	s := summary{msg: "failing", level: slog.LevelInfo}
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	s.note(log, t0, "retried_records", 500, "last_error", "503 a")
	for i := range 100 {
		s.note(log, t0.Add(time.Duration(i+1)*50*time.Millisecond), "retried_records", 500, "last_error", "503 b")
	}
	s.note(log, t0.Add(6*time.Second), "throttled_records", 200, "last_error", "429 c")
	if len(h.recs) != 1 {
		t.Fatalf("%d lines within the interval, want 1 (the first event)", len(h.recs))
	}
	s.note(log, t0.Add(summaryEvery+time.Second), "retried_records", 1, "last_error", "503 d")
	if len(h.recs) != 2 {
		t.Fatalf("%d lines after the interval, want 2", len(h.recs))
	}
	a := attrsOf(h.recs[1])
	if a["retried_records"].Int64() != 100*500+1 || a["throttled_records"].Int64() != 200 ||
		a["last_error"].String() != "503 d" || a["over"].Duration() != summaryEvery+time.Second {
		t.Errorf("summary line %v", a)
	}
}

// TestSummaryFlush: events counted since the last line come out on flush
// (the end of a run), once; with nothing counted flush logs nothing.
func TestSummaryFlush(t *testing.T) {
	h := &captured{}
	log := slog.New(h)
	s := summary{msg: "failing", level: slog.LevelInfo}
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	s.flush(log, t0)
	if len(h.recs) != 0 {
		t.Fatalf("%d lines from flushing nothing", len(h.recs))
	}
	s.note(log, t0, "closed->open", 1)
	s.note(log, t0.Add(time.Second), "open->half-open", 1)
	s.note(log, t0.Add(2*time.Second), "half-open->closed", 1)
	s.flush(log, t0.Add(3*time.Second))
	s.flush(log, t0.Add(4*time.Second))
	if len(h.recs) != 2 {
		t.Fatalf("%d lines, want the first event and one flushed line", len(h.recs))
	}
	a := attrsOf(h.recs[1])
	if a["open->half-open"].Int64() != 1 || a["half-open->closed"].Int64() != 1 || a["over"].Duration() != 3*time.Second {
		t.Errorf("flushed line %v", a)
	}
}
