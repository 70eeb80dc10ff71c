package kafkasink

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/kafkaclient"
	"github.com/spillway-io/spillway/pipeline/exprop"
)

// Compression codecs (compression).
const (
	CompressionNone   = "none"
	CompressionGzip   = "gzip"
	CompressionSnappy = "snappy"
	CompressionLZ4    = "lz4"
	CompressionZstd   = "zstd"
)

// Delivery guarantees (delivery).
const (
	// AtLeastOnce: a record is acknowledged to the writer once every
	// in-sync replica has it (acks=all, idempotent producer); a retry
	// after a timeout or a crash may write it twice.
	AtLeastOnce = "at_least_once"
	// ExactlyOnce: the Kafka source and the sink share one transactional
	// client; each transaction holds the outputs of the records polled in
	// it and commits their offsets (see sources/kafka's Transactions). A
	// read_committed reader of the target sees each input record's output
	// once.
	ExactlyOnce = "exactly_once"
)

// Config configures the sink: the keys of a pipeline file's sink.kafka
// section, plus the fields a program sets (yaml:"-"). Zero values mean the
// default documented on each field; ApplyDefaults fills them in. It is
// plain data.
type Config struct {
	// Brokers are the seed brokers (host:port) of the cluster written to;
	// empty means the pipeline's brokers (the registry fills them in).
	// The pipeline's kafka section (client id, TLS, SASL) applies either
	// way.
	Brokers []string `yaml:"brokers"`
	// Topic is the target topic. Exactly one of Topic and TopicExpr.
	Topic string `yaml:"topic"`
	// TopicExpr is an expr-lang expression over the record (the variables
	// of the filter and map operators: key, value, json, headers, topic,
	// partition, offset, timestamp) whose string result is the target
	// topic of that record. A record for which it fails, or gives
	// something that is not a valid topic name, is dead-lettered.
	TopicExpr string `yaml:"topic_expr"`
	// Key, Value and Headers compute the produced record's key, value and
	// headers with expressions, exactly as the map operator does (a string
	// result as is, anything else as JSON; a header named here replaces
	// the record's headers of that name, the others are kept). Empty: the
	// record's own key, value and headers, unchanged.
	Key     string            `yaml:"key"`
	Value   string            `yaml:"value"`
	Headers map[string]string `yaml:"headers"`
	// Compression is the codec of produced batches: none, gzip, snappy,
	// lz4 (default) or zstd. lz4 is the cheapest in CPU of Kafka's codecs
	// for a useful ratio on text values; a broker too old for the codec
	// gets the batches uncompressed.
	Compression string `yaml:"compression"`
	// CreateTopic creates a missing target topic (Partitions partitions,
	// the broker's replication factor): the fixed topic at start, a topic
	// from TopicExpr before its first record. Without it a missing topic
	// is an error: at start for Topic, a configuration fault that stops
	// the job for TopicExpr.
	CreateTopic bool `yaml:"create_topic"`
	// Partitions is the partition count of created topics; default 4.
	Partitions int `yaml:"partitions"`
	// Delivery is the guarantee: at_least_once (default) or exactly_once
	// (Kafka transactions that commit the source's offsets; needs a Kafka
	// source on the same cluster).
	Delivery string `yaml:"delivery"`
	// TransactionalID starts the transactional id of exactly_once: the id
	// is this, "-", and the source's instance_id (or the host name and
	// process id without one). Default: the pipeline's name (the registry
	// fills it in). Two jobs on one cluster need different ones.
	TransactionalID string `yaml:"transactional_id"`
	// TransactionInterval is how long an exactly_once transaction stays
	// open at most: a read_committed reader sees a record's output up to
	// this much (plus the commit) after it was read. Default 1s.
	TransactionInterval time.Duration `yaml:"transaction_interval"`
	// TransactionRecords ends an exactly_once transaction early once this
	// many records were read in it; default 100000.
	TransactionRecords int `yaml:"transaction_records"`
	// TransactionTimeout is the exactly_once transaction timeout: the
	// broker aborts a transaction open longer (a crashed worker's, whose
	// partitions read_committed readers wait for until then unless a
	// worker with the same transactional id starts). It must exceed
	// transaction_interval and be at most the broker's
	// transaction.max.timeout.ms (15m by default). Default 30s.
	TransactionTimeout time.Duration `yaml:"transaction_timeout"`

	// ClientOpts returns extra franz-go options (the pipeline's kafka
	// section: client id, TLS, SASL, logger) for the sink's client,
	// applied after the sink's own; the seed brokers are Brokers whatever
	// they say. Nil means none.
	ClientOpts func() ([]kgo.Opt, error) `yaml:"-"`
	// Logger receives the sink's own lines (a topic created, a topic
	// whose max.message.bytes could not be read); nil discards them.
	Logger *slog.Logger `yaml:"-"`
}

// ApplyDefaults replaces each zero field by its documented default. It is
// idempotent.
func (c *Config) ApplyDefaults() {
	if c.Compression == "" {
		c.Compression = CompressionLZ4
	}
	if c.Partitions == 0 {
		c.Partitions = 4
	}
	if c.Delivery == "" {
		c.Delivery = AtLeastOnce
	}
	if c.TransactionInterval == 0 {
		c.TransactionInterval = time.Second
	}
	if c.TransactionRecords == 0 {
		c.TransactionRecords = 100_000
	}
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 30 * time.Second
	}
}

// Validate reports every invalid setting as a *field.Error with a path
// relative to the sink.kafka section, joined with errors.Join. Zero fields
// count as their defaults. Expressions are compiled. It does no I/O:
// whether the topic exists is found out by New.
func (c Config) Validate() error {
	c.ApplyDefaults()
	var l field.List
	for i, b := range c.Brokers {
		host, port, err := net.SplitHostPort(b)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || host == "" || n < 1 || n > 65535 {
			l.Add(fmt.Sprintf("brokers[%d]", i), "invalid broker address %q: want host:port with a port from 1 to 65535", b)
		}
	}
	switch {
	case c.Topic == "" && c.TopicExpr == "":
		l.Add("topic", "required (or topic_expr)")
	case c.Topic != "" && c.TopicExpr != "":
		l.Add("topic_expr", "not with topic: set one of them")
	case c.Topic != "":
		if err := kafkaclient.CheckTopic(c.Topic); err != nil {
			l.Add("topic", "%s", err)
		}
	default:
		if _, err := exprop.Compile(c.TopicExpr); err != nil {
			l.Add("topic_expr", "%s", exprop.Explain(err))
		}
	}
	if c.Key != "" || c.Value != "" || len(c.Headers) > 0 {
		m := exprop.MapConfig{Key: c.Key, Value: c.Value, Headers: c.Headers}
		l.Merge("", m.Validate())
	}
	l.OneOf("compression", c.Compression, CompressionNone, CompressionGzip, CompressionSnappy, CompressionLZ4, CompressionZstd)
	l.Positive("partitions", c.Partitions)
	if c.Partitions > 1<<20 {
		l.Add("partitions", "must be at most %d, got %d", 1<<20, c.Partitions)
	}
	l.OneOf("delivery", c.Delivery, AtLeastOnce, ExactlyOnce)
	l.PositiveDur("transaction_interval", c.TransactionInterval)
	l.Positive("transaction_records", c.TransactionRecords)
	l.PositiveDur("transaction_timeout", c.TransactionTimeout)
	if c.TransactionTimeout > 0 && c.TransactionTimeout <= c.TransactionInterval {
		l.Add("transaction_timeout", "must exceed transaction_interval (%s), got %s", c.TransactionInterval, c.TransactionTimeout)
	}
	if c.TransactionTimeout > 15*time.Minute {
		l.Add("transaction_timeout", "must be at most 15m (Kafka's default transaction.max.timeout.ms), got %s", c.TransactionTimeout)
	}
	return l.Err()
}

// KafkaTarget implements registry.TopicWriter: the pipeline refuses a
// fixed topic that its source reads on the same cluster.
func (c *Config) KafkaTarget() (topic, key string, brokers []string) {
	return c.Topic, "topic", c.Brokers
}

// KafkaTransactional reports whether the sink writes in Kafka
// transactions that commit the source's offsets (delivery: exactly_once),
// and the key saying so: the pipeline's validation requires a Kafka source
// on the same cluster then.
func (c *Config) KafkaTransactional() (key string, on bool) {
	return "delivery", c.Delivery == ExactlyOnce
}

// codecs returns the franz-go compression preference for name (defaulted).
func codecs(name string) ([]kgo.CompressionCodec, error) {
	switch name {
	case CompressionNone:
		return []kgo.CompressionCodec{kgo.NoCompression()}, nil
	case CompressionGzip:
		return []kgo.CompressionCodec{kgo.GzipCompression(), kgo.NoCompression()}, nil
	case CompressionSnappy:
		return []kgo.CompressionCodec{kgo.SnappyCompression(), kgo.NoCompression()}, nil
	case CompressionLZ4:
		return []kgo.CompressionCodec{kgo.Lz4Compression(), kgo.NoCompression()}, nil
	case CompressionZstd:
		return []kgo.CompressionCodec{kgo.ZstdCompression(), kgo.NoCompression()}, nil
	}
	return nil, errors.New("unknown compression " + strconv.Quote(name))
}
