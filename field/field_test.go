package field

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestListMergeReroots(t *testing.T) {
	var inner List
	inner.Positive("max_batch_size", 0)
	inner.PositiveDur("request_timeout", -time.Second)
	inner.OneOf("format", "xml", "json", "ndjson")
	var outer List
	outer.Merge("sink.writer", inner.Err())
	outer.Merge("sink.http", fmt.Errorf("plain error"))
	got := Split(outer.Err())
	want := []string{
		"sink.writer.max_batch_size: must be positive, got 0",
		"sink.writer.request_timeout: must be positive, got -1s",
		`sink.writer.format: must be "json" or "ndjson", got "xml"`,
		"sink.http: plain error",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors %v, want %d", len(got), got, len(want))
	}
	for i, e := range got {
		if e.Error() != want[i] {
			t.Errorf("error %d = %q, want %q", i, e, want[i])
		}
		var fe *Error
		if !errors.As(e, &fe) {
			t.Errorf("error %d is %T, want *Error", i, e)
		}
	}
}

func TestJoin(t *testing.T) {
	for _, c := range []struct{ p, k, want string }{
		{"", "a", "a"}, {"a", "", "a"}, {"a", "b", "a.b"}, {"ops", "[2]", "ops[2]"},
	} {
		if got := Join(c.p, c.k); got != c.want {
			t.Errorf("Join(%q, %q) = %q, want %q", c.p, c.k, got, c.want)
		}
	}
}

func TestEmptyListIsNil(t *testing.T) {
	var l List
	l.Positive("n", 1)
	l.Required("name", "x")
	if err := l.Err(); err != nil {
		t.Fatalf("Err() = %v, want nil", err)
	}
}
