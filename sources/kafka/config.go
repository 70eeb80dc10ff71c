package kafka

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/kafkaclient"
)

// Values of Config.GroupProtocol.
const (
	GroupProtocolClassic  = "classic"
	GroupProtocolConsumer = "consumer"
)

// Config configures the source: the keys of a pipeline file's source.kafka
// section, plus the fields a program sets (yaml:"-"). Zero values mean the
// default documented on each field; ApplyDefaults fills them in.
type Config struct {
	// Brokers are the seed brokers (host:port). Set by the program (the
	// pipeline's brokers); New requires at least one.
	Brokers []string `yaml:"-"`
	// ClientOpts returns extra franz-go options (client id, logger, TLS,
	// SASL; the pipeline's kafka section, see kafkaclient) for one
	// new client, applied after the source's own. The source calls it once
	// per client it opens (the consumer, and the client creating topics),
	// since options such as kafkaclient's carry per-client state. Nil means
	// none.
	ClientOpts func() ([]kgo.Opt, error) `yaml:"-"`

	Topics      []string `yaml:"topics"`       // required; valid, distinct Kafka topic names
	Group       string   `yaml:"group"`        // consumer group; required
	StartOffset string   `yaml:"start_offset"` // where a group without a commit starts: "earliest" (default) or "latest"
	// CreateTopics makes Run create the missing topics (with Partitions
	// partitions) before joining the group, bounded by ConnectTimeout.
	CreateTopics bool `yaml:"create_topics"`
	Partitions   int  `yaml:"partitions"` // partitions of created topics; default 4
	// CheckpointInterval is the period of the commits made whatever
	// happened (which also retry a commit that failed); default 5s.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// CommitDelay is how long after records are done their offsets are
	// committed: acks arriving meanwhile share the commit, and one commit
	// is in flight at a time, so a busy source sends one commit per
	// CommitDelay (plus the commit's own time) and an idle one none. It
	// bounds what a crash delivers again beyond the records in flight.
	// Default 100ms (at most 10 commits/s per source, as Kafka Streams'
	// exactly-once commit interval).
	CommitDelay   time.Duration `yaml:"commit_delay"`
	RevokeTimeout time.Duration `yaml:"revoke_timeout"` // drain bound for a revoked partition; default 10s
	// SessionTimeout is the group session timeout: how soon a crashed
	// worker's partitions move to another; default 45s.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// RebalanceTimeout bounds a rebalance: how long the coordinator waits
	// for every member to rejoin (and to sync) before it removes those that
	// did not. A worker that stops while joining holds the others' join
	// this long. Default 60s (franz-go's; Kafka's Java client uses 5m for
	// rebalance.timeout.ms). It must exceed RevokeTimeout: a member drains
	// its revoked partitions before it rejoins.
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
	// GroupProtocol is the consumer-group protocol: "classic" (default;
	// the client assigns partitions, session_timeout applies) or
	// "consumer" (KIP-848, Kafka 4.0+, 4.3+ advised: the broker assigns
	// and its group.consumer.session.timeout.ms and heartbeat interval
	// govern, not session_timeout; a member rides out a broker restart
	// shorter than that session without losing its partitions).
	GroupProtocol string `yaml:"group_protocol"`
	// InstanceID is a static group membership id (KIP-345): a restarted
	// worker with the same id gets its partitions back without a
	// rebalance. Empty for dynamic membership.
	InstanceID     string        `yaml:"instance_id"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`  // how long Run waits for the brokers to answer at start; default 10s
	MaxPollRecords int           `yaml:"max_poll_records"` // records handed to the pipeline per poll at most; default 5000
	// FetchMaxBytes and FetchMaxPartitionBytes bound one fetch response
	// and one partition's share of it, below 2 GiB. Zero means a share of
	// the sink's byte budget (pipeline.Credit's capacity, 64 MiB without
	// credit): an eighth, at most 50 MiB, and a sixteenth, at most 1 MiB,
	// so that a fetch issued just before the source pauses overshoots the
	// budget by little. A fetch must arrive within the broker's wait (5s)
	// plus RequestTimeoutOverhead: over a slow link, lower the sizes or
	// raise the overhead, or the fetch times out and is retried forever.
	FetchMaxBytes          int `yaml:"fetch_max_bytes"`
	FetchMaxPartitionBytes int `yaml:"fetch_max_partition_bytes"`
	// RequestTimeoutOverhead is added to every request's own timeout; zero
	// means franz-go's 10s.
	RequestTimeoutOverhead time.Duration `yaml:"request_timeout_overhead"`
	// ResumeAt is the fraction of the sink's budget that must be free
	// again before a paused source resumes fetching (the low watermark of
	// buffered data is 1-ResumeAt), in (0, 1]; default 0.5.
	ResumeAt float64 `yaml:"-"`
}

// DefaultBudget is the sink byte budget the fetch sizes are derived from
// when the source is not given the sink's credit.
const DefaultBudget = 64 << 20

// ApplyDefaults replaces each zero field by its documented default. The
// fetch sizes stay zero: they follow the sink's budget, known only when the
// pipeline is wired (see FetchMaxBytes). It is idempotent.
// KafkaTopics implements registry.TopicReader: the embedded broker creates
// these topics, and a pipeline that reads them needs brokers.
func (c *Config) KafkaTopics() []string { return c.Topics }

// ApplyDefaults fills the zero fields with their defaults.
func (c *Config) ApplyDefaults() {
	if c.StartOffset == "" {
		c.StartOffset = "earliest"
	}
	if c.Partitions == 0 {
		c.Partitions = 4
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 5 * time.Second
	}
	if c.CommitDelay == 0 {
		c.CommitDelay = 100 * time.Millisecond
	}
	if c.RevokeTimeout == 0 {
		c.RevokeTimeout = 10 * time.Second
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 45 * time.Second
	}
	if c.GroupProtocol == "" {
		c.GroupProtocol = GroupProtocolClassic
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = 60 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = 5000
	}
	if c.ResumeAt == 0 {
		c.ResumeAt = 0.5
	}
}

// Validate reports every invalid setting as a *field.Error with the
// setting's key, joined with errors.Join. Zero fields count as their
// defaults. Brokers are not checked here (the pipeline file sets them
// outside this section); New requires them.
func (c Config) Validate() error {
	c.ApplyDefaults()
	var l field.List
	if len(c.Topics) == 0 {
		l.Add("topics", "required")
	}
	seen := map[string]bool{}
	for i, t := range c.Topics {
		path := fmt.Sprintf("topics[%d]", i)
		if err := kafkaclient.CheckTopic(t); err != nil {
			l.Add(path, "%s", err)
		} else if seen[t] {
			l.Add(path, "duplicate topic %q", t)
		}
		seen[t] = true
	}
	l.Required("group", c.Group)
	l.OneOf("start_offset", c.StartOffset, "earliest", "latest")
	l.Positive("partitions", c.Partitions)
	l.PositiveDur("checkpoint_interval", c.CheckpointInterval)
	l.PositiveDur("commit_delay", c.CommitDelay)
	l.PositiveDur("revoke_timeout", c.RevokeTimeout)
	l.PositiveDur("session_timeout", c.SessionTimeout)
	l.PositiveDur("rebalance_timeout", c.RebalanceTimeout)
	l.OneOf("group_protocol", c.GroupProtocol, GroupProtocolClassic, GroupProtocolConsumer)
	if c.RebalanceTimeout > 0 && c.RebalanceTimeout <= c.RevokeTimeout {
		l.Add("rebalance_timeout", "must exceed revoke_timeout (%s), got %s", c.RevokeTimeout, c.RebalanceTimeout)
	}
	l.PositiveDur("connect_timeout", c.ConnectTimeout)
	l.Positive("max_poll_records", c.MaxPollRecords)
	if c.FetchMaxBytes < 0 {
		l.Positive("fetch_max_bytes", c.FetchMaxBytes)
	}
	if c.FetchMaxPartitionBytes < 0 {
		l.Positive("fetch_max_partition_bytes", c.FetchMaxPartitionBytes)
	}
	if c.FetchMaxBytes > 0 && c.FetchMaxPartitionBytes > c.FetchMaxBytes {
		l.Add("fetch_max_partition_bytes", "must not exceed fetch_max_bytes (%d), got %d", c.FetchMaxBytes, c.FetchMaxPartitionBytes)
	}
	for _, f := range []struct {
		key string
		n   int
	}{{"fetch_max_bytes", c.FetchMaxBytes}, {"fetch_max_partition_bytes", c.FetchMaxPartitionBytes}} {
		if f.n > math.MaxInt32 {
			l.Add(f.key, "must be below 2 GiB, got %d", f.n)
		}
	}
	if c.RequestTimeoutOverhead < 0 {
		l.PositiveDur("request_timeout_overhead", c.RequestTimeoutOverhead)
	}
	if !(c.ResumeAt > 0 && c.ResumeAt <= 1) {
		l.Add("resume_at", "must be in (0, 1], got %v", c.ResumeAt)
	}
	return l.Err()
}

// fetchSizes returns the fetch bounds for a sink budget of budget bytes:
// the configured ones, or the budget's shares documented on FetchMaxBytes.
func (c Config) fetchSizes(budget int64) (whole, partition int32) {
	budget = max(budget, 1024)
	whole, partition = int32(c.FetchMaxBytes), int32(c.FetchMaxPartitionBytes)
	if whole == 0 {
		whole = int32(min(50<<20, budget/8))
	}
	if partition == 0 {
		partition = int32(min(1<<20, budget/16))
	}
	return whole, partition
}

// brokersError is New's check of what Validate leaves to the program.
func (c Config) brokersError() error {
	if len(c.Brokers) == 0 || strings.TrimSpace(strings.Join(c.Brokers, "")) == "" {
		return &field.Error{Path: "brokers", Msg: "at least one broker address is required"}
	}
	return nil
}
