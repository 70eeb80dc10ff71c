package file_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	sinkfile "github.com/spillway-io/spillway/sinks/file"
	"github.com/spillway-io/spillway/sinks/sinktest"
	"go.yaml.in/yaml/v3"
)

// values returns the "value" member of each JSON line: JSON strings
// decoded, null as nil, anything else as its JSON text.
func values(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var line struct{ Value json.RawMessage }
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %q: %v", sc.Bytes(), err)
		}
		switch v := line.Value; {
		case string(v) == "null":
			out = append(out, nil)
		case v[0] == '"':
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				t.Fatal(err)
			}
			out = append(out, []byte(s))
		default:
			out = append(out, v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// The file sink appends in the order written and a new sink on the same
// path appends after what is there; it cannot fail part of a batch, and a
// batch written twice is in the file twice.
var features = sinktest.Features{Ordering: sinktest.OrderTotal, Restartable: true}

func TestConformance(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		sinktest.Run(t, features, func(t *testing.T) sinktest.Target {
			path := filepath.Join(t.TempDir(), "out.jsonl")
			s, err := sinkfile.New(sinkfile.Config{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return sinktest.Target{Sink: s, Received: func() [][]byte {
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				return values(t, data)
			}, Reopen: func() (sinks.Sink, error) { return sinkfile.New(sinkfile.Config{Path: path}) }}
		})
	})
	t.Run("writer", func(t *testing.T) {
		sinktest.Run(t, features, func(t *testing.T) sinktest.Target {
			var buf syncBuffer
			return sinktest.Target{Sink: sinkfile.NewWriter(&buf), Received: func() [][]byte { return values(t, buf.Bytes()) },
				Reopen: func() (sinks.Sink, error) { return sinkfile.NewWriter(&buf), nil }}
		})
	})
}

func TestLineFormat(t *testing.T) {
	ts := time.Date(2024, 1, 2, 3, 4, 5, 123000000, time.FixedZone("CET", 3600))
	tests := []struct {
		name string
		rec  pipeline.Record
		want string
	}{
		{"all fields", pipeline.Record{
			Key: []byte("k1"), Value: []byte(`{"id":1}`), Timestamp: ts,
			Headers: []pipeline.Header{{Key: "h", Value: []byte("v")}, {Key: "traceparent", Value: []byte("00-x")}},
			Origin:  pipeline.Origin{Topic: "orders", Partition: 3, Offset: 1200},
		}, `{"topic":"orders","partition":3,"offset":1200,"key":"k1","value":{"id":1},"headers":{"h":"v","traceparent":"00-x"},"timestamp":"2024-01-02T02:04:05.123Z"}`},
		{"nil key and value, no headers, no time", pipeline.Record{},
			`{"topic":"","partition":0,"offset":0,"key":null,"value":null,"headers":{},"timestamp":null}`},
		{"empty key and value", pipeline.Record{Key: []byte{}, Value: []byte{}},
			`{"topic":"","partition":0,"offset":0,"key":"","value":null,"headers":{},"timestamp":null}`},
		{"text value", pipeline.Record{Value: []byte(`say "hi"` + "\n")},
			`{"topic":"","partition":0,"offset":0,"key":null,"value":"say \"hi\"\n","headers":{},"timestamp":null}`},
		{"scalar JSON values stay raw", pipeline.Record{Value: []byte(`42`)},
			`{"topic":"","partition":0,"offset":0,"key":null,"value":42,"headers":{},"timestamp":null}`},
		{"multi-line JSON compacted", pipeline.Record{Value: []byte("{\n  \"a\": [1, 2]\n}\n")},
			`{"topic":"","partition":0,"offset":0,"key":null,"value":{"a":[1,2]},"headers":{},"timestamp":null}`},
		{"invalid UTF-8", pipeline.Record{Key: []byte("k\xff"), Value: []byte("v\xfe\x00"),
			Headers: []pipeline.Header{{Key: "h\xc3", Value: []byte{0x80}}},
			Origin:  pipeline.Origin{Topic: "/data/in\u2028.jsonl", Partition: -1, Offset: -5}},
			`{"topic":"/data/in\u2028.jsonl","partition":-1,"offset":-5,"key":"k\ufffd","value":"v\ufffd\u0000","headers":{"h\ufffd":"\ufffd"},"timestamp":null}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := sinkfile.NewWriter(&buf).WriteBatch(t.Context(), []pipeline.Record{tc.rec}); err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != tc.want+"\n" {
				t.Fatalf("line\n got %s\nwant %s", got, tc.want)
			}
			if !json.Valid(buf.Bytes()) {
				t.Fatal("line is not valid JSON")
			}
		})
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	if _, err := sinkfile.New(sinkfile.Config{}); err == nil || !strings.HasPrefix(err.Error(), "path: ") {
		t.Errorf("New(\"\") = %v, want a path error", err)
	}
	if _, err := sinkfile.New(sinkfile.Config{Path: dir}); err == nil {
		t.Error("New(directory) succeeded")
	}
	if _, err := sinkfile.New(sinkfile.Config{Path: filepath.Join(dir, "missing", "out.jsonl")}); err == nil {
		t.Error("New in a missing directory succeeded")
	}

	// Appends to what is there.
	path := filepath.Join(dir, "out.jsonl")
	if err := os.WriteFile(path, []byte("{\"old\":true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := sinkfile.New(sinkfile.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBatch(t.Context(), []pipeline.Record{{Value: []byte("1")}, {Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	data, _ := os.ReadFile(path)
	if lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"); len(lines) != 3 || lines[0] != `{"old":true}` {
		t.Fatalf("file holds %q", data)
	}
}

func TestClosed(t *testing.T) {
	var buf bytes.Buffer
	s := sinkfile.NewWriter(&buf)
	s.Close()
	err := s.WriteBatch(t.Context(), []pipeline.Record{{Value: []byte("1")}})
	if !errors.Is(err, sinkfile.ErrClosed) || buf.Len() != 0 {
		t.Fatalf("WriteBatch after Close = %v (wrote %d bytes), want ErrClosed", err, buf.Len())
	}
}

// blockingWriter blocks in Write until released.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
	buf     syncBuffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.entered <- struct{}{}
	<-w.release
	return w.buf.Write(p)
}

// TestContextWhileWaiting checks that a batch waiting for another batch's
// write gives up when its context ends, and writes nothing.
func TestContextWhileWaiting(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	s := sinkfile.NewWriter(w)
	done := make(chan error, 1)
	go func() { done <- s.WriteBatch(context.Background(), []pipeline.Record{{Value: []byte("1")}}) }()
	<-w.entered

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.WriteBatch(ctx, []pipeline.Record{{Value: []byte("2")}})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("WriteBatch = %v after %v, want a prompt deadline error", err, time.Since(start))
	}
	close(w.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := values(t, w.buf.Bytes()); len(got) != 1 || string(got[0]) != "1" {
		t.Fatalf("written %q, want only the first batch", got)
	}
}

// failingWriter accepts n bytes, then fails once.
type failingWriter struct {
	bytes.Buffer
	n int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n >= 0 && len(p) > w.n {
		n, _ := w.Buffer.Write(p[:w.n])
		w.n = -1
		return n, errors.New("disk full")
	}
	return w.Buffer.Write(p)
}

func TestWriteFailure(t *testing.T) {
	w := &failingWriter{n: 10}
	s := sinkfile.NewWriter(w)
	batch := []pipeline.Record{{Value: []byte(`{"a":1}`)}, {Value: []byte(`{"a":2}`)}}
	err := s.WriteBatch(t.Context(), batch)
	if err == nil || sinks.Classify(err) != sinks.Retryable {
		t.Fatalf("WriteBatch on a failing writer = %v, want a retryable error", err)
	}
	// The retry starts on a new line; the torn line stays on its own.
	if err := s.WriteBatch(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(w.String(), "\n"), "\n")
	if len(lines) != 3 || json.Valid([]byte(lines[0])) || !json.Valid([]byte(lines[1])) || !json.Valid([]byte(lines[2])) {
		t.Fatalf("file after a torn write:\n%s", w.String())
	}
	// Later batches do not add empty lines.
	if err := s.WriteBatch(t.Context(), batch[:1]); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(w.String(), "\n\n") {
		t.Fatalf("empty line after recovery:\n%s", w.String())
	}
}

func TestOneWritePerBatch(t *testing.T) {
	var calls int
	w := writerFunc(func(p []byte) (int, error) { calls++; return len(p), nil })
	batch := make([]pipeline.Record, 1000)
	for i := range batch {
		batch[i].Value = []byte(`"v"`)
	}
	if err := sinkfile.NewWriter(w).WriteBatch(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Fatalf("%d Write calls for one batch, want 1", calls)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func BenchmarkWriteBatch(b *testing.B) {
	batch := make([]pipeline.Record, 500)
	for i := range batch {
		batch[i] = pipeline.Record{
			Key:       []byte("key-0001"),
			Value:     []byte(`{"id":12345,"name":"customer-17","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`),
			Timestamp: time.Unix(1700000000, 0),
			Origin:    pipeline.Origin{Topic: "bench", Partition: 1, Offset: int64(i)},
		}
	}
	s := sinkfile.NewWriter(io.Discard)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		if err := s.WriteBatch(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*len(batch))/b.Elapsed().Seconds(), "records/s")
}

func TestConfig(t *testing.T) {
	var fe *field.Error
	if err := (sinkfile.Config{}).Validate(); !errors.As(err, &fe) || fe.Path != "path" || fe.Msg != "required" {
		t.Errorf("Validate of an empty config = %v, want a *field.Error path: required", err)
	}
	if err := (sinkfile.Config{Path: "/nonexistent/dir/out.jsonl"}).Validate(); err != nil {
		t.Errorf("Validate does I/O or checks too much: %v", err)
	}
	var c sinkfile.Config
	dec := yaml.NewDecoder(strings.NewReader("path: /tmp/out.jsonl\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil || c.Path != "/tmp/out.jsonl" {
		t.Errorf("decoded %+v, %v", c, err)
	}
	c.ApplyDefaults()
	if c.Path != "/tmp/out.jsonl" {
		t.Errorf("ApplyDefaults changed the path to %q", c.Path)
	}
}
