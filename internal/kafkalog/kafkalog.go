// Package kafkalog routes franz-go's own log lines (connection failures,
// group join and sync errors, retried requests) into Spillway's slog logger.
package kafkalog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// DefaultLevel is the level below which franz-go's lines are dropped unless
// configured otherwise: its info lines narrate every group join and metadata
// refresh, its warnings and errors are what an operator needs.
const DefaultLevel = slog.LevelWarn

// ParseLevel parses debug, info, warn or error; empty is DefaultLevel.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "":
		return DefaultLevel, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("must be debug, info, warn or error, got %q", s)
}

// Logger returns a franz-go logger that writes to l, tagged
// component=kafka-client, dropping lines below min (and below l's own level).
// It uses franz-go's kslog plugin for the level mapping; the floor is ours
// because kslog follows the slog handler's level only.
//
// While brokers are unreachable franz-go repeats the same warning several
// times a second; each message is logged at most once per Every, with the
// number of repeats left out since its last line (suppressed=N).
func Logger(l *slog.Logger, min slog.Level) kgo.Logger {
	h := floor{Handler: l.Handler(), min: min}
	return &sampler{next: kslog.New(slog.New(h).With("component", "kafka-client")), every: Every, now: time.Now, last: map[string]*seen{}}
}

// Every is how often one franz-go message may repeat in the log.
const Every = 10 * time.Second

type seen struct {
	at         time.Time
	suppressed int
}

// sampler is a kgo.Logger that drops repeats of a message within every.
// franz-go's messages are a fixed set of strings, so the map stays small.
type sampler struct {
	next  kgo.Logger
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	last map[string]*seen
}

func (s *sampler) Level() kgo.LogLevel { return s.next.Level() }

func (s *sampler) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if level == kgo.LogLevelDebug {
		s.next.Log(level, msg, keyvals...) // asked for explicitly: everything
		return
	}
	now := s.now()
	s.mu.Lock()
	e := s.last[msg]
	if e != nil && now.Sub(e.at) < s.every {
		e.suppressed++
		s.mu.Unlock()
		return
	}
	n := 0
	if e == nil {
		s.last[msg] = &seen{at: now}
	} else {
		n, e.at, e.suppressed = e.suppressed, now, 0
	}
	s.mu.Unlock()
	if n > 0 {
		keyvals = append(keyvals[:len(keyvals):len(keyvals)], "suppressed", n)
	}
	s.next.Log(level, msg, keyvals...)
}

type floor struct {
	slog.Handler
	min slog.Level
}

func (f floor) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= f.min && f.Handler.Enabled(ctx, lv)
}

func (f floor) WithAttrs(as []slog.Attr) slog.Handler {
	return floor{Handler: f.Handler.WithAttrs(as), min: f.min}
}

func (f floor) WithGroup(name string) slog.Handler {
	return floor{Handler: f.Handler.WithGroup(name), min: f.min}
}
