package kafka

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/field"
)

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.ApplyDefaults()
	want := Config{StartOffset: "earliest", Partitions: 4, CheckpointInterval: 5 * time.Second,
		CommitDelay: 100 * time.Millisecond, RevokeTimeout: 10 * time.Second, SessionTimeout: 45 * time.Second, ConnectTimeout: 10 * time.Second,
		MaxPollRecords: 5000, ResumeAt: 0.5}
	if c.StartOffset != want.StartOffset || c.Partitions != want.Partitions ||
		c.CheckpointInterval != want.CheckpointInterval || c.CommitDelay != want.CommitDelay || c.RevokeTimeout != want.RevokeTimeout ||
		c.SessionTimeout != want.SessionTimeout || c.ConnectTimeout != want.ConnectTimeout ||
		c.MaxPollRecords != want.MaxPollRecords || c.ResumeAt != want.ResumeAt ||
		c.FetchMaxBytes != 0 || c.FetchMaxPartitionBytes != 0 || c.RequestTimeoutOverhead != 0 {
		t.Fatalf("defaults %+v, want %+v", c, want)
	}
	again := c
	again.ApplyDefaults()
	if again.MaxPollRecords != c.MaxPollRecords || again.ResumeAt != c.ResumeAt {
		t.Fatalf("ApplyDefaults is not idempotent: %+v then %+v", c, again)
	}
	set := Config{StartOffset: "latest", MaxPollRecords: 7, Partitions: 2}
	set.ApplyDefaults()
	if set.StartOffset != "latest" || set.MaxPollRecords != 7 || set.Partitions != 2 {
		t.Fatalf("ApplyDefaults replaced set fields: %+v", set)
	}
}

// TestConfigValidate checks each message and its relative path: the
// wording is the pipeline file's (internal/config's tests check it there).
func TestConfigValidate(t *testing.T) {
	ok := func(f func(*Config)) Config {
		c := Config{Topics: []string{"t"}, Group: "g"}
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want []field.Error // in order
	}{
		{"valid", ok(func(*Config) {}), nil},
		{"valid without brokers", Config{Topics: []string{"a", "b"}, Group: "g", FetchMaxBytes: 100, FetchMaxPartitionBytes: 100}, nil},
		{"missing everything", Config{}, []field.Error{{Path: "topics", Msg: "required"}, {Path: "group", Msg: "required"}}},
		{"blank group", ok(func(c *Config) { c.Group = "  " }), []field.Error{{Path: "group", Msg: "required"}}},
		{"bad topics", ok(func(c *Config) { c.Topics = []string{"ok", "no/slash", "ok", "", ".."} }), []field.Error{
			{Path: "topics[1]", Msg: `invalid topic name "no/slash": use only letters, digits, '.', '_' and '-'`},
			{Path: "topics[2]", Msg: `duplicate topic "ok"`},
			{Path: "topics[3]", Msg: "empty topic name"},
			{Path: "topics[4]", Msg: `invalid topic name ".."`},
		}},
		{"start offset", ok(func(c *Config) { c.StartOffset = "newest" }),
			[]field.Error{{Path: "start_offset", Msg: `must be "earliest" or "latest", got "newest"`}}},
		{"group protocol", ok(func(c *Config) { c.GroupProtocol = "kip848" }),
			[]field.Error{{Path: "group_protocol", Msg: `must be "classic" or "consumer", got "kip848"`}}},
		{"negatives", ok(func(c *Config) {
			c.Partitions, c.CheckpointInterval, c.CommitDelay, c.RevokeTimeout, c.SessionTimeout, c.ConnectTimeout, c.MaxPollRecords =
				-1, -time.Second, -time.Millisecond, -time.Second, -time.Second, -time.Second, -5
		}), []field.Error{
			{Path: "partitions", Msg: "must be positive, got -1"},
			{Path: "checkpoint_interval", Msg: "must be positive, got -1s"},
			{Path: "commit_delay", Msg: "must be positive, got -1ms"},
			{Path: "revoke_timeout", Msg: "must be positive, got -1s"},
			{Path: "session_timeout", Msg: "must be positive, got -1s"},
			{Path: "connect_timeout", Msg: "must be positive, got -1s"},
			{Path: "max_poll_records", Msg: "must be positive, got -5"},
		}},
		{"fetch sizes negative", ok(func(c *Config) { c.FetchMaxBytes, c.FetchMaxPartitionBytes = -1, -2 }), []field.Error{
			{Path: "fetch_max_bytes", Msg: "must be positive, got -1"},
			{Path: "fetch_max_partition_bytes", Msg: "must be positive, got -2"},
		}},
		{"partition fetch above fetch", ok(func(c *Config) { c.FetchMaxBytes, c.FetchMaxPartitionBytes = 1000, 2000 }),
			[]field.Error{{Path: "fetch_max_partition_bytes", Msg: "must not exceed fetch_max_bytes (1000), got 2000"}}},
		{"partition fetch alone", ok(func(c *Config) { c.FetchMaxPartitionBytes = 2000 }), nil},
		{"fetch sizes of 2 GiB", ok(func(c *Config) { c.FetchMaxBytes, c.FetchMaxPartitionBytes = math.MaxInt32+1, math.MaxInt32+1 }), []field.Error{
			{Path: "fetch_max_bytes", Msg: "must be below 2 GiB, got 2147483648"},
			{Path: "fetch_max_partition_bytes", Msg: "must be below 2 GiB, got 2147483648"},
		}},
		{"rebalance timeout negative", ok(func(c *Config) { c.RebalanceTimeout = -time.Second }),
			[]field.Error{{Path: "rebalance_timeout", Msg: "must be positive, got -1s"}}},
		{"rebalance timeout within the revoke drain", ok(func(c *Config) { c.RebalanceTimeout, c.RevokeTimeout = 10*time.Second, 10*time.Second }),
			[]field.Error{{Path: "rebalance_timeout", Msg: "must exceed revoke_timeout (10s), got 10s"}}},
		{"rebalance timeout below the session", ok(func(c *Config) { c.RebalanceTimeout, c.SessionTimeout = 15*time.Second, 45*time.Second }), nil},
		{"overhead", ok(func(c *Config) { c.RequestTimeoutOverhead = -time.Second }),
			[]field.Error{{Path: "request_timeout_overhead", Msg: "must be positive, got -1s"}}},
		{"resume at", ok(func(c *Config) { c.ResumeAt = 1.5 }),
			[]field.Error{{Path: "resume_at", Msg: "must be in (0, 1], got 1.5"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, offset, poll := strings.Join(tc.cfg.Topics, ","), tc.cfg.StartOffset, tc.cfg.MaxPollRecords
			errs := field.Split(tc.cfg.Validate())
			if strings.Join(tc.cfg.Topics, ",") != before || tc.cfg.StartOffset != offset || tc.cfg.MaxPollRecords != poll {
				t.Fatal("Validate modified its receiver")
			}
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors %v, want %v", len(errs), errs, tc.want)
			}
			for i, err := range errs {
				var fe *field.Error
				if !errors.As(err, &fe) || *fe != tc.want[i] {
					t.Errorf("error %d = %#v, want %#v", i, err, tc.want[i])
				}
			}
		})
	}
}

// TestNewNamesBadSettings: New applies the defaults, checks the brokers
// Validate leaves out, and names every bad key.
func TestNewNamesBadSettings(t *testing.T) {
	cases := map[string]Config{
		"brokers":             {Topics: []string{"t"}, Group: "g"},
		"topics":              {Brokers: []string{"b"}, Group: "g"},
		"group":               {Brokers: []string{"b"}, Topics: []string{"t"}},
		"start_offset":        {Brokers: []string{"b"}, Topics: []string{"t"}, Group: "g", StartOffset: "middle"},
		"checkpoint_interval": {Brokers: []string{"b"}, Topics: []string{"t"}, Group: "g", CheckpointInterval: -time.Second},
		"max_poll_records":    {Brokers: []string{"b"}, Topics: []string{"t"}, Group: "g", MaxPollRecords: -1},
	}
	for key, cfg := range cases {
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: err = %v, want it named", key, err)
		}
	}
	s, err := New(Config{Brokers: []string{"b"}, Topics: []string{"t"}, Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.MaxPollRecords != 5000 {
		t.Fatalf("max_poll_records %d, want the one default 5000", s.cfg.MaxPollRecords)
	}
	if s.Client() != nil {
		t.Fatal("New created a client: it must do no I/O")
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatalf("Close without Run: %v", err)
	}
}

// TestFetchSizes: zero fetch sizes are an eighth (at most 50 MiB) and a
// sixteenth (at most 1 MiB) of the sink's byte budget; set ones stay.
func TestFetchSizes(t *testing.T) {
	tests := []struct {
		name            string
		whole, part     int
		budget          int64
		wantW, wantPart int32
	}{
		{"default budget", 0, 0, DefaultBudget, 8 << 20, 1 << 20},
		{"small budget", 0, 0, 8 << 20, 1 << 20, 512 << 10},
		{"huge budget", 0, 0, 1 << 32, 50 << 20, 1 << 20},
		{"tiny budget", 0, 0, 10, 128, 64}, // a budget counts as 1 KiB at least
		{"set sizes", 3000, 2000, 8 << 20, 3000, 2000},
		{"one set", 0, 4096, 16 << 20, 2 << 20, 4096},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, p := Config{FetchMaxBytes: tc.whole, FetchMaxPartitionBytes: tc.part}.fetchSizes(tc.budget)
			if w != tc.wantW || p != tc.wantPart {
				t.Fatalf("fetchSizes(%d) = %d, %d; want %d, %d", tc.budget, w, p, tc.wantW, tc.wantPart)
			}
		})
	}
}

// TestFetchSizesFollowCredit: the source sizes its fetches from the credit
// it is given, and from DefaultBudget without one.
func TestFetchSizesFollowCredit(t *testing.T) {
	s, err := New(Config{Brokers: []string{"b"}, Topics: []string{"t"}, Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.consumerOpts(); err != nil {
		t.Fatal(err)
	}
	if s.fetchPart != 1<<20 {
		t.Fatalf("partition fetch %d without credit, want 1 MiB", s.fetchPart)
	}
	s.UseCredit(fixedCredit{capRecords: 100, capBytes: 4 << 20})
	if _, err := s.consumerOpts(); err != nil {
		t.Fatal(err)
	}
	if s.fetchPart != 256<<10 {
		t.Fatalf("partition fetch %d with a 4 MiB budget, want 256 KiB", s.fetchPart)
	}
}
