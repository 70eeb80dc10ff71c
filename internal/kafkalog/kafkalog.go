// Package kafkalog routes franz-go's own log lines (connection failures,
// group join and sync errors, retried requests) into Spillway's slog logger.
package kafkalog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

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
func Logger(l *slog.Logger, min slog.Level) kgo.Logger {
	h := floor{Handler: l.Handler(), min: min}
	return kslog.New(slog.New(h).With("component", "kafka-client"))
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
