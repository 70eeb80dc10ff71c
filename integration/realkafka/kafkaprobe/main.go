// Command kafkaprobe asks a Kafka cluster whether it answers, for kafka.sh
// and for checks by hand:
//
//	kafkaprobe wait -brokers 127.0.0.1:29092 -want 3 -timeout 3s
//	kafkaprobe produce -brokers ... -topic t -partitions 1 -rf 3 -records 1000
//
// wait exits 0 once the cluster lists want unfenced brokers and has an
// active controller; produce creates the topic when it is missing, writes
// the records with acks=all and prints each partition's leader and ISR.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kafkaprobe:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: kafkaprobe wait|produce [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	brokers := fs.String("brokers", "127.0.0.1:29092", "bootstrap addresses, comma separated")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	want := fs.Int("want", 1, "wait: brokers the cluster must list")
	topic := fs.String("topic", "kafkaprobe", "produce: topic")
	partitions := fs.Int("partitions", 1, "produce: partitions of a created topic")
	rf := fs.Int("rf", 1, "produce: replication factor of a created topic")
	records := fs.Int("records", 100, "produce: records to write")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.RetryTimeout(*timeout), kgo.RequestRetries(3))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	switch args[0] {
	case "wait":
		return wait(ctx, adm, *want)
	case "produce":
		return produce(ctx, cl, adm, *topic, int32(*partitions), int16(*rf), *records)
	default:
		return fmt.Errorf("unknown command %q (wait or produce)", args[0])
	}
}

// wait returns nil once the metadata lists want brokers and a controller.
func wait(ctx context.Context, adm *kadm.Client, want int) error {
	for {
		m, err := adm.BrokerMetadata(ctx)
		switch {
		case err != nil:
		case len(m.Brokers) != want:
			err = fmt.Errorf("%d brokers of %d listed: %v", len(m.Brokers), want, m.Brokers.NodeIDs())
		case m.Controller < 0:
			err = errors.New("no active controller")
		default:
			fmt.Printf("cluster %s: brokers %v, controller %d\n", m.Cluster, m.Brokers.NodeIDs(), m.Controller)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// produce writes records to topic with acks=all, creating the topic first.
func produce(ctx context.Context, cl *kgo.Client, adm *kadm.Client, topic string, partitions int32, rf int16, records int) error {
	resp, err := adm.CreateTopic(ctx, partitions, rf, nil, topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, resp.Err)
	}
	start := time.Now()
	recs := make([]*kgo.Record, records)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, `{"id":%d}`, i)}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s: %w", topic, err)
	}
	fmt.Printf("produced %d records to %s (acks=all) in %s\n", records, topic, time.Since(start).Round(time.Millisecond))
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return err
	}
	for _, p := range td[topic].Partitions.Sorted() {
		isr := slices.Clone(p.ISR)
		slices.Sort(isr)
		fmt.Printf("%s p%d leader=%d replicas=%v isr=%v\n", topic, p.Partition, p.Leader, p.Replicas, isr)
	}
	return nil
}
