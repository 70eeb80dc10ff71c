package state

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaOptions configures a Kafka store. Zero durations take the defaults
// of Config.
type KafkaOptions struct {
	Topic             string       // required
	Partitions        int32        // when the store creates the topic; default 1
	ReplicationFactor int16        // when the store creates the topic; default -1 (the brokers' default)
	ClientOpts        []kgo.Opt    // seed brokers, TLS, SASL, logger: everything but the store's own options
	Log               *slog.Logger // nil discards
	WriteInterval     time.Duration
	RetryInterval     time.Duration
	LoadTimeout       time.Duration
	// OnChange, when set, is called with each record another writer puts
	// in the topic after the store loaded it (value nil for a deletion),
	// from the store's goroutine, in the topic's order per key. It must
	// not block for long. Records read while loading are not reported:
	// read them with Get or Snapshot after OpenKafka.
	OnChange func(key string, value []byte)
}

// writerHeader carries the id of the store that wrote a record, so that a
// store skips its own records when it reads them back.
const writerHeader = "spillway-writer"

// Kafka is a Store over a compacted topic. It holds every value in memory
// and writes changed keys in the background, each at most once per write
// interval with its latest value; other writers' records reach it through
// a plain consumer (not a group member) of the whole topic.
//
// When Kafka is unavailable (at start, or later: a write or a periodic
// check fails) it keeps working on memory, logs it once, reports it in
// Status, tries again every retry interval, and when Kafka answers again
// writes the latest value of every key it ever wrote (a resync: the
// cluster may have lost them) before reporting itself healthy. A value
// another writer put in the topic meanwhile loses against a local change
// not yet written.
//
// Create it with OpenKafka; it is safe for concurrent use. Close stops it.
type Kafka struct {
	o   KafkaOptions
	cl  *kgo.Client
	adm *kadm.Client
	id  []byte
	log *slog.Logger

	mu     sync.Mutex
	m      map[string][]byte // current values
	seq    map[string]uint64 // per key, bumped by every local change
	dirty  map[string]uint64 // keys to write, with the seq they had when changed
	own    map[string]bool   // keys changed locally since open: written again on resync
	closed bool
	status Status

	cancel context.CancelFunc
	done   chan struct{}
}

var _ Store = (*Kafka)(nil)

// OpenKafka creates the topic if it is missing (cleanup.policy=compact),
// reads it to its high watermark and returns the store, within
// LoadTimeout. When Kafka does not answer in time, the store starts
// degraded, on memory, and keeps trying in the background. It fails only
// on invalid options.
func OpenKafka(ctx context.Context, o KafkaOptions) (*Kafka, error) {
	if o.Topic == "" {
		return nil, errors.New("state: kafka store needs a topic")
	}
	c := Config{WriteInterval: o.WriteInterval, RetryInterval: o.RetryInterval, LoadTimeout: o.LoadTimeout}
	c.ApplyDefaults()
	o.WriteInterval, o.RetryInterval, o.LoadTimeout = c.WriteInterval, c.RetryInterval, c.LoadTimeout
	if o.Partitions <= 0 {
		o.Partitions = 1
	}
	if o.ReplicationFactor == 0 {
		o.ReplicationFactor = -1
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	s := &Kafka{
		o: o, id: []byte(hex.EncodeToString(id)),
		log: o.Log.With("state_topic", o.Topic),
		m:   map[string][]byte{}, seq: map[string]uint64{}, dirty: map[string]uint64{}, own: map[string]bool{},
		status: Status{Mode: KindKafka},
		done:   make(chan struct{}),
	}
	if err := s.connect(ctx, false); err != nil {
		if errors.Is(err, errClientOpts) {
			return nil, err
		}
		s.degrade(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(rctx)
	return s, nil
}

// errClientOpts marks a client that cannot be built from the options.
var errClientOpts = errors.New("state: kafka client")

// connect replaces the client by a new one and loads the topic with it;
// notify reports the values that changed to OnChange. A new client
// forgets what the old one cached: a cluster that came back may have
// recreated the topic under another id.
func (s *Kafka) connect(ctx context.Context, notify bool) error {
	if s.cl != nil {
		s.cl.Close()
		s.cl, s.adm = nil, nil
	}
	cl, err := kgo.NewClient(append(slices.Clone(s.o.ClientOpts),
		kgo.ConsumeTopics(s.o.Topic), // direct: not a group member
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(s.o.WriteInterval),
		// Without idempotence a record that cannot be delivered fails at
		// the delivery timeout or when the write's context ends, instead of
		// being retried for ever; a key's value written twice is harmless.
		kgo.DisableIdempotentWrite(),
		kgo.RecordDeliveryTimeout(max(s.o.LoadTimeout, time.Second)),
		kgo.ProducerLinger(0),
	)...)
	if err != nil {
		return fmt.Errorf("%w: %w", errClientOpts, err)
	}
	s.cl, s.adm = cl, kadm.NewClient(cl)
	return s.load(ctx, notify)
}

// Get returns the value of key.
func (s *Kafka) Get(key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return slices.Clone(v), ok
}

// Put sets key to value; it is written within the write interval.
func (s *Kafka) Put(key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	return s.change(key, slices.Clone(value))
}

// Delete removes key; a tombstone is written within the write interval.
func (s *Kafka) Delete(key string) error { return s.change(key, nil) }

func (s *Kafka) change(key string, value []byte) error {
	if key == "" {
		return errEmptyKey
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if value == nil {
		delete(s.m, key)
	} else {
		s.m[key] = value
	}
	s.seq[key]++
	s.dirty[key] = s.seq[key]
	s.own[key] = true
	return nil
}

// Snapshot returns a copy of the keys starting with prefix.
func (s *Kafka) Snapshot(prefix string) map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return snapshot(s.m, prefix)
}

// Status reports kafka, or memory and why while Kafka is unavailable.
func (s *Kafka) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Close stops the background work, writes what is pending (bounded by
// ctx; nothing is written while degraded) and closes the client.
func (s *Kafka) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	degraded := s.status.Degraded
	s.mu.Unlock()
	s.cancel()
	<-s.done
	var err error
	if !degraded {
		if err = s.flush(ctx); err != nil {
			err = fmt.Errorf("state: final write to %s: %w", s.o.Topic, err)
		}
	}
	if s.cl != nil {
		s.cl.Close()
	}
	return err
}

// degrade switches to memory, logging the first time.
func (s *Kafka) degrade(err error) {
	s.mu.Lock()
	was := s.status.Degraded
	s.status = Status{Mode: KindMemory, Degraded: true, Reason: fmt.Sprintf("kafka unavailable for state topic %s: %v", s.o.Topic, err)}
	s.mu.Unlock()
	if !was {
		s.log.Warn("state store: kafka unavailable, keeping state in memory and retrying", "err", err, "retry_interval", s.o.RetryInterval)
	} else {
		s.log.Debug("state store: kafka still unavailable", "err", err)
	}
}

// run is the store's goroutine: read other writers' records, write
// changed keys every write interval, check Kafka every retry interval
// while idle; while degraded, reconnect every retry interval and resync.
// Only run (and OpenKafka and Close, before and after it) use the client.
func (s *Kafka) run(ctx context.Context) {
	defer close(s.done)
	lastOK := time.Now() // last time Kafka answered
	for ctx.Err() == nil {
		if s.Status().Degraded {
			if !sleep(ctx, s.o.RetryInterval) {
				return
			}
			if s.recover(ctx) {
				lastOK = time.Now()
			}
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, s.o.WriteInterval)
		fs := s.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.apply(fs, true)
		var err error
		switch {
		case s.pending():
			err = s.flush(ctx)
		case time.Since(lastOK) >= s.o.RetryInterval:
			err = s.check(ctx)
		default:
			continue
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.degrade(err)
		default:
			lastOK = time.Now()
		}
	}
}

// recover reconnects and reloads the topic, marks every key changed
// locally since open as changed, writes them and reports the store
// healthy. It reports whether it did.
func (s *Kafka) recover(ctx context.Context) bool {
	err := s.connect(ctx, true)
	if err == nil {
		s.mu.Lock()
		for k := range s.own {
			s.dirty[k] = s.seq[k]
		}
		s.mu.Unlock()
		err = s.flush(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			s.degrade(err)
		}
		return false
	}
	s.mu.Lock()
	s.status = Status{Mode: KindKafka}
	n := len(s.own)
	s.mu.Unlock()
	s.log.Info("state store: kafka available, state resynced", "keys", n)
	return true
}

// ensureTopic creates the topic, compacted, unless it exists.
func (s *Kafka) ensureTopic(ctx context.Context) error {
	compact := "compact"
	resp, err := s.adm.CreateTopic(ctx, s.o.Partitions, s.o.ReplicationFactor, map[string]*string{"cleanup.policy": &compact}, s.o.Topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic: %w", err)
	}
	return nil
}

// check asks for the topic's end offsets: Kafka answers and has the topic.
func (s *Kafka) check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, s.o.LoadTimeout)
	defer cancel()
	offs, err := s.adm.ListEndOffsets(cctx, s.o.Topic)
	if err == nil {
		err = offs.Error()
	}
	if err == nil && len(offs[s.o.Topic]) == 0 {
		err = kerr.UnknownTopicOrPartition
	}
	return err
}

// load creates the topic if missing and reads it to its high watermark;
// notify reports the values that changed to OnChange.
func (s *Kafka) load(ctx context.Context, notify bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.o.LoadTimeout)
	defer cancel()
	if err := s.ensureTopic(ctx); err != nil {
		return err
	}
	s.cl.ForceMetadataRefresh() // the consumer may have found no topic before it was created
	var starts, ends kadm.ListedOffsets
	for {
		// A topic just created may be unknown to the brokers answering
		// for a moment.
		var err error
		if starts, err = s.adm.ListStartOffsets(ctx, s.o.Topic); err == nil {
			err = starts.Error()
		}
		if err == nil {
			if ends, err = s.adm.ListEndOffsets(ctx, s.o.Topic); err == nil {
				err = ends.Error()
			}
		}
		if err == nil {
			break
		}
		if !errors.Is(err, kerr.UnknownTopicOrPartition) || !sleep(ctx, 50*time.Millisecond) {
			return fmt.Errorf("list offsets: %w", err)
		}
	}
	need := map[int32]int64{} // partition -> end offset still to reach
	ends.Each(func(o kadm.ListedOffset) {
		if st, ok := starts.Lookup(o.Topic, o.Partition); !ok || o.Offset > st.Offset {
			need[o.Partition] = o.Offset
		}
	})
	for len(need) > 0 {
		fs := s.cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read to the high watermark: %d partitions left: %w", len(need), err)
		}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if n := len(p.Records); n > 0 {
				if end, ok := need[p.Partition]; ok && p.Records[n-1].Offset+1 >= end {
					delete(need, p.Partition)
				}
			}
		})
		s.apply(fs, notify)
	}
	return nil
}

// apply takes the records of fs into the map, except this store's own and
// those of keys with a local change not yet written; notify calls
// OnChange for each.
func (s *Kafka) apply(fs kgo.Fetches, notify bool) {
	type change struct {
		key   string
		value []byte
	}
	var changes []change
	s.mu.Lock()
	fs.EachRecord(func(r *kgo.Record) {
		for _, h := range r.Headers {
			if h.Key == writerHeader && bytes.Equal(h.Value, s.id) {
				return
			}
		}
		k := string(r.Key)
		if k == "" {
			return
		}
		if _, pending := s.dirty[k]; pending {
			return
		}
		old, had := s.m[k]
		if r.Value == nil {
			delete(s.m, k)
		} else {
			s.m[k] = slices.Clone(r.Value)
		}
		if had == (r.Value != nil) && bytes.Equal(old, r.Value) {
			return // a reload reading what the store holds
		}
		if notify && s.o.OnChange != nil {
			changes = append(changes, change{k, slices.Clone(r.Value)})
		}
	})
	s.mu.Unlock()
	for _, c := range changes {
		s.o.OnChange(c.key, c.value)
	}
}

// pending reports whether a key waits to be written.
func (s *Kafka) pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.dirty) > 0
}

// flush writes the latest value of every changed key and forgets the
// change of those not changed again meanwhile.
func (s *Kafka) flush(ctx context.Context) error {
	s.mu.Lock()
	if len(s.dirty) == 0 {
		s.mu.Unlock()
		return nil
	}
	recs := make([]*kgo.Record, 0, len(s.dirty))
	seqs := make(map[string]uint64, len(s.dirty))
	for k, q := range s.dirty {
		seqs[k] = q
		recs = append(recs, &kgo.Record{Topic: s.o.Topic, Key: []byte(k), Value: s.m[k], // nil: a tombstone
			Headers: []kgo.RecordHeader{{Key: writerHeader, Value: s.id}}})
	}
	s.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, s.o.LoadTimeout)
	defer cancel()
	if err := s.cl.ProduceSync(wctx, recs...).FirstErr(); err != nil {
		return err
	}
	s.mu.Lock()
	for k, q := range seqs {
		if s.dirty[k] == q {
			delete(s.dirty, k)
		}
	}
	s.mu.Unlock()
	return nil
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
