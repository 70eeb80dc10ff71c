// Package broker runs franz-go's kfake, a real Kafka wire-protocol server,
// in-process for `brokers: embedded` and `spillway broker`, and creates
// topics with kadm.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Options configures an embedded broker. The zero value is one in-memory
// broker on a random port.
type Options struct {
	DataDir    string // persist the log and group offsets here; empty keeps them in memory
	Port       int    // port of the first broker; 0 picks free ports
	Brokers    int    // number of brokers; default 1
	Partitions int    // default partitions for created topics; default 4
	Topics     []string
	Logger     *slog.Logger // nil disables kfake's logging
	// ListenFn, when set, replaces net.Listen for the brokers' listeners.
	// The address a listener reports is the one the brokers advertise, so
	// a test can put a TCP fault proxy in front of every broker.
	ListenFn func(network, address string) (net.Listener, error)
}

// Embedded is a running in-process Kafka cluster. Close stops it.
type Embedded struct {
	c *kfake.Cluster
}

// Start starts the cluster and returns once it listens.
func Start(o Options) (*Embedded, error) {
	if o.Brokers == 0 {
		o.Brokers = 1
	}
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	if o.Brokers < 0 || o.Partitions < 0 || o.Port < 0 || o.Port > 65535 {
		return nil, fmt.Errorf("embedded broker: invalid options %+v", o)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(o.Brokers),
		kfake.DefaultNumPartitions(o.Partitions),
		kfake.AllowAutoTopicCreation(),
	}
	if o.Port > 0 {
		ports := make([]int, o.Brokers)
		for i := range ports {
			ports[i] = o.Port + i
		}
		opts = append(opts, kfake.Ports(ports...))
	}
	if o.DataDir != "" {
		opts = append(opts, kfake.DataDir(o.DataDir))
	}
	if len(o.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(o.Partitions), o.Topics...))
	}
	if o.ListenFn != nil {
		opts = append(opts, kfake.ListenFn(o.ListenFn))
	}
	if o.Logger != nil {
		opts = append(opts, kfake.WithLogger(slogAdapter{o.Logger}))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	return &Embedded{c: c}, nil
}

// Addrs returns the listen addresses (host:port).
func (e *Embedded) Addrs() []string { return e.c.ListenAddrs() }

// Cluster returns the kfake cluster, for fault injection in tests.
func (e *Embedded) Cluster() *kfake.Cluster { return e.c }

// Close stops the cluster, flushing persisted state when DataDir is set.
func (e *Embedded) Close() { e.c.Close() }

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Logf(level kfake.LogLevel, msg string, args ...any) {
	text := fmt.Sprintf(msg, args...)
	switch level {
	case kfake.LogLevelError:
		a.l.Error(text, "component", "kfake")
	case kfake.LogLevelWarn:
		a.l.Warn(text, "component", "kfake")
	default:
		a.l.Debug(text, "component", "kfake")
	}
}

// EnsureTopics creates the topics that do not exist yet with the given
// partition count, waiting at most until ctx ends. Existing topics are left
// alone.
func EnsureTopics(ctx context.Context, brokers []string, partitions int32, topics ...string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, partitions, -1, nil, topics...)
	if err != nil {
		return fmt.Errorf("create topics %s on %s: %w", strings.Join(topics, ","), strings.Join(brokers, ","), err)
	}
	var errs []error
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("create topic %s: %w", r.Topic, r.Err))
		}
	}
	return errors.Join(errs...)
}

// Produce writes values to topic with keys key-0..key-(keys-1), for seeding
// demos and benchmarks. It returns once the broker acknowledged everything.
func Produce(ctx context.Context, brokers []string, topic string, count, valueBytes, keys int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		return err
	}
	defer cl.Close()
	if keys <= 0 {
		keys = 1000
	}
	errc := make(chan error, 1)
	for i := range count {
		v := make([]byte, valueBytes)
		n := copy(v, fmt.Sprintf(`{"id":%d,"amount":%d,"pad":"`, i, i%1000))
		if n+2 <= valueBytes {
			for j := n; j < valueBytes-2; j++ {
				v[j] = 'x'
			}
			v[valueBytes-2], v[valueBytes-1] = '"', '}'
		} else {
			v = fmt.Appendf(nil, `{"id":%d,"amount":%d}`, i, i%1000)
		}
		r := &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "key-%d", i%keys), Value: v}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return fmt.Errorf("produce to %s: %w", topic, err)
	default:
		return nil
	}
}
