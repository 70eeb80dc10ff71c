package state

import (
	"cmp"
	"math"
	"strings"
	"time"

	"github.com/spillway-io/spillway/field"
)

// The kinds of store Config can choose.
const (
	KindAuto   = "auto"   // kafka when the job has brokers and a Kafka source, memory otherwise
	KindKafka  = "kafka"  // a compacted topic, memory while Kafka is unavailable
	KindMemory = "memory" // nothing survives the process
)

// Default topic names. They are shared by every job on a cluster (keys
// carry the job name), so that a command that only knows a job's name
// (spillway limits set --job J, and later status and savepoints) finds its
// records without reading the job's pipeline file.
const (
	DefaultTopic        = "_spillway_state"
	DefaultControlTopic = "_spillway_control"
)

// Config is the state section of a pipeline file: where a job keeps the
// state that should outlive the process (strategy limits, live limit
// changes, breaker history) and where it reads live limit changes from.
// Zero values mean the default given on each field; ApplyDefaults is the
// one place they live. It is plain data.
type Config struct {
	// Kind is auto (default: kafka when the job has brokers and a Kafka
	// source, memory otherwise), kafka or memory.
	Kind string `yaml:"kind"`
	// Topic is the compacted topic holding the state of every job on the
	// cluster, keyed "<job>/<name>"; default _spillway_state.
	Topic string `yaml:"topic"`
	// ControlTopic is the compacted topic that carries live limit changes
	// (spillway limits set), keyed by job; default _spillway_control.
	ControlTopic string `yaml:"control_topic"`
	// Partitions is the partition count of both topics when the job
	// creates them; default 1 (the state is small).
	Partitions int `yaml:"partitions"`
	// ReplicationFactor is the replication factor of both topics when the
	// job creates them; default -1, the brokers' default.replication.factor.
	ReplicationFactor int `yaml:"replication_factor"`
	// WriteInterval is how often changed keys are written: each key is
	// written at most once per interval with its latest value; default
	// 500ms.
	WriteInterval time.Duration `yaml:"write_interval"`
	// RetryInterval is how often an unavailable Kafka is tried again while
	// the state is held in memory; default 5s.
	RetryInterval time.Duration `yaml:"retry_interval"`
	// LoadTimeout bounds each Kafka operation of the store: creating and
	// reading the topic to its high watermark at start (past it the job
	// starts on memory and keeps trying), each write and each check. It is
	// how long Kafka may be unreachable before the store says so; default
	// 10s.
	LoadTimeout time.Duration `yaml:"load_timeout"`
}

// ApplyDefaults replaces each zero field by its default. Idempotent.
func (c *Config) ApplyDefaults() {
	c.Kind = cmp.Or(c.Kind, KindAuto)
	c.Topic = cmp.Or(c.Topic, DefaultTopic)
	c.ControlTopic = cmp.Or(c.ControlTopic, DefaultControlTopic)
	c.Partitions = cmp.Or(c.Partitions, 1)
	c.ReplicationFactor = cmp.Or(c.ReplicationFactor, -1)
	c.WriteInterval = cmp.Or(c.WriteInterval, 500*time.Millisecond)
	c.RetryInterval = cmp.Or(c.RetryInterval, 5*time.Second)
	c.LoadTimeout = cmp.Or(c.LoadTimeout, 10*time.Second)
}

// Validate reports every invalid field, each a *field.Error with a path
// relative to the state section, joined with errors.Join. Zero fields
// count as their defaults.
func (c Config) Validate() error {
	c.ApplyDefaults()
	var l field.List
	l.OneOf("kind", c.Kind, KindAuto, KindKafka, KindMemory)
	topic := func(key, t string) {
		if len(t) > 249 || strings.Trim(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" || t == "." || t == ".." {
			l.Add(key, "invalid topic name %q: up to 249 letters, digits, '.', '_' and '-'", t)
		}
	}
	topic("topic", c.Topic)
	topic("control_topic", c.ControlTopic)
	if c.Topic == c.ControlTopic {
		l.Add("control_topic", "must differ from topic %q", c.Topic)
	}
	l.Positive("partitions", c.Partitions)
	if c.Partitions > math.MaxInt32 {
		l.Add("partitions", "must be at most %d, got %d", math.MaxInt32, c.Partitions)
	}
	if rf := c.ReplicationFactor; rf != -1 && (rf < 1 || rf > math.MaxInt16) {
		l.Add("replication_factor", "must be -1 (the brokers' default) or from 1 to %d, got %d", math.MaxInt16, rf)
	}
	l.PositiveDur("write_interval", c.WriteInterval)
	l.PositiveDur("retry_interval", c.RetryInterval)
	l.PositiveDur("load_timeout", c.LoadTimeout)
	return l.Err()
}

// Resolve returns the kind a job uses: Kind, with auto decided by whether
// the job reads Kafka (kafka) or not (memory).
func (c Config) Resolve(kafkaSource bool) string {
	c.ApplyDefaults()
	if c.Kind == KindAuto {
		if kafkaSource {
			return KindKafka
		}
		return KindMemory
	}
	return c.Kind
}
