package state_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/state"
)

func TestParseLimitChange(t *testing.T) {
	for _, tc := range []struct {
		name, key, value string
		err              string // substring; empty: valid
	}{
		{"records", "j", `{"version":1,"job":"j","records_per_second":100}`, ""},
		{"both", "j", `{"version":1,"job":"j","records_per_second":100,"bytes_per_second":1e6}`, ""},
		{"clear", "j", `{"version":1,"job":"j","clear":true}`, ""},
		{"not json", "j", `records=5`, "decode"},
		{"unknown field", "j", `{"version":1,"job":"j","records_per_second":1,"burst":5}`, "unknown field"},
		{"newer version", "j", `{"version":2,"job":"j","records_per_second":1,"burst":5}`, "unsupported version 2"},
		{"no version", "j", `{"job":"j","records_per_second":1}`, "unsupported version 0"},
		{"negative", "j", `{"version":1,"job":"j","records_per_second":-1}`, "records_per_second: must be a positive number"},
		{"too large", "j", `{"version":1,"job":"j","bytes_per_second":1e300}`, "bytes_per_second"},
		{"nothing", "j", `{"version":1,"job":"j"}`, "no limit"},
		{"clear and rate", "j", `{"version":1,"job":"j","clear":true,"records_per_second":5}`, "clear cannot be combined"},
		{"other job", "k", `{"version":1,"job":"j","records_per_second":5}`, `does not match the record key "k"`},
		{"trailing", "j", `{"version":1,"job":"j","records_per_second":5} {}`, "data after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := state.ParseLimitChange(tc.key, []byte(tc.value))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			case tc.err != "" && c != (state.LimitChange{}):
				t.Fatalf("invalid record returned %+v", c)
			}
		})
	}
}

// TestPublishLimitChange: a published change reaches a store reading the
// control topic, through OnChange, and a bad one is refused before any I/O.
func TestPublishLimitChange(t *testing.T) {
	f := startFake(t)
	got := make(chan state.LimitChange, 1)
	o := opts(f.addr(), "control")
	o.OnChange = func(k string, v []byte) {
		c, err := state.ParseLimitChange(k, v)
		if err != nil {
			t.Errorf("parse %s: %v", k, err)
			return
		}
		got <- c
	}
	open(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kopts := []kgo.Opt{kgo.SeedBrokers(f.addr())}
	if err := state.PublishLimitChange(ctx, kopts, "control", 1, -1, state.LimitChange{Job: "j", RecordsPerSecond: -5}); err == nil {
		t.Fatal("a negative rate was published")
	}
	if err := state.PublishLimitChange(ctx, kopts, "control", 1, -1, state.LimitChange{Job: "j", RecordsPerSecond: 250}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-got:
		if c.Job != "j" || c.RecordsPerSecond != 250 || c.Version != state.LimitVersion || c.SetAt.IsZero() {
			t.Errorf("received %+v", c)
		}
	case <-ctx.Done():
		t.Fatal("the change did not reach the reader")
	}
}

func TestConfigValidate(t *testing.T) {
	var c state.Config
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*state.Config)
		err  string
	}{
		{"kind", func(c *state.Config) { c.Kind = "redis" }, "kind: must be"},
		{"topic", func(c *state.Config) { c.Topic = "a b" }, "topic: invalid topic name"},
		{"same topics", func(c *state.Config) { c.Topic, c.ControlTopic = "x", "x" }, "control_topic: must differ"},
		{"partitions", func(c *state.Config) { c.Partitions = -1 }, "partitions: must be positive"},
		{"replication", func(c *state.Config) { c.ReplicationFactor = -2 }, "replication_factor: must be -1"},
		{"interval", func(c *state.Config) { c.WriteInterval = -time.Second }, "write_interval: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := state.Config{}
			tc.mod(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Validate() = %v, want %q", err, tc.err)
			}
		})
	}
	for _, tc := range []struct {
		kind  string
		kafka bool
		want  string
	}{{"", true, "kafka"}, {"", false, "memory"}, {"memory", true, "memory"}, {"kafka", false, "kafka"}} {
		if got := (state.Config{Kind: tc.kind}).Resolve(tc.kafka); got != tc.want {
			t.Errorf("Resolve(kind %q, kafka source %v) = %s, want %s", tc.kind, tc.kafka, got, tc.want)
		}
	}
}
