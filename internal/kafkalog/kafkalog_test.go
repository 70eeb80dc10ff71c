package kafkalog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestLoggerFloor(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := Logger(base, slog.LevelWarn)
	if got := l.Level(); got != kgo.LogLevelWarn {
		t.Fatalf("Level() = %v, want warn", got)
	}
	l.Log(kgo.LogLevelInfo, "joined group")
	l.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "127.0.0.1:1")
	out := buf.String()
	if strings.Contains(out, "joined group") {
		t.Errorf("info line passed a warn floor:\n%s", out)
	}
	if !strings.Contains(out, "unable to open connection") || !strings.Contains(out, "component=kafka-client") || !strings.Contains(out, "addr=127.0.0.1:1") {
		t.Errorf("warn line missing or untagged:\n%s", out)
	}

	// The base logger's own level still applies under a lower floor.
	buf.Reset()
	quiet := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}))
	l = Logger(quiet, slog.LevelDebug)
	if got := l.Level(); got != kgo.LogLevelError {
		t.Fatalf("Level() = %v, want error", got)
	}
	l.Log(kgo.LogLevelWarn, "dropped")
	if buf.Len() != 0 {
		t.Errorf("warn line passed an error-level base logger: %s", buf.String())
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"": DefaultLevel, "debug": slog.LevelDebug, "INFO": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		got, err := ParseLevel(in)
		if err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseLevel("loud"); err == nil || !strings.Contains(err.Error(), "loud") {
		t.Errorf("ParseLevel(loud) error = %v", err)
	}
}

func TestRepeatsSuppressed(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, nil))
	l := Logger(base, slog.LevelWarn).(*sampler)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for range 5 {
		l.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "a")
	}
	l.Log(kgo.LogLevelError, "group manage loop errored")
	if got := strings.Count(buf.String(), "unable to open connection"); got != 1 {
		t.Fatalf("%d lines for 5 repeats within %v, want 1:\n%s", got, Every, buf.String())
	}
	if !strings.Contains(buf.String(), "group manage loop errored") {
		t.Fatalf("another message was suppressed:\n%s", buf.String())
	}
	buf.Reset()
	now = now.Add(Every)
	l.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "a")
	if out := buf.String(); !strings.Contains(out, "suppressed=4") || !strings.Contains(out, "addr=a") {
		t.Fatalf("line after the window lacks the repeat count:\n%s", out)
	}
	buf.Reset()
	now = now.Add(Every)
	l.Log(kgo.LogLevelWarn, "unable to open connection to broker")
	if out := buf.String(); strings.Contains(out, "suppressed") {
		t.Fatalf("no repeats, yet a count:\n%s", out)
	}
}
