// Package config loads and validates a pipeline's YAML file: strict
// decoding (an unknown key is an error), ${ENV} and ${ENV:default}
// interpolation, and validation errors that name the key path and the line.
package config

import (
	"time"

	"github.com/spillway-io/spillway/backpressure"
	sinkfile "github.com/spillway-io/spillway/sinks/file"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
)

// Pipeline is one pipeline file. Zero values mean the default documented on
// each field; an explicit zero or negative size or duration is an error.
// Parse returns it with the defaults applied and validated; a Pipeline
// built in code can use ApplyDefaults and Validate. It is plain data:
// concurrent reads are safe, ApplyDefaults is the only method that writes.
type Pipeline struct {
	Name            string        `yaml:"name"`             // required; job name
	Brokers         Brokers       `yaml:"brokers"`          // "embedded", "host:port,host:port" or a list; required with a kafka source or a dead-letter topic
	Embedded        Embedded      `yaml:"embedded"`         // only with brokers: embedded
	Source          Source        `yaml:"source"`           // exactly one kind
	Operators       []Operator    `yaml:"operators"`        // applied in order
	Sink            Sink          `yaml:"sink"`             // exactly one kind
	Errors          Errors        `yaml:"errors"`           //
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"` // drain bound on SIGTERM; default 30s
	Log             Log           `yaml:"log"`              //
	Ops             Ops           `yaml:"ops"`              // health and readiness endpoints

	file string              // as given to Parse
	pos  map[string]position // where Parse found each key path
}

// Brokers is the broker list. The single value "embedded" starts an
// in-process kfake broker.
type Brokers []string

// Embedded reports whether b asks for the in-process broker.
func (b Brokers) Embedded() bool { return len(b) == 1 && b[0] == "embedded" }

// Embedded configures the in-process broker.
type Embedded struct {
	DataDir    string `yaml:"data_dir"`   // persist the log here; empty keeps it in memory
	Port       int    `yaml:"port"`       // listen port; 0 picks a free one
	Partitions int    `yaml:"partitions"` // partitions of topics it creates; default 4 (set only with brokers: embedded)
}

// Source holds exactly one source kind.
type Source struct {
	Kafka    *KafkaSource    `yaml:"kafka"`
	File     *FileSource     `yaml:"file"`
	Generate *GenerateSource `yaml:"generate"`
}

// KafkaSource consumes topics as a consumer-group member.
type KafkaSource struct {
	Topics             []string      `yaml:"topics"`              // required
	Group              string        `yaml:"group"`               // required
	StartOffset        string        `yaml:"start_offset"`        // earliest (default) | latest
	CreateTopics       bool          `yaml:"create_topics"`       // create missing topics with kadm at start
	Partitions         int           `yaml:"partitions"`          // for created topics; default 4
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"` // default 5s
	RevokeTimeout      time.Duration `yaml:"revoke_timeout"`      // default 10s
	SessionTimeout     time.Duration `yaml:"session_timeout"`     // group session timeout: how soon a crashed worker's partitions move; default 45s
	InstanceID         string        `yaml:"instance_id"`         // static group membership (KIP-345): a restarted worker with the same id gets its partitions back without a rebalance
	ConnectTimeout     time.Duration `yaml:"connect_timeout"`     // default 10s
	MaxPollRecords     int           `yaml:"max_poll_records"`    // default 5000
	// Fetch sizes default to an eighth (whole fetch, at most 50 MiB) and a
	// sixteenth (per partition, at most 1 MiB) of sink.writer.max_buffered_bytes.
	// A fetch response must arrive within fetch_max_wait (5s) plus
	// request_timeout_overhead (10s): over a slow link, lower the sizes or
	// raise the overhead, or the fetch times out and is retried forever.
	FetchMaxBytes          int           `yaml:"fetch_max_bytes"`
	FetchMaxPartitionBytes int           `yaml:"fetch_max_partition_bytes"`
	RequestTimeoutOverhead time.Duration `yaml:"request_timeout_overhead"` // default 10s (franz-go's)
}

// FileSource reads JSON lines ({"key":..,"value":..,"headers":{..}} or any
// JSON value, taken as the value). Path "-" is stdin.
type FileSource struct {
	Path string `yaml:"path"` // required
}

// GenerateSource produces synthetic records.
type GenerateSource struct {
	Count      int64   `yaml:"count"`       // records to produce; 0 = unbounded
	ValueBytes int     `yaml:"value_bytes"` // default 100
	Keys       int     `yaml:"keys"`        // distinct keys; default 1000
	Rate       float64 `yaml:"rate"`        // records/s; 0 = as fast as possible
}

// Operator is one step; exactly one field is set. Expressions are
// expr-lang (github.com/expr-lang/expr) over the record: key, value
// (strings), json (value decoded as JSON), headers (map), topic, partition,
// offset, timestamp.
type Operator struct {
	Name   string   `yaml:"name"`   // optional, used in errors and dead-letter headers
	Filter string   `yaml:"filter"` // boolean expression; false drops the record
	Map    *MapOp   `yaml:"map"`    //
	Route  *RouteOp `yaml:"route"`  // reserved for routing to several sinks
}

// MapOp rewrites parts of the record; each non-empty field is an
// expression whose string result replaces that part.
type MapOp struct {
	Key     string            `yaml:"key"`
	Value   string            `yaml:"value"`
	Headers map[string]string `yaml:"headers"`
}

// RouteOp is not implemented yet; config validation rejects it.
type RouteOp struct{}

// Sink holds exactly one sink kind plus the writer settings.
type Sink struct {
	HTTP   *HTTPSink   `yaml:"http"`
	File   *FileSink   `yaml:"file"`
	Stdout *StdoutSink `yaml:"stdout"`
	Writer Writer      `yaml:"writer"`
	// RateLimit is the rate-limiting strategy consulted before every
	// request; absent means only max_in_flight_requests limits sending.
	RateLimit *backpressure.Config `yaml:"rate_limit"`
	// CircuitBreaker stops sending while the destination is unhealthy
	// (sony/gobreaker); absent means no breaker.
	CircuitBreaker *CircuitBreaker `yaml:"circuit_breaker"`
}

// HTTPSink POSTs batches: the HTTP sink's own Config (sinks/http owns its
// keys, defaults and rules); timeout defaults to writer.request_timeout.
type HTTPSink = sinkhttp.Config

// BasicAuth is HTTP basic authentication.
type BasicAuth = sinkhttp.BasicAuth

// FileSink appends JSON lines to a file: the file sink's own Config.
type FileSink = sinkfile.Config

// StdoutSink writes JSON lines to standard output.
type StdoutSink struct{}

// Writer holds the AsyncSink writer settings (see sinks.Config).
type Writer struct {
	MaxBatchSize        int           `yaml:"max_batch_size"`         // default 500
	MaxBatchBytes       int           `yaml:"max_batch_bytes"`        // default 4 MiB
	MaxInFlightRequests int           `yaml:"max_in_flight_requests"` // default 8
	MaxBufferedRequests int           `yaml:"max_buffered_requests"`  // default 10000, or 2×max_batch_size if that is more; > max_batch_size
	MaxBufferedBytes    int           `yaml:"max_buffered_bytes"`     // bytes held before the source pauses; default 64 MiB or max_batch_bytes if that is more; >= max_batch_bytes
	MaxTimeInBuffer     time.Duration `yaml:"max_time_in_buffer"`     // default 1s
	MaxRecordBytes      int           `yaml:"max_record_bytes"`       // default 1 MiB, or max_batch_bytes if that is less; <= max_batch_bytes
	RequestTimeout      time.Duration `yaml:"request_timeout"`        // default 30s
	FailOnTimeout       bool          `yaml:"fail_on_timeout"`        //
}

// Errors is the failure policy.
type Errors struct {
	Tolerance       string        `yaml:"tolerance"`         // none (default) | all
	DeadLetterTopic string        `yaml:"dead_letter_topic"` // required with tolerance all; needs brokers
	MaxAttempts     int           `yaml:"max_attempts"`      // default 10
	RetryBackoff    time.Duration `yaml:"retry_backoff"`     // default 100ms, or max_retry_backoff if that is less; <= max_retry_backoff
	MaxRetryBackoff time.Duration `yaml:"max_retry_backoff"` // default 10s
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

// CircuitBreaker configures the breaker around the sink's requests.
type CircuitBreaker struct {
	FailureRatio     float64       `yaml:"failure_ratio"`      // open when this share of requests failed; default 0.5
	MinRequests      int           `yaml:"min_requests"`       // ...out of at least this many in the interval; default 10
	Interval         time.Duration `yaml:"interval"`           // closed-state counting window; default 60s
	OpenTimeout      time.Duration `yaml:"open_timeout"`       // open this long before probing; default 30s
	HalfOpenRequests int           `yaml:"half_open_requests"` // probe batches while half-open; default 1
}
