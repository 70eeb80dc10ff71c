// Package config loads and validates a pipeline's YAML file: strict
// decoding (an unknown key is an error), ${ENV} and ${ENV:default}
// interpolation, and validation errors that name the key path and the line.
package config

import (
	"time"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/kafkaclient"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/state"
)

// Pipeline is one pipeline file: the settings of the job itself (name,
// brokers, shutdown, logging, ops) and, for each place a component fills
// (source, operators, sink, rate limit), the kind chosen and that kind's own
// Config, owned by the component's package. Zero values mean the default
// documented on each field. Parse returns it with the defaults applied and
// validated. It is plain data: concurrent reads are safe, ApplyDefaults is
// the only method that writes.
type Pipeline struct {
	Name    string  `yaml:"name"`    // required; job name
	Brokers Brokers `yaml:"brokers"` // "embedded", "host:port,host:port" or a list; required with a kafka source or a dead-letter topic
	// Kafka holds the client settings every Kafka client of the job uses
	// (source, dead-letter producer, admin): client id, rack, TLS, SASL.
	Kafka           kafkaclient.Config `yaml:"kafka"`
	Embedded        Embedded           `yaml:"embedded"`         // only with brokers: embedded
	Source          Source             `yaml:"source"`           // exactly one kind
	Operators       []Operator         `yaml:"operators"`        // applied in order
	Sink            Sink               `yaml:"sink"`             // exactly one kind plus the writer settings
	Errors          Errors             `yaml:"errors"`           //
	ShutdownTimeout time.Duration      `yaml:"shutdown_timeout"` // drain bound on SIGTERM; default 30s
	Log             Log                `yaml:"log"`              //
	Ops             Ops                `yaml:"ops"`              // health and readiness endpoints
	// State is where the job keeps what outlives the process (strategy
	// state, live limits) and reads live limit changes from (package state).
	State state.Config `yaml:"state"`

	reg  *registry.Registry  // the kinds Parse could choose from
	file string              // as given to Parse
	pos  map[string]position // where Parse found each key path
}

// Registry returns the registry the pipeline was parsed with (the
// built-in one unless Parse was given another).
func (p *Pipeline) Registry() *registry.Registry {
	if p.reg == nil {
		return registry.Builtin()
	}
	return p.reg
}

// SetRegistry makes reg the registry of a Pipeline built in code (Parse
// records the one it used); its kinds must be reg's.
func (p *Pipeline) SetRegistry(reg *registry.Registry) { p.reg = reg }

// Brokers is the broker list. The single value "embedded" starts an
// in-process kfake broker.
type Brokers []string

// Embedded reports whether b asks for the in-process broker.
func (b Brokers) Embedded() bool { return len(b) == 1 && b[0] == "embedded" }

// Embedded configures the in-process broker.
type Embedded struct {
	DataDir    string `yaml:"data_dir"`       // persist the log here; empty keeps it in memory
	Port       int    `yaml:"port" zero:"ok"` // listen port; 0 picks a free one
	Partitions int    `yaml:"partitions"`     // partitions of topics it creates; default 4 (set only with brokers: embedded)
}

// Errors is the failure policy: what happens to a record that cannot be
// delivered (the dead-letter package's settings) and how often delivery is
// retried first (the writer's).
type Errors struct {
	deadletter.Config `yaml:",inline"`
	sinks.RetryConfig `yaml:",inline"`
}

// Ops configures the operations HTTP server: /healthz (the process is
// alive) and /readyz (ready, or why not: starting, degraded, draining).
type Ops struct {
	Listen string `yaml:"listen"` // host:port; empty (default) serves nothing; port 0 picks a free port
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
	Format string `yaml:"format"` // json (default) | text
	// KafkaLevel is the least level of franz-go's own lines (connection
	// failures, group errors, retried requests) that reach the log.
	KafkaLevel string `yaml:"kafka_level"` // debug | info | warn (default) | error
}
