// Package state keeps small values that should outlive a worker process:
// a key/value Store with two implementations, Kafka (a compacted topic,
// memory while Kafka is unavailable) and Memory, and the control records
// that carry live limit changes to every worker of a job (spillway limits
// set).
//
// Keys are "<job>/<name>" (Key builds them), so that one topic serves every
// job of a cluster. Values are opaque bytes; the strategies of package
// backpressure that can save their state (backpressure.Stateful) encode it
// as versioned JSON.
package state

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Store is a small key/value store. Every implementation is safe for
// concurrent use; reads and writes never block on I/O (a store backed by
// a remote system writes in the background and degrades to memory when it
// cannot).
type Store interface {
	// Get returns the value of key and whether it is set.
	Get(key string) ([]byte, bool)
	// Put sets key to value (a copy is kept). A remote store writes it
	// within its write interval, coalescing changes: only the latest value
	// of a key is written. It fails only on an empty key or a closed store.
	Put(key string, value []byte) error
	// Delete removes key (a tombstone in a compacted topic).
	Delete(key string) error
	// Snapshot returns a copy of every key starting with prefix.
	Snapshot(prefix string) map[string][]byte
	// Status says where the values are kept now.
	Status() Status
	// Close writes what is pending (bounded by ctx) and releases the
	// store. Later calls of Put and Delete fail with ErrClosed.
	Close(ctx context.Context) error
}

// Status is where a store keeps its values now.
type Status struct {
	// Mode is "kafka" or "memory".
	Mode string `json:"mode"`
	// Degraded is true when the store should be on Kafka but holds its
	// values in memory because Kafka is unavailable: they are written when
	// it returns, and lost if the process ends first.
	Degraded bool `json:"degraded"`
	// Reason says why the store is degraded; empty otherwise.
	Reason string `json:"reason,omitempty"`
}

// String is "kafka", "memory" or "memory (degraded: reason)".
func (s Status) String() string {
	if s.Degraded {
		return s.Mode + " (degraded: " + s.Reason + ")"
	}
	return s.Mode
}

// ErrClosed is returned by Put and Delete on a closed store.
var ErrClosed = errors.New("state store closed")

// errEmptyKey is returned by Put and Delete for an empty key.
var errEmptyKey = errors.New("state: empty key")

// Key returns the key of name for job: "<job>/<name>".
func Key(job, name string) string { return job + "/" + name }

// Memory is a Store that keeps its values in the process. The zero value
// is not ready: use NewMemory.
type Memory struct {
	mu     sync.RWMutex
	m      map[string][]byte
	closed bool
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return &Memory{m: map[string][]byte{}} }

// Get returns the value of key.
func (s *Memory) Get(key string) ([]byte, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.m[key]
	return slices.Clone(v), ok
}

// Put sets key to a copy of value.
func (s *Memory) Put(key string, value []byte) error {
	if key == "" {
		return errEmptyKey
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.m[key] = slices.Clone(value)
	if s.m[key] == nil {
		s.m[key] = []byte{}
	}
	return nil
}

// Delete removes key.
func (s *Memory) Delete(key string) error {
	if key == "" {
		return errEmptyKey
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	delete(s.m, key)
	return nil
}

// Snapshot returns a copy of the keys starting with prefix.
func (s *Memory) Snapshot(prefix string) map[string][]byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return snapshot(s.m, prefix)
}

func snapshot(m map[string][]byte, prefix string) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range maps.All(m) {
		if strings.HasPrefix(k, prefix) {
			out[k] = slices.Clone(v)
		}
	}
	return out
}

// Status is always {Mode: "memory"}.
func (s *Memory) Status() Status { return Status{Mode: KindMemory} }

// Close marks the store closed; values stay readable.
func (s *Memory) Close(context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}
