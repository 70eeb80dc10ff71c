package state

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrNoTopic is returned by Read when the topic does not exist: no worker
// ever kept state there.
var ErrNoTopic = errors.New("state topic does not exist")

// Read reads topic to its high watermark, as a reader that is not a store
// (spillway status, savepoints), and returns the latest value of every key
// starting with prefix; deleted keys are left out. It creates nothing: a
// topic that does not exist is ErrNoTopic.
func Read(ctx context.Context, clientOpts []kgo.Opt, topic, prefix string) (map[string][]byte, error) {
	adm, err := kgo.NewClient(clientOpts...)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	ka := kadm.NewClient(adm)
	starts, err := ka.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	var ends kadm.ListedOffsets
	if err == nil {
		if ends, err = ka.ListEndOffsets(ctx, topic); err == nil {
			err = ends.Error()
		}
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) || (err == nil && len(ends[topic]) == 0) {
		return nil, fmt.Errorf("%w: %s", ErrNoTopic, topic)
	}
	if err != nil {
		return nil, fmt.Errorf("read topic %s: %w", topic, err)
	}
	// Each partition with records, from its start to its end.
	from := map[int32]kgo.Offset{}
	need := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if st, ok := starts.Lookup(o.Topic, o.Partition); ok && o.Offset > st.Offset {
			need[o.Partition] = o.Offset
			from[o.Partition] = kgo.NewOffset().At(st.Offset)
		}
	})
	out := map[string][]byte{}
	if len(need) == 0 {
		return out, nil
	}
	cl, err := kgo.NewClient(append(slices.Clone(clientOpts), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}))...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	for len(need) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read topic %s to its high watermark: %d partitions left: %w", topic, len(need), err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := need[r.Partition]; ok && r.Offset+1 >= end {
				delete(need, r.Partition)
			}
			k := string(r.Key)
			if !strings.HasPrefix(k, prefix) {
				return
			}
			if r.Value == nil {
				delete(out, k)
			} else {
				out[k] = r.Value
			}
		})
	}
	return out, nil
}
