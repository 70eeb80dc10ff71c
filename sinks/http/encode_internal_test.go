package http

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks/internal/jsonenc"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"3", 3 * time.Second},
		{" 42 ", 42 * time.Second},
		{"-5", 0},
		{"300", 5 * time.Minute},
		{"301", MaxRetryAfter},
		{"99999999999999999999", 0}, // overflows int64: not a valid value
		{"9223372036854775807", MaxRetryAfter},
		{"1.5", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{now.Add(24 * time.Hour).Format(http.TimeFormat), MaxRetryAfter},
		{"Sat, 01 Mar 2025 12:00:30 GMT", 30 * time.Second},
		{"Saturday, 01-Mar-25 12:00:30 GMT", 30 * time.Second}, // RFC 850
		{"Sat Mar  1 12:00:30 2025", 30 * time.Second},         // ANSI C
	}
	for _, tc := range tests {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestBound(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 3, "hel"},
		{"héllo", 2, "h"}, // é cut in half is dropped
		{"héllo", 3, "hé"},
		{"a\xffb", 3, "a"}, // the replacement would not fit
		{"\xff\xff\xff\xff", 4, "\uFFFD"},
		{"ab\xff", 3, "ab"}, // a lone continuation-less byte at the end is an incomplete rune
		{"", 5, ""},
	}
	for _, tc := range tests {
		got := bound(tc.in, tc.n)
		if got != tc.want || len(got) > tc.n {
			t.Errorf("bound(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestTraceparent(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-\r\n", false},
	}
	for _, tc := range tests {
		if got := validTraceparent([]byte(tc.in)); got != tc.want {
			t.Errorf("validTraceparent(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestBodyRecycling checks that a body's buffer goes back to the pool only
// after its owner and every reader let go, and that a closed reader never
// reads it again.
func TestBodyRecycling(t *testing.T) {
	batch := []pipeline.Record{{Value: []byte(`{"a":1}`)}, {Value: []byte("x")}}
	b := (&encoder{values: jsonenc.Values{Encoding: EncodingAuto}}).encode(batch).body
	if got := string(b.bytes()); got != `[{"a":1},"x"]` {
		t.Fatalf("body %q", got)
	}
	r1, r2 := b.open(), b.open() // the request body and a GetBody copy
	b.release()                  // the request is over
	if b.buf == nil {
		t.Fatal("buffer recycled while readers are open")
	}
	got, _ := io.ReadAll(r1)
	if string(got) != `[{"a":1},"x"]` {
		t.Fatalf("reader read %q", got)
	}
	r1.Close()
	r1.Close() // closing twice releases once
	if b.buf == nil {
		t.Fatal("buffer recycled while a reader is open")
	}
	r2.Close()
	if b.buf != nil {
		t.Fatal("buffer not recycled after the last reader closed")
	}
	if n, err := r2.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("Read after Close = %d, %v; want 0, EOF", n, err)
	}
}
