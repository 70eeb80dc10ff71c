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
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/spillway-io/spillway/checkpoint"
	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
)

// MaxLineBytes bounds one line.
const MaxLineBytes = 16 << 20

// Config configures a file source: the keys of a pipeline file's
// source.file section.
type Config struct {
	// Path is the file to read; "-" reads standard input. Required.
	Path string `yaml:"path"`
}

// ApplyDefaults does nothing: Path has no default. It exists so every
// component Config has the same methods.
func (c *Config) ApplyDefaults() {}

// Validate reports a missing path as a *field.Error.
func (c Config) Validate() error {
	c.ApplyDefaults()
	if c.Path == "" {
		return field.Errorf("path", `required ("-" reads standard input)`)
	}
	return nil
}

// Source reads records from a reader. Run and Close are each called once,
// Run first.
type Source struct {
	name    string
	r       io.Reader
	closer  io.Closer
	batch   int
	tracker *checkpoint.Partition
}

// New validates cfg and opens its path; "-" is stdin, which Close leaves
// open.
func New(cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("file source: %w", err)
	}
	if cfg.Path == "-" {
		return NewReader("stdin", os.Stdin), nil
	}
	f, err := os.Open(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("file source: %w", err)
	}
	s := NewReader(cfg.Path, f)
	s.closer = f
	return s, nil
}

// Open is New(Config{Path: path}).
func Open(path string) (*Source, error) { return New(Config{Path: path}) }

// NewReader returns a source reading JSON lines from r; name is the origin
// topic. Close does not close r.
func NewReader(name string, r io.Reader) *Source {
	return &Source{name: name, r: r, batch: 500, tracker: checkpoint.NewPartition(1)}
}

type envelope struct {
	Key       *string           `json:"key"`
	Value     json.RawMessage   `json:"value"`
	Headers   map[string]string `json:"headers"`
	Timestamp *time.Time        `json:"timestamp"`
}

// Parse turns one line into a record. Surrounding white space is dropped.
// A line that is not valid UTF-8 is never an envelope (JSON text is UTF-8),
// so its bytes are kept as they are rather than decoded with the bad bytes
// replaced. Envelope headers are sorted by key. The record shares no memory
// with line.
func Parse(line []byte) pipeline.Record {
	line = bytes.TrimSpace(line)
	rec := pipeline.Record{Value: append([]byte(nil), line...)}
	if len(line) == 0 || line[0] != '{' || !utf8.Valid(line) {
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
	for _, k := range slices.Sorted(maps.Keys(env.Headers)) {
		out.Headers = append(out.Headers, pipeline.Header{Key: k, Value: []byte(env.Headers[k])})
	}
	if env.Timestamp != nil {
		out.Timestamp = *env.Timestamp
	}
	return out
}

// line is a parsed line on its way from the reading goroutine to Run.
type line struct {
	no  int64
	rec pipeline.Record
}

// Run reads until EOF or ctx ends, emitting records in batches of up to 500.
// A batch is emitted once no further line is ready, so lines arriving
// slowly (stdin) are not held back until a batch fills up.
//
// Reading happens in a goroutine so that Run returns as soon as ctx ends or
// emit fails, even while a Read blocks (stdin without input, which cannot be
// interrupted). That goroutine stops at its next line; one blocked in Read
// stays there until the input yields data, reaches its end or is closed.
//
// A line longer than MaxLineBytes or a read error ends Run with an error
// naming the line, after the lines before it were emitted.
func (s *Source) Run(ctx context.Context, emit pipeline.Emit) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan line, s.batch)
	var readErr error // set before lines is closed
	go func() {
		defer close(lines)
		readErr = s.read(ctx, lines)
	}()

	batch := make([]pipeline.Record, 0, s.batch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := emit(ctx, batch)
		batch = make([]pipeline.Record, 0, s.batch)
		return err
	}
	for {
		var l line
		var ok bool
		if len(batch) == 0 {
			select {
			case l, ok = <-lines:
			case <-ctx.Done():
				return nil
			}
		} else {
			select {
			case l, ok = <-lines:
			case <-ctx.Done():
				return nil
			default:
				// Nothing more is ready: hand over what was read.
				if err := flush(); err != nil {
					return ignoreCancel(ctx, err)
				}
				continue
			}
		}
		if !ok {
			break
		}
		l.rec.Origin = pipeline.Origin{Topic: s.name, Offset: l.no}
		s.tracker.Begin(l.no)
		batch = append(batch, l.rec.WithAcker(s.tracker))
		if len(batch) == s.batch {
			if err := flush(); err != nil {
				return ignoreCancel(ctx, err)
			}
		}
	}
	if err := flush(); err != nil {
		return ignoreCancel(ctx, err)
	}
	if ctx.Err() != nil {
		return nil
	}
	return readErr
}

// read scans s.r and sends every non-empty line to out until the input
// ends or ctx does.
func (s *Source) read(ctx context.Context, out chan<- line) error {
	sc := bufio.NewScanner(s.r)
	// Room for MaxLineBytes plus "\r\n"; the bound is checked below.
	sc.Buffer(make([]byte, 64<<10), MaxLineBytes+2)
	var n int64
	for sc.Scan() {
		n++
		b := sc.Bytes()
		if len(b) > MaxLineBytes {
			return fmt.Errorf("read %s line %d: %w", s.name, n, bufio.ErrTooLong)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		rec := Parse(b)
		if rec.Timestamp.IsZero() {
			rec.Timestamp = time.Now()
		}
		select {
		case out <- line{no: n, rec: rec}:
		case <-ctx.Done():
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s line %d: %w", s.name, n+1, err)
	}
	return nil
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
