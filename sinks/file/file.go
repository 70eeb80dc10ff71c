// Package file is a sink that appends records as JSON lines to a file or
// any io.Writer (stdout).
//
// Each record becomes one line:
//
//	{"topic":"orders","partition":3,"offset":1200,"key":"k1","value":{"id":1},"headers":{"h":"v"},"timestamp":"2024-01-02T03:04:05.123Z"}
//
// How the value is written is Encoding.ValueEncoding, as for the HTTP
// sink: by default (auto) it is embedded as is when it is valid JSON
// (compacted when it spans lines), written as a JSON string when it is
// other UTF-8 text, "" when empty and null for a tombstone (nil value,
// or left out with tombstones: drop). Bytes are never replaced: a value
// the encoding cannot carry (by default, one that is not valid UTF-8)
// is not written, and its record fails alone, fatal, with the reason.
// The topic, key and header values are JSON strings when they are valid
// UTF-8 and {"$base64":"<standard base64>"} otherwise (a nil key is null);
// a header name that is not valid UTF-8 fails its record. Headers keep
// their order; a repeated header name repeats in the object, and JSON
// decoders keep the last, as pipeline.Record.Header does. The timestamp
// is RFC 3339 in UTC, null when unset.
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
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
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
	w         io.Writer
	closer    io.Closer // nil for NewWriter
	values    jsonenc.Values
	dropTombs bool
	dropped   atomic.Int64

	lock   chan struct{} // a mutex that can be given up on when ctx ends
	closed bool          // guarded by lock
	torn   bool          // guarded by lock: the last write stopped mid-line
}

// Value encodings (value_encoding), what value_encoding auto does with a
// value that is not valid UTF-8 (binary_values) and what becomes of a
// tombstone (tombstones): the same settings, with the same meaning, as
// the HTTP sink's.
const (
	EncodingAuto     = jsonenc.EncodingAuto     // valid JSON as is, other UTF-8 text as a string, other bytes per binary_values
	EncodingJSON     = jsonenc.EncodingJSON     // valid JSON as is; anything else fails
	EncodingString   = jsonenc.EncodingString   // UTF-8 text as a string; anything else fails
	EncodingBase64   = jsonenc.EncodingBase64   // a string of the standard base64 encoding
	BinaryDeadLetter = jsonenc.BinaryDeadLetter // the record fails alone: dead-lettered (or the job stops, per errors.tolerance)
	BinaryBase64     = jsonenc.BinaryBase64     // written as {"$base64":"<standard base64>"}
	TombstonesSend   = jsonenc.TombstonesSend   // "value":null
	TombstonesDrop   = jsonenc.TombstonesDrop   // no line; it counts as delivered (see Sink.DroppedTombstones)
)

// Encoding says how values are written; its yaml keys are those of a
// pipeline file's sink.stdout section, and sink.file has them too. Zero
// values mean the default given on each field, which ApplyDefaults fills
// in. It is plain data.
type Encoding struct {
	// ValueEncoding is how each record value is written: auto (default),
	// json, string or base64 (see the Encoding constants).
	ValueEncoding string `yaml:"value_encoding"`
	// BinaryValues says what value_encoding auto does with a value that is
	// not valid UTF-8: dead_letter (default) or base64. Only with auto.
	BinaryValues string `yaml:"binary_values"`
	// Tombstones says what becomes of a record with a nil value: send
	// (default, "value":null; an empty value is "") or drop.
	Tombstones string `yaml:"tombstones"`
}

// ApplyDefaults fills in ValueEncoding (auto), BinaryValues (dead_letter)
// and Tombstones (send). Idempotent.
func (e *Encoding) ApplyDefaults() {
	jsonenc.DefaultSettings(&e.ValueEncoding, &e.BinaryValues, &e.Tombstones)
}

// Validate reports every invalid setting of a defaulted copy of e as a
// *field.Error with a path relative to the sink section
// ("value_encoding"), joined with errors.Join.
func (e Encoding) Validate() error {
	e.ApplyDefaults()
	var l field.List
	jsonenc.ValidateSettings(&l, e.ValueEncoding, e.BinaryValues, e.Tombstones)
	return l.Err()
}

// Config configures a file sink; its yaml keys are those of a pipeline
// file's sink.file section. Zero values mean the defaults ApplyDefaults
// fills in. It is plain data.
type Config struct {
	Path     string `yaml:"path"` // required: the file to append to, created (mode 0644) if needed
	Encoding `yaml:",inline"`
}

// ApplyDefaults fills in the Encoding settings (see
// Encoding.ApplyDefaults). Idempotent.
func (c *Config) ApplyDefaults() { c.Encoding.ApplyDefaults() }

// Validate reports every invalid setting of a defaulted copy of c as a
// *field.Error with a path relative to the sink.file section, joined with
// errors.Join. It does no I/O: whether the file can be opened is found
// out by New.
func (c Config) Validate() error {
	var l field.List
	if c.Path == "" {
		l.Add("path", "required")
	}
	l.Merge("", c.Encoding.Validate())
	return l.Err()
}

// New validates cfg and opens cfg.Path for appending, creating it (mode
// 0644) if needed. Close closes the file. For standard output, use
// NewWriter.
func New(cfg Config) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ApplyDefaults()
	path := cfg.Path
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	if st, err := f.Stat(); err == nil && !st.Mode().IsRegular() && st.Mode()&os.ModeNamedPipe == 0 && st.Mode()&os.ModeCharDevice == 0 {
		f.Close()
		return nil, fmt.Errorf("path: %s is not a regular file", path)
	}
	s := newSink(f, cfg.Encoding, "sink.file")
	s.closer = f
	return s, nil
}

// NewWriter validates enc and returns a sink writing to w, for example
// os.Stdout (its error messages name the sink.stdout section). Writes to
// w are serialised by the sink. Close does not close w.
func NewWriter(w io.Writer, enc Encoding) (*Sink, error) {
	if err := enc.Validate(); err != nil {
		return nil, err
	}
	enc.ApplyDefaults()
	return newSink(w, enc, "sink.stdout"), nil
}

// newSink returns a sink writing to w; enc is defaulted and valid.
func newSink(w io.Writer, enc Encoding, section string) *Sink {
	return &Sink{
		w: w, lock: make(chan struct{}, 1),
		values: jsonenc.Values{Encoding: enc.ValueEncoding, BinaryBase64: enc.BinaryValues == BinaryBase64,
			OneLine: true, Section: section, Verb: "write"},
		dropTombs: enc.Tombstones == TombstonesDrop,
	}
}

// DroppedTombstones returns how many tombstones the sink left out
// (tombstones: drop) since it was made. They count as delivered.
func (s *Sink) DroppedTombstones() int64 { return s.dropped.Load() }

// WriteBatch encodes batch and writes it with one Write call. It returns
// ctx's error (wrapped) without writing when ctx ends before the write
// starts, ErrClosed after Close, and the writer's error (retryable) when
// the write fails. A record that cannot be encoded (see the package
// documentation) is not written: it fails alone, fatal, in a
// *sinks.BatchError that also lists the written records with the write's
// error if that failed. It does not keep batch.
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
	var failed []sinks.EntryError
	dropped := 0
	for i := range batch {
		if batch[i].Value == nil && s.dropTombs {
			dropped++
			continue
		}
		start := len(b)
		var err error
		if b, err = s.appendLine(b, &batch[i]); err != nil {
			b = b[:start]
			failed = append(failed, sinks.EntryError{Index: i, Err: sinks.AsFatal(&sinks.DetailedError{
				Err:     fmt.Errorf("file sink: %w", err),
				Details: map[string]string{"file.error": "value_encoding"},
			})})
		}
	}
	*bp = b
	if dropped > 0 {
		s.dropped.Add(int64(dropped))
	}
	if len(failed)+dropped == len(batch) {
		return batchResult(batch, failed, dropped, nil)
	}

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
		return batchResult(batch, failed, dropped, fmt.Errorf("file sink: writing %d records: %w", len(batch)-len(failed)-dropped, err))
	}
	s.torn = false
	return batchResult(batch, failed, dropped, nil)
}

// batchResult is the outcome of a batch of which the records in failed
// and dropped tombstones were left out of the write, which failed with
// werr (or succeeded, nil).
func batchResult(batch []pipeline.Record, failed []sinks.EntryError, dropped int, werr error) error {
	if len(failed) == 0 && (werr == nil || dropped == 0) {
		return werr
	}
	if werr != nil {
		// The records written failed together, with the write.
		rerr := sinks.AsRequestError(werr)
		next := 0
		for i := range batch {
			switch {
			case next < len(failed) && failed[next].Index == i:
				next++
				continue
			case batch[i].Value == nil && dropped > 0:
				continue // a dropped tombstone: delivered
			}
			failed = append(failed, sinks.EntryError{Index: i, Err: rerr})
		}
		slices.SortFunc(failed, func(a, b sinks.EntryError) int { return a.Index - b.Index })
	}
	return &sinks.BatchError{Failed: failed}
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

// appendLine appends r as one JSON line, or returns why it cannot (and b
// with part of a line, which the caller drops).
func (s *Sink) appendLine(b []byte, r *pipeline.Record) ([]byte, error) {
	b = append(b, `{"topic":`...)
	b = jsonenc.AppendText(b, r.Origin.Topic)
	b = append(b, `,"partition":`...)
	b = strconv.AppendInt(b, int64(r.Origin.Partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, r.Origin.Offset, 10)
	b = append(b, `,"key":`...)
	if r.Key == nil {
		b = append(b, "null"...)
	} else {
		b = jsonenc.AppendText(b, r.Key)
	}
	b = append(b, `,"value":`...)
	b, err := s.values.Append(b, r.Value)
	if err != nil {
		return b, err
	}
	b = append(b, `,"headers":{`...)
	for i, h := range r.Headers {
		if i > 0 {
			b = append(b, ',')
		}
		if !utf8.ValidString(h.Key) {
			at := jsonenc.InvalidUTF8([]byte(h.Key))
			return b, fmt.Errorf("header name %q is not valid UTF-8: byte 0x%02x at offset %d; a JSON member name holds only text", h.Key, h.Key[at], at)
		}
		b = jsonenc.AppendString(b, h.Key)
		b = append(b, ':')
		b = jsonenc.AppendText(b, h.Value)
	}
	b = append(b, `},"timestamp":`...)
	if r.Timestamp.IsZero() {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = r.Timestamp.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	return append(b, "}\n"...), nil
}
