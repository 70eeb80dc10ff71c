package kafka

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sources/sourcetest"
)

// TestConformance runs the source suite over a topic of three partitions;
// every source of one input is a member of the same group, so a restart
// resumes from the group's commit. Small polls make many batches, so a
// batch recycled too early would be overwritten while the suite holds it.
func TestConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T, vals [][]byte) sourcetest.Input {
		topic, group := name("conformance"), name("group")
		e := newEnv(t, 3, topic)
		recs := make([]*kgo.Record, len(vals))
		for i, v := range vals {
			recs[i] = &kgo.Record{Topic: topic, Partition: int32(i % 3), Value: v}
		}
		e.produce(t, recs...)
		return sourcetest.Input{
			Open: func(t *testing.T) pipeline.Source {
				s, err := New(Config{Brokers: e.brokers, Topics: []string{topic}, Group: group, CheckpointInterval: time.Hour,
					MaxPollRecords: 50},
					WithLogger(quiet()))
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
		}
	}, sourcetest.Features{Commits: true, Resumes: true})
}
