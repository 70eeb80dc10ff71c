package file_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

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

// newWriter returns a sink writing to w with the default encoding.
func newWriter(tb testing.TB, w io.Writer) *sinkfile.Sink {
	tb.Helper()
	s, err := sinkfile.NewWriter(w, sinkfile.Encoding{})
	if err != nil {
		tb.Fatal(err)
	}
	return s
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
			return sinktest.Target{Sink: newWriter(t, &buf), Received: func() [][]byte { return values(t, buf.Bytes()) },
				Reopen: func() (sinks.Sink, error) { return sinkfile.NewWriter(&buf, sinkfile.Encoding{}) }}
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
			`{"topic":"","partition":0,"offset":0,"key":"","value":"","headers":{},"timestamp":null}`},
		{"text value", pipeline.Record{Value: []byte(`say "hi"` + "\n")},
			`{"topic":"","partition":0,"offset":0,"key":null,"value":"say \"hi\"\n","headers":{},"timestamp":null}`},
		{"scalar JSON values stay raw", pipeline.Record{Value: []byte(`42`)},
			`{"topic":"","partition":0,"offset":0,"key":null,"value":42,"headers":{},"timestamp":null}`},
		{"multi-line JSON compacted", pipeline.Record{Value: []byte("{\n  \"a\": [1, 2]\n}\n")},
			`{"topic":"","partition":0,"offset":0,"key":null,"value":{"a":[1,2]},"headers":{},"timestamp":null}`},
		{"invalid UTF-8 outside the value: base64", pipeline.Record{Key: []byte("k\xff"), Value: []byte("v\x00"),
			Headers: []pipeline.Header{{Key: "h", Value: []byte{0x80}}, {Key: "t", Value: []byte("\u2028")}},
			Origin:  pipeline.Origin{Topic: "/data/in\u2028\xfe.jsonl", Partition: -1, Offset: -5}},
			`{"topic":{"$base64":"L2RhdGEvaW7igKj+Lmpzb25s"},"partition":-1,"offset":-5,"key":{"$base64":"a/8="},"value":"v\u0000","headers":{"h":{"$base64":"gA=="},"t":"\u2028"},"timestamp":null}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := newWriter(t, &buf).WriteBatch(t.Context(), []pipeline.Record{tc.rec}); err != nil {
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
	s := newWriter(t, &buf)
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
	s := newWriter(t, w)
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
	s := newWriter(t, w)
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
	if err := newWriter(t, w).WriteBatch(t.Context(), batch); err != nil {
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
	s := newWriter(b, io.Discard)
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

// tomb stands for a tombstone (nil value) in the encoding tables.
const tomb = "\x00tombstone"

// TestValueEncoding writes one batch per case, to a file (New) and to a
// writer (NewWriter, as stdout), and checks each line's value byte for
// byte, which records failed (alone, fatal, with the reason naming the
// sink's section) and that no byte was replaced.
func TestValueEncoding(t *testing.T) {
	const (
		binary = "\xff\xfe\x00\x01\xc3"
		rawFF  = "{\"name\":\"caf\xff\"}"
		obj    = `{"a":[1,2]}`
		text   = "say \"hi\""
	)
	b64 := func(s string) string { return `"` + base64.StdEncoding.EncodeToString([]byte(s)) + `"` }
	all := []string{binary, rawFF, "", tomb, obj, text}
	tests := []struct {
		name    string
		enc     sinkfile.Encoding
		values  []string
		want    []string       // the value member of each line written
		failed  map[int]string // batch index → a part of its error; SECTION stands for the sink's section
		dropped int64
	}{
		{"auto", sinkfile.Encoding{}, all,
			[]string{`""`, `null`, obj, `"say \"hi\""`}, map[int]string{
				0: "value is not valid UTF-8: byte 0xff at offset 0; set SECTION.value_encoding: base64, or SECTION.binary_values: base64, to write it base64-encoded",
				1: "JSON value is not valid UTF-8: byte 0xff at offset 12",
			}, 0},
		{"auto, binary_values base64", sinkfile.Encoding{BinaryValues: "base64"}, all,
			[]string{`{"$base64":` + b64(binary) + `}`, `{"$base64":` + b64(rawFF) + `}`, `""`, `null`, obj, `"say \"hi\""`}, nil, 0},
		{"json", sinkfile.Encoding{ValueEncoding: "json"}, all,
			[]string{`null`, obj}, map[int]string{
				0: "value is not valid UTF-8: byte 0xff at offset 0; value_encoding json writes only JSON, set SECTION.value_encoding: base64 to write any bytes",
				1: "value is not valid UTF-8: byte 0xff at offset 12",
				2: "value is not valid JSON: the value is empty",
				5: "value is not valid JSON: invalid character 's' looking for beginning of value (offset 1); value_encoding json writes only JSON, set SECTION.value_encoding: auto to write text as strings",
			}, 0},
		{"string", sinkfile.Encoding{ValueEncoding: "string"}, all,
			[]string{`""`, `null`, `"{\"a\":[1,2]}"`, `"say \"hi\""`}, map[int]string{
				0: "value is not valid UTF-8: byte 0xff at offset 0; value_encoding string writes only text, set SECTION.value_encoding: base64 to write any bytes",
				1: "byte 0xff at offset 12",
			}, 0},
		{"base64", sinkfile.Encoding{ValueEncoding: "base64"}, all,
			[]string{b64(binary), b64(rawFF), `""`, `null`, b64(obj), b64(text)}, nil, 0},
		{"tombstones dropped", sinkfile.Encoding{Tombstones: "drop"}, []string{tomb, obj, tomb, "", binary, tomb},
			[]string{obj, `""`}, map[int]string{4: "not valid UTF-8"}, 3},
		{"every record left out", sinkfile.Encoding{Tombstones: "drop"}, []string{binary, tomb},
			nil, map[int]string{0: "not valid UTF-8"}, 1},
	}
	for _, tc := range tests {
		for _, kind := range []string{"file", "stdout"} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				var (
					s       *sinkfile.Sink
					written func() []byte
					err     error
				)
				if kind == "file" {
					path := filepath.Join(t.TempDir(), "out.jsonl")
					s, err = sinkfile.New(sinkfile.Config{Path: path, Encoding: tc.enc})
					written = func() []byte { data, _ := os.ReadFile(path); return data }
				} else {
					var buf syncBuffer
					s, err = sinkfile.NewWriter(&buf, tc.enc)
					written = buf.Bytes
				}
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				batch := make([]pipeline.Record, len(tc.values))
				for i, v := range tc.values {
					batch[i] = pipeline.Record{Value: []byte(v), Origin: pipeline.Origin{Topic: "t", Offset: int64(i)}}
					if v == tomb {
						batch[i].Value = nil
					}
				}
				got := failures(t, s.WriteBatch(t.Context(), batch))
				for i, want := range tc.failed {
					want = strings.ReplaceAll(want, "SECTION", "sink."+kind)
					ferr, ok := got[i]
					switch {
					case !ok:
						t.Errorf("entry %d (%q) did not fail, want %q", i, tc.values[i], want)
					case sinks.Classify(ferr) != sinks.Fatal:
						t.Errorf("entry %d: class %v, want fatal", i, sinks.Classify(ferr))
					case !strings.Contains(ferr.Error(), want):
						t.Errorf("entry %d: error %q, want it to contain %q", i, ferr, want)
					case strings.Contains(ferr.Error(), "\ufffd"):
						t.Errorf("entry %d: error %q shows a replacement character", i, ferr)
					}
					var de *sinks.DetailedError
					if ok && (!errors.As(ferr, &de) || de.Details["file.error"] != "value_encoding") {
						t.Errorf("entry %d: no dead-letter detail file.error=value_encoding: %v", i, ferr)
					}
				}
				if len(got) != len(tc.failed) {
					t.Errorf("failed entries %v, want those of %v", got, tc.failed)
				}
				if n := s.DroppedTombstones(); n != tc.dropped {
					t.Errorf("DroppedTombstones = %d, want %d", n, tc.dropped)
				}
				data := written()
				if bytes.Contains(data, []byte("\ufffd")) || bytes.Contains(data, []byte(`\ufffd`)) || !utf8.Valid(data) {
					t.Errorf("output holds replaced bytes or invalid UTF-8: %q", data)
				}
				var lines []string
				for _, l := range strings.SplitAfter(string(data), "\n") {
					if l == "" {
						continue
					}
					var rec struct{ Value json.RawMessage }
					if err := json.Unmarshal([]byte(l), &rec); err != nil || !strings.HasSuffix(l, "}\n") {
						t.Fatalf("line %q: %v", l, err)
					}
					lines = append(lines, string(rec.Value))
				}
				if !slices.Equal(lines, tc.want) {
					t.Errorf("values written\n got %q\nwant %q", lines, tc.want)
				}
			})
		}
	}
}

// failures maps each failed entry of err to its error; nil for nil.
func failures(t *testing.T, err error) map[int]error {
	t.Helper()
	if err == nil {
		return nil
	}
	var be *sinks.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("%v (%T) is not a *sinks.BatchError", err, err)
	}
	out := map[int]error{}
	for _, f := range be.Failed {
		if _, dup := out[f.Index]; dup {
			t.Fatalf("entry %d listed twice", f.Index)
		}
		out[f.Index] = f.Err
	}
	return out
}

// TestValueEncodingWriteFailure: when the write of a batch that left
// records out fails, the records it carried fail together, retryable, and
// the left-out ones keep their own outcome.
func TestValueEncodingWriteFailure(t *testing.T) {
	w := &failingWriter{n: 10}
	s, err := sinkfile.NewWriter(w, sinkfile.Encoding{Tombstones: "drop"})
	if err != nil {
		t.Fatal(err)
	}
	batch := []pipeline.Record{{Value: []byte("a")}, {Value: []byte("\xff")}, {Value: nil}, {Value: []byte("b")}}
	got := failures(t, s.WriteBatch(t.Context(), batch))
	if len(got) != 3 || sinks.Classify(got[1]) != sinks.Fatal || sinks.Classify(got[0]) != sinks.Retryable ||
		got[0] != got[3] || !strings.Contains(got[0].Error(), "writing 2 records: disk full") {
		t.Fatalf("failed %v, want 0 and 3 retryable with the write's error, 1 fatal, the tombstone delivered", got)
	}
	var re *sinks.RequestError
	if !errors.As(got[0], &re) {
		t.Fatalf("entry 0: %v is not marked as the request's", got[0])
	}

	// A write failure with nothing left out is the write's error, as is.
	w = &failingWriter{n: 1}
	s = newWriter(t, w)
	err = s.WriteBatch(t.Context(), batch[:1])
	var be *sinks.BatchError
	if err == nil || errors.As(err, &be) || sinks.Classify(err) != sinks.Retryable {
		t.Fatalf("WriteBatch = %v (%T), want the write's error", err, err)
	}
}

// TestHeaderNameNotUTF8: a header name cannot be written without its
// bytes changed, so its record fails alone.
func TestHeaderNameNotUTF8(t *testing.T) {
	var buf bytes.Buffer
	s := newWriter(t, &buf)
	batch := []pipeline.Record{{Value: []byte("a"), Headers: []pipeline.Header{{Key: "h\xc3", Value: []byte("v")}}}, {Value: []byte("b")}}
	got := failures(t, s.WriteBatch(t.Context(), batch))
	if len(got) != 1 || sinks.Classify(got[0]) != sinks.Fatal || !strings.Contains(got[0].Error(), `header name "h\xc3" is not valid UTF-8: byte 0xc3 at offset 1`) {
		t.Fatalf("failed %v", got)
	}
	if vs := values(t, buf.Bytes()); len(vs) != 1 || string(vs[0]) != "b" {
		t.Fatalf("written %q", vs)
	}
}

func TestEncodingConfig(t *testing.T) {
	var c sinkfile.Config
	dec := yaml.NewDecoder(strings.NewReader("path: /tmp/out.jsonl\nvalue_encoding: base64\ntombstones: drop\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil || c.Path != "/tmp/out.jsonl" || c.ValueEncoding != "base64" || c.Tombstones != "drop" {
		t.Fatalf("decoded %+v, %v", c, err)
	}
	c.ApplyDefaults()
	if c.BinaryValues != "dead_letter" || c.ValueEncoding != "base64" {
		t.Fatalf("defaulted %+v", c)
	}
	var e sinkfile.Encoding
	e.ApplyDefaults()
	if e != (sinkfile.Encoding{ValueEncoding: "auto", BinaryValues: "dead_letter", Tombstones: "send"}) {
		t.Fatalf("defaults %+v", e)
	}
	bad := sinkfile.Encoding{ValueEncoding: "utf8", BinaryValues: "skip", Tombstones: "null"}
	for name, err := range map[string]error{
		"Config.Validate":   sinkfile.Config{Path: "x", Encoding: bad}.Validate(),
		"Encoding.Validate": bad.Validate(),
	} {
		var paths []string
		for _, e := range field.Split(err) {
			var fe *field.Error
			if !errors.As(e, &fe) {
				t.Fatalf("%s: %v is not a *field.Error", name, e)
			}
			paths = append(paths, fe.Path)
		}
		if !slices.Equal(paths, []string{"value_encoding", "binary_values", "tombstones"}) {
			t.Errorf("%s: errors at %v", name, paths)
		}
	}
	if err := (sinkfile.Encoding{ValueEncoding: "json", BinaryValues: "base64"}).Validate(); err == nil {
		t.Error("binary_values base64 with value_encoding json accepted")
	}
	if _, err := sinkfile.New(sinkfile.Config{Path: filepath.Join(t.TempDir(), "x"), Encoding: bad}); err == nil {
		t.Error("New accepted an invalid encoding")
	}
	if _, err := sinkfile.NewWriter(io.Discard, bad); err == nil {
		t.Error("NewWriter accepted an invalid encoding")
	}
}
