package main

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"strconv"
	"sync"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/sinks"
)

// TSVConfig is the tsv sink's section of a pipeline file (sink.tsv).
type TSVConfig struct {
	Path string `yaml:"path"` // required; appended to, created when missing
	// Encoding of keys and values: base64 (default; any bytes) or text
	// (bytes as they are; a value with a tab or newline is dead-lettered
	// rather than changed).
	Encoding string `yaml:"encoding"`
}

// ApplyDefaults fills the zero fields.
func (c *TSVConfig) ApplyDefaults() {
	if c.Encoding == "" {
		c.Encoding = "base64"
	}
}

// Validate reports every invalid field with its path.
func (c TSVConfig) Validate() error {
	c.ApplyDefaults()
	var l field.List
	l.Required("path", c.Path)
	l.OneOf("encoding", c.Encoding, "base64", "text")
	return l.Err()
}

// tsv writes one line per record: topic, partition, offset, key, value.
// WriteBatch is called concurrently; a mutex keeps lines whole.
type tsv struct {
	mu   sync.Mutex
	f    *os.File
	text bool
}

func newTSV(_ context.Context, c *TSVConfig, _ registry.Env) (sinks.Sink, error) {
	f, err := os.OpenFile(c.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &tsv{f: f, text: c.Encoding == "text"}, nil
}

var errUnencodable = errors.New("a tab or newline in the key or value cannot be written as text")

// WriteBatch appends the batch; a record that the text encoding cannot
// carry fails alone, as a fatal entry of a *sinks.BatchError, and goes to
// the dead-letter queue.
func (s *tsv) WriteBatch(_ context.Context, batch []pipeline.Record) error {
	var failed sinks.BatchError
	b := make([]byte, 0, 64*len(batch))
	for i, r := range batch {
		if s.text && (hasSep(r.Key) || hasSep(r.Value)) {
			failed.Failed = append(failed.Failed, sinks.EntryError{Index: i, Err: sinks.AsFatal(errUnencodable)})
			continue
		}
		b = append(b, r.Origin.Topic...)
		b = append(b, '\t')
		b = strconv.AppendInt(b, int64(r.Origin.Partition), 10)
		b = append(b, '\t')
		b = strconv.AppendInt(b, r.Origin.Offset, 10)
		b = append(b, '\t')
		b = s.encode(b, r.Key)
		b = append(b, '\t')
		b = s.encode(b, r.Value)
		b = append(b, '\n')
	}
	s.mu.Lock()
	_, err := s.f.Write(b) // one write per batch keeps lines whole
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if len(failed.Failed) > 0 {
		return &failed
	}
	return nil
}

func (s *tsv) encode(b, v []byte) []byte {
	if s.text {
		return append(b, v...)
	}
	return base64.StdEncoding.AppendEncode(b, v)
}

func hasSep(b []byte) bool {
	for _, c := range b {
		if c == '\t' || c == '\n' {
			return true
		}
	}
	return false
}

// Close closes the file; the job calls it after the pipeline stopped.
func (s *tsv) Close() error { return s.f.Close() }
