package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spillway-io/spillway/pipeline"
)

// The tests are in package file to read the source's tracker: the records a
// source hands out must be acknowledged back into it.

func TestParse(t *testing.T) {
	ts := time.Date(2024, 5, 1, 12, 30, 0, 0, time.UTC)
	raw := func(line string) pipeline.Record {
		return pipeline.Record{Value: []byte(strings.TrimSpace(line))}
	}
	tests := []struct {
		name string
		line string
		want pipeline.Record
	}{
		{
			name: "full envelope",
			line: `{"key":"k1","value":"hello","headers":{"b":"2","a":"1"},"timestamp":"2024-05-01T12:30:00Z"}`,
			want: pipeline.Record{
				Key: []byte("k1"), Value: []byte("hello"), Timestamp: ts,
				Headers: []pipeline.Header{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}},
			},
		},
		{name: "value only", line: `{"value":"v"}`, want: pipeline.Record{Value: []byte("v")}},
		{name: "value as a JSON string holding JSON", line: `{"value":"{\"a\":1}"}`, want: pipeline.Record{Value: []byte(`{"a":1}`)}},
		{name: "value as raw JSON object", line: `{"value":{"a": [1, 2]}}`, want: pipeline.Record{Value: []byte(`{"a": [1, 2]}`)}},
		{name: "value as raw JSON number", line: `{"key":"k","value":42}`, want: pipeline.Record{Key: []byte("k"), Value: []byte("42")}},
		{name: "value as raw JSON array", line: `{"value":[1,"x"]}`, want: pipeline.Record{Value: []byte(`[1,"x"]`)}},
		{name: "escaped unicode in value", line: `{"value":"caf\u00e9 \u2603"}`, want: pipeline.Record{Value: []byte("café ☃")}},
		{name: "null value is a tombstone", line: `{"key":"k","value":null}`, want: pipeline.Record{Key: []byte("k")}},
		{name: "null key", line: `{"key":null,"value":"v"}`, want: pipeline.Record{Value: []byte("v")}},
		{name: "empty key", line: `{"key":"","value":"v"}`, want: pipeline.Record{Key: []byte{}, Value: []byte("v")}},
		{name: "empty value", line: `{"value":""}`, want: pipeline.Record{Value: []byte{}}},
		{name: "empty headers", line: `{"value":"v","headers":{}}`, want: pipeline.Record{Value: []byte("v")}},
		{name: "null headers and timestamp", line: `{"value":"v","headers":null,"timestamp":null}`, want: pipeline.Record{Value: []byte("v")}},
		{name: "surrounding whitespace", line: " \t{\"value\":\"v\"} \r", want: pipeline.Record{Value: []byte("v")}},
		{
			name: "timestamp with offset",
			line: `{"value":"v","timestamp":"2024-05-01T14:30:00.5+02:00"}`,
			want: pipeline.Record{Value: []byte("v"), Timestamp: ts.Add(500 * time.Millisecond)},
		},

		// Anything else is the value as is.
		{name: "extra member", line: `{"value":"v","extra":1}`, want: raw(`{"value":"v","extra":1}`)},
		{name: "extra member only differs in case", line: `{"value":"v","KEY":"k"}`, want: raw(`{"value":"v","KEY":"k"}`)},
		{name: "no value member", line: `{"key":"k"}`, want: raw(`{"key":"k"}`)},
		{name: "value member in other case", line: `{"Value":"v"}`, want: raw(`{"Value":"v"}`)},
		{name: "empty object", line: `{}`, want: raw(`{}`)},
		{name: "key is not a string", line: `{"key":5,"value":"v"}`, want: raw(`{"key":5,"value":"v"}`)},
		{name: "header value is not a string", line: `{"value":"v","headers":{"a":1}}`, want: raw(`{"value":"v","headers":{"a":1}}`)},
		{name: "timestamp not RFC 3339", line: `{"value":"v","timestamp":"yesterday"}`, want: raw(`{"value":"v","timestamp":"yesterday"}`)},
		{name: "epoch timestamp", line: `{"value":"v","timestamp":1714566600000}`, want: raw(`{"value":"v","timestamp":1714566600000}`)},
		{name: "trailing data after object", line: `{"value":"v"} tail`, want: raw(`{"value":"v"} tail`)},
		{name: "truncated JSON", line: `{"value":`, want: raw(`{"value":`)},
		{name: "JSON array", line: `[{"value":"v"}]`, want: raw(`[{"value":"v"}]`)},
		{name: "JSON string", line: `"{\"value\":\"v\"}"`, want: raw(`"{\"value\":\"v\"}"`)},
		{name: "plain text", line: "hello world", want: raw("hello world")},
		{name: "empty line", line: "", want: pipeline.Record{}},
		{name: "blank line", line: " \t ", want: pipeline.Record{}},
		{name: "invalid UTF-8 text", line: "\xff\xfe abc", want: raw("\xff\xfe abc")},
		// Not JSON (RFC 8259 requires UTF-8): kept byte for byte, not
		// decoded with the bad bytes replaced by U+FFFD.
		{name: "invalid UTF-8 in envelope value", line: "{\"value\":\"a\xffb\"}", want: raw("{\"value\":\"a\xffb\"}")},
		{name: "invalid UTF-8 in envelope key", line: "{\"key\":\"\xc3\",\"value\":\"v\"}", want: raw("{\"key\":\"\xc3\",\"value\":\"v\"}")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Parse([]byte(tc.line))
			if d := diffRecord(got, tc.want); d != "" {
				t.Errorf("Parse(%q): %s", tc.line, d)
			}
		})
	}
}

// TestParseValueNullability checks the distinction Kafka makes between a
// null value (a tombstone) and an empty one.
func TestParseValueNullability(t *testing.T) {
	if v := Parse([]byte(`{"value":null}`)).Value; v != nil {
		t.Errorf("null value: got %q, want nil", v)
	}
	if v := Parse([]byte(`{"value":""}`)).Value; v == nil {
		t.Error("empty value: got nil, want an empty non-nil value")
	}
}

func TestParseDoesNotAliasLine(t *testing.T) {
	for _, line := range []string{`plain`, `{"key":"k","value":{"a":1},"headers":{"h":"x"}}`, `{"value":"s"}`} {
		buf := []byte(line)
		rec := Parse(buf)
		want := diffCopy(rec)
		for i := range buf {
			buf[i] = '#'
		}
		if d := diffRecord(rec, want); d != "" {
			t.Errorf("%s: record changed with the line buffer: %s", line, d)
		}
	}
}

// TestParseHeadersDeterministic: header order must not depend on map
// iteration order; it is sorted by key.
func TestParseHeadersDeterministic(t *testing.T) {
	line := []byte(`{"value":"v","headers":{"e":"5","c":"3","a":"1","d":"4","b":"2","f":"6"}}`)
	for range 20 {
		var keys []string
		for _, h := range Parse(line).Headers {
			keys = append(keys, h.Key)
		}
		if !slices.Equal(keys, []string{"a", "b", "c", "d", "e", "f"}) {
			t.Fatalf("header order %v, want sorted by key", keys)
		}
	}
}

// collector is an Emit that records every batch it is handed.
type collector struct {
	mu      sync.Mutex
	batches [][]pipeline.Record
	calls   chan int // receives the size of each batch, if not nil
}

func (c *collector) emit(ctx context.Context, recs []pipeline.Record) error {
	if len(recs) == 0 {
		return errors.New("empty batch emitted")
	}
	c.mu.Lock()
	c.batches = append(c.batches, recs)
	c.mu.Unlock()
	if c.calls != nil {
		select {
		case c.calls <- len(recs):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (c *collector) records() []pipeline.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []pipeline.Record
	for _, b := range c.batches {
		all = append(all, b...)
	}
	return all
}

func TestRunEmitsLinesInBatches(t *testing.T) {
	// 1234 lines, every 7th one empty or blank, a few envelopes.
	var in strings.Builder
	var wantLines []int64
	var wantValues []string
	ts := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	const lines = 1234
	for n := int64(1); n <= lines; n++ {
		switch {
		case n%7 == 0:
			in.WriteString([]string{"", "  ", "\t\r"}[n%3] + "\n")
			continue
		case n%10 == 0:
			fmt.Fprintf(&in, `{"key":"k%d","value":"v%d","timestamp":"2020-01-02T03:04:05Z"}`+"\n", n, n)
		default:
			fmt.Fprintf(&in, "v%d\n", n)
		}
		wantLines = append(wantLines, n)
		wantValues = append(wantValues, fmt.Sprintf("v%d", n))
	}
	in.WriteString("last line without newline")
	wantLines = append(wantLines, lines+1)
	wantValues = append(wantValues, "last line without newline")

	s := NewReader("input.jsonl", strings.NewReader(in.String()))
	var c collector
	before := time.Now()
	if err := s.Run(t.Context(), c.emit); err != nil {
		t.Fatalf("Run: %v", err)
	}

	if len(c.batches) < (len(wantLines)+s.batch-1)/s.batch {
		t.Errorf("%d batches for %d records, batch size %d", len(c.batches), len(wantLines), s.batch)
	}
	for i, b := range c.batches {
		if len(b) > s.batch {
			t.Errorf("batch %d has %d records, more than %d", i, len(b), s.batch)
		}
	}
	recs := c.records()
	if len(recs) != len(wantLines) {
		t.Fatalf("emitted %d records, want %d", len(recs), len(wantLines))
	}
	for i, r := range recs {
		if r.Origin != (pipeline.Origin{Topic: "input.jsonl", Partition: 0, Offset: wantLines[i]}) {
			t.Fatalf("record %d: origin %+v, want input.jsonl/0@%d", i, r.Origin, wantLines[i])
		}
		if string(r.Value) != wantValues[i] {
			t.Fatalf("record %d: value %q, want %q", i, r.Value, wantValues[i])
		}
		if n := r.Origin.Offset; n%10 == 0 && n <= lines {
			if string(r.Key) != fmt.Sprintf("k%d", n) || !r.Timestamp.Equal(ts) {
				t.Errorf("line %d: key %q timestamp %v, want the envelope's", n, r.Key, r.Timestamp)
			}
		} else if r.Timestamp.Before(before) || r.Timestamp.After(time.Now()) {
			t.Errorf("line %d: timestamp %v, want the time it was read", n, r.Timestamp)
		}
	}

	// Nothing is done until the records are acknowledged.
	if off, _ := s.tracker.Committable(); off != 1 {
		t.Errorf("committable before acks: %d, want 1", off)
	}
	if p := s.tracker.Pending(); p != len(recs) {
		t.Errorf("pending before acks: %d, want %d", p, len(recs))
	}
	// Acknowledge out of order, the way concurrent sink requests would.
	for i := len(c.batches) - 1; i >= 0; i-- {
		pipeline.AckAll(c.batches[i])
	}
	if p := s.tracker.Pending(); p != 0 {
		t.Errorf("pending after acks: %d, want 0", p)
	}
	if off, ok := s.tracker.Committable(); off != lines+2 || !ok {
		t.Errorf("committable after acks: %d %v, want %d true", off, ok, lines+2)
	}
	select {
	case <-s.tracker.Idle():
	default:
		t.Error("tracker not idle after every record was acknowledged")
	}
}

func TestRunEmptyInput(t *testing.T) {
	for _, in := range []string{"", "\n\n  \n"} {
		var c collector
		if err := NewReader("empty", strings.NewReader(in)).Run(t.Context(), c.emit); err != nil {
			t.Errorf("Run(%q): %v", in, err)
		}
		if len(c.batches) != 0 {
			t.Errorf("Run(%q) emitted %d batches", in, len(c.batches))
		}
	}
}

// endless is a reader producing the same line forever, never blocking.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = "abc\n"[i%4]
	}
	return len(p), nil
}

// TestRunStopsOnCancel: an emit that returns ctx's error stops Run, which
// reports the cancellation as a normal end.
func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	emit := func(ctx context.Context, recs []pipeline.Record) error {
		calls++
		if calls == 2 {
			cancel()
		}
		return ctx.Err()
	}
	err := runWithin(t, 10*time.Second, func() error { return NewReader("endless", endless{}).Run(ctx, emit) })
	if err != nil {
		t.Errorf("Run after cancel: %v, want nil", err)
	}
	if calls != 2 {
		t.Errorf("emit called %d times, want 2: no emit after ctx ended", calls)
	}
}

// TestRunStopsOnCancelWhileEmitAccepts: the sink does not look at ctx
// (Writer.Write only does when it has to block), so Run must check it
// itself rather than read an endless input to its end.
func TestRunStopsOnCancelWhileEmitAccepts(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var once sync.Once
	emit := func(context.Context, []pipeline.Record) error {
		once.Do(cancel)
		return nil
	}
	err := runWithin(t, 10*time.Second, func() error { return NewReader("endless", endless{}).Run(ctx, emit) })
	if err != nil {
		t.Errorf("Run after cancel: %v, want nil", err)
	}
}

// TestRunStopsOnCancelWhileReadBlocks: stdin with no input blocks in Read;
// a shutdown must not wait for the next line.
func TestRunStopsOnCancelWhileReadBlocks(t *testing.T) {
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() }) // lets a reader left in Read go
	ctx, cancel := context.WithCancel(t.Context())
	c := collector{calls: make(chan int, 1)}
	done := make(chan error, 1)
	go func() { done <- NewReader("stdin", pr).Run(ctx, c.emit) }()

	if _, err := io.WriteString(pw, "one\n"); err != nil {
		t.Fatal(err)
	}
	// Read blocks now, with "one" read.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx was cancelled while Read blocked")
	}
}

// TestRunEmitsWhileInputStaysOpen: lines arriving slowly (stdin from a
// producer that pauses) are emitted when no more input is ready, not held
// until a batch fills up or the input ends.
func TestRunEmitsWhileInputStaysOpen(t *testing.T) {
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c := collector{calls: make(chan int)}
	done := make(chan error, 1)
	go func() { done <- NewReader("stdin", pr).Run(ctx, c.emit) }()

	got := 0
	for round := range 3 {
		go fmt.Fprintf(pw, "a%d\nb%d\nc%d\n", round, round, round)
		for got < 3*(round+1) {
			select {
			case n := <-c.calls:
				got += n
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: %d of %d records emitted while the input stays open", round, got, 3*(round+1))
			}
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	var values []string
	for _, r := range c.records() {
		values = append(values, string(r.Value))
	}
	want := []string{"a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"}
	if !slices.Equal(values, want) {
		t.Errorf("values %q, want %q", values, want)
	}
}

func TestRunLineTooLong(t *testing.T) {
	long := strings.Repeat("x", MaxLineBytes+1)
	in := "first\n\n" + long + "\nafter\n"
	var c collector
	err := NewReader("big.jsonl", strings.NewReader(in)).Run(t.Context(), c.emit)
	if !errors.Is(err, bufio.ErrTooLong) {
		t.Fatalf("Run: %v, want bufio.ErrTooLong", err)
	}
	if !strings.Contains(err.Error(), "big.jsonl line 3") {
		t.Errorf("error %q does not name big.jsonl line 3", err)
	}
	var values []string
	for _, r := range c.records() {
		values = append(values, string(r.Value))
	}
	if !slices.Equal(values, []string{"first"}) {
		t.Errorf("emitted %q, want the line before the one too long only", values)
	}
}

// TestRunLineAtLimit: MaxLineBytes bounds a line, so a line of exactly
// that many bytes is read, whatever its line ending.
func TestRunLineAtLimit(t *testing.T) {
	line := strings.Repeat("y", MaxLineBytes)
	for _, eol := range []string{"\n", "\r\n", ""} { // "": the last line
		var c collector
		err := NewReader("limit", strings.NewReader("a\n"+line+eol)).Run(t.Context(), c.emit)
		if err != nil {
			t.Errorf("line ending %q: Run: %v", eol, err)
			continue
		}
		recs := c.records()
		if len(recs) < 2 || len(recs[1].Value) != MaxLineBytes {
			t.Errorf("line ending %q: line of MaxLineBytes not emitted whole", eol)
		}
	}
}

// TestRunEmitError: a failing emit ends Run with its error.
func TestRunEmitError(t *testing.T) {
	boom := errors.New("boom")
	emit := func(context.Context, []pipeline.Record) error { return boom }
	err := runWithin(t, 10*time.Second, func() error { return NewReader("endless", endless{}).Run(t.Context(), emit) })
	if !errors.Is(err, boom) {
		t.Errorf("Run: %v, want %v", err, boom)
	}
}

// errReader returns some lines and then an error.
type errReader struct {
	data string
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestRunReadError(t *testing.T) {
	broken := errors.New("disk on fire")
	var c collector
	err := NewReader("f", &errReader{data: "a\nb\n", err: broken}).Run(t.Context(), c.emit)
	if !errors.Is(err, broken) || !strings.Contains(err.Error(), "f line 3") {
		t.Errorf("Run: %v, want %v naming f line 3", err, broken)
	}
}

func TestOpen(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Error("Open(\"\"): no error")
	}
	if _, err := Open(t.TempDir() + "/missing.jsonl"); err == nil {
		t.Error("Open of a missing file: no error")
	}
	if s, err := Open("-"); err != nil || s.name != "stdin" {
		t.Errorf("Open(\"-\"): %v, name %q", err, s.name)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"key":"k1","value":"hello","headers":{"b":"2","a":"1"},"timestamp":"2024-05-01T12:30:00Z"}`,
		`{"value":{"a": [1, 2]}}`, `{"value":null}`, `{"value":""}`, `{"value":"v","extra":1}`,
		`{"key":5,"value":"v"}`, `{"value":"\ud800"}`, "{\"value\":\"a\xffb\"}", "plain text", "", "  ",
		`{"value":"v","timestamp":"2024-05-01T14:30:00.5+02:00"}`, `{"value":1e999}`, `{"Value":1,"value":2}`,
		`{"value":1,"value":"x"}`, `{"headers":{"a":"1","a":"2"},"value":0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		in := bytes.Clone(line)
		rec := Parse(line)
		if !bytes.Equal(line, in) {
			t.Fatal("Parse modified its input")
		}
		trimmed := bytes.TrimSpace(line)
		plain := pipeline.Record{Value: trimmed}
		if diffRecord(rec, plain) == "" {
			// A non-envelope line round-trips as the value.
			return
		}

		// Otherwise the line was an envelope: a UTF-8 JSON object with a
		// value member and no members but key, value, headers, timestamp.
		if !utf8.Valid(trimmed) || !json.Valid(trimmed) {
			t.Fatalf("%q is no valid UTF-8 JSON but parsed as an envelope", trimmed)
		}
		var members map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &members); err != nil {
			t.Fatalf("%q is not an object but parsed as an envelope: %v", trimmed, err)
		}
		if _, ok := members["value"]; !ok {
			t.Fatalf("%q has no value member but parsed as an envelope", trimmed)
		}
		for k := range members {
			if !slices.Contains([]string{"key", "value", "headers", "timestamp"}, k) {
				t.Fatalf("%q has member %q but parsed as an envelope", trimmed, k)
			}
		}

		// An envelope written back from the record parses to the record.
		again := Parse(encodeEnvelope(t, rec))
		if d := diffRecord(again, rec); d != "" {
			t.Fatalf("%q: re-encoded envelope parses differently: %s", trimmed, d)
		}
	})
}

// FuzzParseWrapped: any UTF-8 text wrapped as an envelope's string value
// comes back as the value.
func FuzzParseWrapped(f *testing.F) {
	for _, s := range []string{"", "plain", `{"value":"x"}`, "\u2028<&>", "\x00\x1f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if !utf8.ValidString(v) {
			return
		}
		line, err := json.Marshal(map[string]string{"value": v})
		if err != nil {
			t.Fatal(err)
		}
		if got := Parse(line).Value; string(got) != v || got == nil {
			t.Fatalf("value %q came back as %q", v, got)
		}
	})
}

func encodeEnvelope(t *testing.T, r pipeline.Record) []byte {
	t.Helper()
	env := map[string]any{"value": nil}
	if r.Value != nil {
		env["value"] = string(r.Value)
	}
	if r.Key != nil {
		env["key"] = string(r.Key)
	}
	if len(r.Headers) > 0 {
		hs := map[string]string{}
		for _, h := range r.Headers {
			hs[h.Key] = string(h.Value)
		}
		env["headers"] = hs
	}
	if !r.Timestamp.IsZero() {
		env["timestamp"] = r.Timestamp
	}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatalf("encode %+v: %v", r, err)
	}
	return b
}

// diffRecord compares the parts Parse fills, telling nil from empty for
// key and value; it returns "" when they match.
func diffRecord(got, want pipeline.Record) string {
	var d []string
	if !bytes.Equal(got.Key, want.Key) || (got.Key == nil) != (want.Key == nil) {
		d = append(d, fmt.Sprintf("key %s, want %s", show(got.Key), show(want.Key)))
	}
	if !bytes.Equal(got.Value, want.Value) || (got.Value == nil) != (want.Value == nil) {
		d = append(d, fmt.Sprintf("value %s, want %s", show(got.Value), show(want.Value)))
	}
	if !slices.EqualFunc(got.Headers, want.Headers, func(a, b pipeline.Header) bool {
		return a.Key == b.Key && bytes.Equal(a.Value, b.Value)
	}) {
		d = append(d, fmt.Sprintf("headers %q, want %q", got.Headers, want.Headers))
	}
	if !got.Timestamp.Equal(want.Timestamp) {
		d = append(d, fmt.Sprintf("timestamp %v, want %v", got.Timestamp, want.Timestamp))
	}
	return strings.Join(d, "; ")
}

func show(b []byte) string {
	if b == nil {
		return "nil"
	}
	return fmt.Sprintf("%q", b)
}

func diffCopy(r pipeline.Record) pipeline.Record {
	c := pipeline.Record{Key: bytes.Clone(r.Key), Value: bytes.Clone(r.Value), Timestamp: r.Timestamp}
	for _, h := range r.Headers {
		c.Headers = append(c.Headers, pipeline.Header{Key: h.Key, Value: bytes.Clone(h.Value)})
	}
	return c
}

// runWithin runs fn and fails the test if it does not return within d.
func runWithin(t *testing.T, d time.Duration, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("did not return within %v", d)
		return nil
	}
}
