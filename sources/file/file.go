// Package file is a source reading JSON lines from a file or stdin.
//
// A line that is a JSON object with a "value" member and no members other
// than key, value, headers and timestamp is an envelope: its parts become the
// record's. Any other line (JSON or not) is the record's value as is.
// Empty lines are skipped. The origin is the path, partition 0, and the
// line number as offset.
package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spillway-io/spillway/checkpoint"
	"github.com/spillway-io/spillway/pipeline"
)

// MaxLineBytes bounds one line.
const MaxLineBytes = 16 << 20

// Source reads records from r.
type Source struct {
	name    string
	r       io.Reader
	closer  io.Closer
	batch   int
	tracker *checkpoint.Partition
}

// Open returns a source reading path; "-" is stdin.
func Open(path string) (*Source, error) {
	if path == "" {
		return nil, errors.New("file source: path is required")
	}
	if path == "-" {
		return New("stdin", os.Stdin), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("file source: %w", err)
	}
	s := New(path, f)
	s.closer = f
	return s, nil
}

// New returns a source reading JSON lines from r; name is the origin topic.
func New(name string, r io.Reader) *Source {
	return &Source{name: name, r: r, batch: 500, tracker: checkpoint.NewPartition(1)}
}

type envelope struct {
	Key       *string           `json:"key"`
	Value     json.RawMessage   `json:"value"`
	Headers   map[string]string `json:"headers"`
	Timestamp *time.Time        `json:"timestamp"`
}

// Parse turns one line into a record.
func Parse(line []byte) pipeline.Record {
	line = bytes.TrimSpace(line)
	rec := pipeline.Record{Value: append([]byte(nil), line...)}
	if len(line) == 0 || line[0] != '{' {
		return rec
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(line, &members) != nil {
		return rec
	}
	if _, ok := members["value"]; !ok {
		return rec
	}
	for k := range members {
		switch k {
		case "key", "value", "headers", "timestamp":
		default:
			return rec
		}
	}
	var env envelope
	if json.Unmarshal(line, &env) != nil {
		return rec
	}
	out := pipeline.Record{}
	if env.Key != nil {
		out.Key = []byte(*env.Key)
	}
	var s string
	switch {
	case len(env.Value) == 0 || string(env.Value) == "null":
	case json.Unmarshal(env.Value, &s) == nil:
		out.Value = []byte(s)
	default:
		out.Value = []byte(env.Value)
	}
	for k, v := range env.Headers {
		out.Headers = append(out.Headers, pipeline.Header{Key: k, Value: []byte(v)})
	}
	if env.Timestamp != nil {
		out.Timestamp = *env.Timestamp
	}
	return out
}

// Run reads until EOF or ctx ends.
func (s *Source) Run(ctx context.Context, emit pipeline.Emit) error {
	sc := bufio.NewScanner(s.r)
	sc.Buffer(make([]byte, 64<<10), MaxLineBytes)
	var line int64
	batch := make([]pipeline.Record, 0, s.batch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := emit(ctx, batch)
		batch = make([]pipeline.Record, 0, s.batch)
		return err
	}
	for sc.Scan() {
		line++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		rec := Parse(sc.Bytes())
		if rec.Timestamp.IsZero() {
			rec.Timestamp = time.Now()
		}
		rec.Origin = pipeline.Origin{Topic: s.name, Offset: line}
		s.tracker.Begin(line)
		batch = append(batch, rec.WithAcker(s.tracker))
		if len(batch) == s.batch {
			if err := flush(); err != nil {
				return ignoreCancel(ctx, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s line %d: %w", s.name, line+1, err)
	}
	return ignoreCancel(ctx, flush())
}

func ignoreCancel(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// Close closes the file.
func (s *Source) Close(context.Context) error {
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}
