// Package file is a sink that appends records as JSON lines to a file or
// any io.Writer (stdout).
//
// Each record becomes one line:
//
//	{"topic":"orders","partition":3,"offset":1200,"key":"k1","value":{"id":1},"headers":{"h":"v"},"timestamp":"2024-01-02T03:04:05.123Z"}
//
// The value is embedded as is when it is valid JSON (compacted when it spans
// lines), as a JSON string otherwise, and null when nil or empty. Key and
// header values are JSON strings (null for a nil key); invalid UTF-8 is
// replaced by U+FFFD. Headers keep their order; a repeated header name
// repeats in the object, and JSON decoders keep the last, as
// pipeline.Record.Header does. The timestamp is RFC 3339 in UTC, null when
// unset.
//
// A batch is written with one Write call, so concurrent batches never
// interleave. WriteBatch returning nil means the operating system accepted
// the bytes; the file is not synced.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks/internal/jsonenc"
)

// ErrClosed is returned by WriteBatch after Close.
var ErrClosed = errors.New("file sink: closed")

// maxPooled bounds the buffers kept for reuse.
const maxPooled = 16 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Sink writes batches as JSON lines. It is safe for concurrent use; the zero
// value is not usable, call New or NewWriter.
type Sink struct {
	w      io.Writer
	closer io.Closer // nil for NewWriter

	lock   chan struct{} // a mutex that can be given up on when ctx ends
	closed bool          // guarded by lock
	torn   bool          // guarded by lock: the last write stopped mid-line
}

// Config configures a file sink; its yaml keys are those of a pipeline
// file's sink.file section. It is plain data.
type Config struct {
	Path string `yaml:"path"` // required: the file to append to, created (mode 0644) if needed
}

// ApplyDefaults does nothing: no setting of Config has a default. It is
// here so that every component Config has the same methods.
func (c *Config) ApplyDefaults() {}

// Validate reports every invalid setting as a *field.Error with a path
// relative to the sink.file section, joined with errors.Join. It does no
// I/O: whether the file can be opened is found out by New.
func (c Config) Validate() error {
	var l field.List
	if c.Path == "" {
		l.Add("path", "required")
	}
	return l.Err()
}

// New validates cfg and opens cfg.Path for appending, creating it (mode
// 0644) if needed. Close closes the file. For standard output, use
// NewWriter.
func New(cfg Config) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	path := cfg.Path
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	if st, err := f.Stat(); err == nil && !st.Mode().IsRegular() && st.Mode()&os.ModeNamedPipe == 0 && st.Mode()&os.ModeCharDevice == 0 {
		f.Close()
		return nil, fmt.Errorf("path: %s is not a regular file", path)
	}
	s := NewWriter(f)
	s.closer = f
	return s, nil
}

// NewWriter returns a sink writing to w, for example os.Stdout. Writes to w
// are serialised by the sink. Close does not close w.
func NewWriter(w io.Writer) *Sink {
	return &Sink{w: w, lock: make(chan struct{}, 1)}
}

// WriteBatch encodes batch and writes it with one Write call. It returns
// ctx's error (wrapped) without writing when ctx ends before the write
// starts, ErrClosed after Close, and the writer's error (retryable) when
// the write fails. It does not keep batch.
func (s *Sink) WriteBatch(ctx context.Context, batch []pipeline.Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if len(batch) == 0 {
		return nil
	}
	bp := bufPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooled {
			*bp = (*bp)[:0]
			bufPool.Put(bp)
		}
	}()
	b := (*bp)[:0]
	size := 1
	for i := range batch {
		size += batch[i].Size() + 128
	}
	b = slices.Grow(b, size)
	b = append(b, '\n') // used only after a torn write
	for i := range batch {
		b = appendLine(b, &batch[i])
	}
	*bp = b

	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("file sink: %w", ctx.Err())
	}
	defer func() { <-s.lock }()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if s.closed {
		return ErrClosed
	}
	if !s.torn {
		b = b[1:]
	}
	n, err := s.w.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		switch {
		case n == len(b):
			s.torn = false
		case n > 0:
			// Start the next batch on a new line so the partial one
			// stays on its own.
			s.torn = true
		}
		return fmt.Errorf("file sink: writing %d records: %w", len(batch), err)
	}
	s.torn = false
	return nil
}

// Close waits for a running WriteBatch, then makes later calls fail with
// ErrClosed and closes the file opened by New. Calling it again returns nil.
func (s *Sink) Close() error {
	s.lock <- struct{}{}
	defer func() { <-s.lock }()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.closer != nil {
		if err := s.closer.Close(); err != nil {
			return fmt.Errorf("file sink: %w", err)
		}
	}
	return nil
}

// appendLine appends r as one JSON line.
func appendLine(b []byte, r *pipeline.Record) []byte {
	b = append(b, `{"topic":`...)
	b = jsonenc.AppendString(b, r.Origin.Topic)
	b = append(b, `,"partition":`...)
	b = strconv.AppendInt(b, int64(r.Origin.Partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, r.Origin.Offset, 10)
	b = append(b, `,"key":`...)
	if r.Key == nil {
		b = append(b, "null"...)
	} else {
		b = jsonenc.AppendString(b, r.Key)
	}
	b = append(b, `,"value":`...)
	b = jsonenc.AppendValue(b, r.Value, true)
	b = append(b, `,"headers":{`...)
	for i, h := range r.Headers {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonenc.AppendString(b, h.Key)
		b = append(b, ':')
		b = jsonenc.AppendString(b, h.Value)
	}
	b = append(b, `},"timestamp":`...)
	if r.Timestamp.IsZero() {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = r.Timestamp.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}
