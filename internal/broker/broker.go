// Package broker runs franz-go's kfake, a real Kafka wire-protocol server,
// in-process for `brokers: embedded` and `spillway broker`, and creates
// topics with kadm.
package broker

import (
	"cmp"
	"context"
	"crypto/tls"
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

	// Users, when not empty, turns SASL on: a client must authenticate as
	// one of them before any other request. Each is a superuser.
	Users []User
	// TLS, when set, makes every listener speak TLS with this config: its
	// Certificates are the brokers' certificates; ClientAuth and ClientCAs
	// require client certificates (mutual TLS).
	TLS *tls.Config
}

// User is a SASL user of the embedded broker. Its String hides the password.
type User struct {
	Mechanism string // PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, any case
	Name      string
	Password  string
}

// String describes u without its password.
func (u User) String() string { return u.Mechanism + ":" + u.Name }

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
	switch {
	case o.Brokers < 0:
		return nil, fmt.Errorf("embedded broker: invalid broker count %d", o.Brokers)
	case o.Partitions < 0:
		return nil, fmt.Errorf("embedded broker: invalid partition count %d", o.Partitions)
	case o.Port < 0 || o.Port > 65535:
		return nil, fmt.Errorf("embedded broker: invalid port %d", o.Port)
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
	if len(o.Users) > 0 {
		opts = append(opts, kfake.EnableSASL())
		for _, u := range o.Users {
			m := strings.ToUpper(u.Mechanism)
			switch m {
			case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
			default:
				return nil, fmt.Errorf("embedded broker: user %s: SASL mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", u)
			}
			if u.Name == "" {
				return nil, fmt.Errorf("embedded broker: user %s: empty name", u)
			}
			opts = append(opts, kfake.Superuser(m, u.Name, u.Password))
		}
	}
	if o.TLS != nil {
		opts = append(opts, kfake.TLS(o.TLS))
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
	return EnsureTopicsWith(ctx, brokers, nil, partitions, topics...)
}

// EnsureTopicsWith is EnsureTopics with extra client options, such as the
// TLS and SASL options of kafkaclient.Config.Opts (which also set the seed
// brokers; brokers then only names them in errors).
func EnsureTopicsWith(ctx context.Context, brokers []string, opts []kgo.Opt, partitions int32, topics ...string) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
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
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// A real cluster answers CreateTopics before its metadata has the
	// topics: a client that asks at once may be told they do not exist.
	for {
		details, err := adm.ListTopics(ctx, topics...)
		visible := err == nil
		for _, t := range topics {
			if d, ok := details[t]; !ok || d.Err != nil || len(d.Partitions) == 0 {
				visible = false
			}
		}
		if visible {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics %s not in the metadata of %s after creation: %w", strings.Join(topics, ","), strings.Join(brokers, ","), cmp.Or(err, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Produce writes values to topic with keys key-0..key-(keys-1), for seeding
// demos and benchmarks. It returns once the broker acknowledged everything.
func Produce(ctx context.Context, brokers []string, topic string, count, valueBytes, keys int) error {
	return ProduceWith(ctx, brokers, nil, topic, count, valueBytes, keys)
}

// ProduceWith is Produce with extra client options (TLS, SASL).
func ProduceWith(ctx context.Context, brokers []string, opts []kgo.Opt, topic string, count, valueBytes, keys int) error {
	o := append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5 * time.Millisecond),
		kgo.ProducerBatchMaxBytes(1 << 20), kgo.MaxBufferedRecords(100_000)}, opts...)
	cl, err := kgo.NewClient(o...)
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
