package state_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/state"
)

func validSavepoint() state.Savepoint {
	return state.Savepoint{
		Version: state.SavepointVersion, ID: "sp-1", Job: "orders", Group: "g",
		CreatedAt:  time.Date(2026, 11, 27, 19, 0, 0, 0, time.UTC),
		Partitions: map[string]int32{"orders": 2},
		Offsets: []state.SavepointOffset{
			{Topic: "orders", Partition: 1, Offset: 7, Metadata: "sw1:x"},
			{Topic: "orders", Partition: 0, Offset: 5},
		},
		State: map[string]json.RawMessage{"strategy": json.RawMessage(`{"kind":"aimd","version":1,"limit":40}`)},
	}
}

// TestSavepointCodec: a savepoint survives Encode and ParseSavepoint
// (offsets sorted), and every kind of bad record is refused with a
// message saying what is wrong.
func TestSavepointCodec(t *testing.T) {
	sp := validSavepoint()
	for _, indent := range []bool{false, true} {
		b, err := sp.Encode(indent)
		if err != nil {
			t.Fatal(err)
		}
		got, err := state.ParseSavepoint(state.SavepointKey("orders", "sp-1"), b)
		if err != nil {
			t.Fatalf("parse %s: %v", b, err)
		}
		if got.Offsets[0].Partition != 0 || got.Offsets[1].Metadata != "sw1:x" || got.Total() != 12 ||
			!got.CreatedAt.Equal(sp.CreatedAt) || string(got.State["strategy"]) != `{"kind":"aimd","version":1,"limit":40}` {
			t.Errorf("round trip (indent %v): %+v", indent, got)
		}
	}
	enc := func(mod func(m map[string]any)) string {
		b, _ := sp.Encode(false)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		mod(m)
		out, _ := json.Marshal(m)
		return string(out)
	}
	for _, tc := range []struct {
		name, key, value, err string
	}{
		{"not json", "", "{", "decode"},
		{"unknown field", "", enc(func(m map[string]any) { m["extra"] = 1 }), "unknown field"},
		{"newer version", "", enc(func(m map[string]any) { m["version"] = 2; m["extra"] = 1 }), "unsupported version 2"},
		{"no version", "", enc(func(m map[string]any) { delete(m, "version") }), "unsupported version 0"},
		{"bad id", "", enc(func(m map[string]any) { m["id"] = "a b" }), "only letters"},
		{"no job", "", enc(func(m map[string]any) { m["job"] = "" }), "job: required"},
		{"no group", "", enc(func(m map[string]any) { delete(m, "group") }), "group: required"},
		{"no time", "", enc(func(m map[string]any) { delete(m, "created_at") }), "created_at: required"},
		{"negative offset", "", enc(func(m map[string]any) {
			m["offsets"] = []any{map[string]any{"topic": "orders", "partition": 0, "offset": -1}}
		}), "negative"},
		{"partition beyond the counts", "", enc(func(m map[string]any) {
			m["offsets"] = []any{map[string]any{"topic": "orders", "partition": 2, "offset": 1}}
		}), "not a partition"},
		{"repeated", "", enc(func(m map[string]any) {
			o := map[string]any{"topic": "orders", "partition": 0, "offset": 1}
			m["offsets"] = []any{o, o}
		}), "repeated"},
		{"unknown state", "", enc(func(m map[string]any) { m["state"] = map[string]any{"members": 1} }), `unknown name "members"`},
		{"other key", state.SavepointKey("orders", "sp-2"), enc(func(map[string]any) {}), "do not match the record key"},
		{"trailing", "", enc(func(map[string]any) {}) + "{}", "data after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := state.ParseSavepoint(tc.key, []byte(tc.value))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
	bad := sp
	bad.State = map[string]json.RawMessage{"strategy": json.RawMessage(`{`)}
	if _, err := bad.Encode(false); err == nil || !strings.Contains(err.Error(), "state.strategy: not JSON") {
		t.Errorf("encode of a non-JSON state value: %v", err)
	}
}

func TestSavepointIDs(t *testing.T) {
	id := state.NewSavepointID(time.Date(2026, 11, 27, 19, 0, 5, 0, time.FixedZone("x", 3600)))
	if !regexp.MustCompile(`^sp-20261127T180005Z-[0-9a-f]{4}$`).MatchString(id) {
		t.Errorf("id %q", id)
	}
	if err := state.ValidateSavepointID(id); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "a/b", "a b", strings.Repeat("x", 101)} {
		if state.ValidateSavepointID(bad) == nil {
			t.Errorf("id %q accepted", bad)
		}
	}
}

func TestParseStopRequest(t *testing.T) {
	for _, tc := range []struct {
		name, key, value, err string
	}{
		{"ok", "j/stop", `{"version":1,"job":"j","savepoint":"sp-1","requested_at":"2026-11-27T19:00:00Z"}`, ""},
		{"other job", "k/stop", `{"version":1,"job":"j","requested_at":"2026-11-27T19:00:00Z"}`, "does not match"},
		{"no time", "j/stop", `{"version":1,"job":"j"}`, "requested_at"},
		{"version", "j/stop", `{"version":2,"job":"j","requested_at":"2026-11-27T19:00:00Z"}`, "unsupported version 2"},
		{"unknown field", "j/stop", `{"version":1,"job":"j","requested_at":"2026-11-27T19:00:00Z","x":1}`, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := state.ParseStopRequest(tc.key, []byte(tc.value))
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}

// savepointEnv is a kfake broker with a 3-partition topic whose group
// committed offsets 10, 20 and 30.
type savepointEnv struct {
	addrs []string
	adm   *kadm.Client
	sps   *state.Savepoints
	ctx   context.Context
}

func newSavepointEnv(t *testing.T) *savepointEnv {
	t.Helper()
	e, err := broker.Start(broker.Options{Partitions: 3, Topics: []string{"in"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	env := &savepointEnv{addrs: e.Addrs(), adm: kadm.NewClient(cl), ctx: ctx}
	env.commit(t, map[int32]int64{0: 10, 1: 20, 2: 30})
	if env.sps, err = state.OpenSavepoints([]kgo.Opt{kgo.SeedBrokers(e.Addrs()...)}, state.Config{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.sps.Close)
	return env
}

func (e *savepointEnv) commit(t *testing.T, offs map[int32]int64) {
	t.Helper()
	os := kadm.Offsets{}
	for p, o := range offs {
		os.Add(kadm.Offset{Topic: "in", Partition: p, At: o, LeaderEpoch: -1})
	}
	if err := e.adm.CommitAllOffsets(e.ctx, "g", os); err != nil {
		t.Fatal(err)
	}
}

func (e *savepointEnv) committed(t *testing.T) map[int32]int64 {
	t.Helper()
	r, err := e.adm.FetchOffsets(e.ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	r.Each(func(o kadm.OffsetResponse) { out[o.Partition] = o.At })
	return out
}

// TestSavepointsRoundTrip: Capture reads the group's offsets and the job's
// state; Put, List, Get and Delete work on the state topic; RestoreOffsets
// and RestoreState put the offsets and values back.
func TestSavepointsRoundTrip(t *testing.T) {
	e := newSavepointEnv(t)
	st, err := state.OpenKafka(e.ctx, opts(e.addrs[0], state.DefaultTopic))
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Put(state.Key("orders", "strategy"), []byte(`{"kind":"aimd","version":1,"limit":40}`))
	_ = st.Put(state.Key("orders", "limits"), []byte(`{"version":1,"job":"orders","records_per_second":500,"set_at":"2026-11-27T19:00:00Z"}`))
	_ = st.Put(state.Key("other", "strategy"), []byte(`{"kind":"aimd","version":1,"limit":1}`))
	if err := st.Close(e.ctx); err != nil {
		t.Fatal(err)
	}

	sp, err := e.sps.Capture(e.ctx, "orders", "g", []string{"in"})
	if err != nil {
		t.Fatal(err)
	}
	sp.ID = "first"
	if sp.Total() != 60 || sp.Partitions["in"] != 3 || len(sp.State) != 2 || string(sp.State["strategy"]) != `{"kind":"aimd","version":1,"limit":40}` {
		t.Fatalf("captured %+v", sp)
	}
	if err := e.sps.Put(e.ctx, sp); err != nil {
		t.Fatal(err)
	}
	if err := e.sps.Put(e.ctx, sp); err == nil || !strings.Contains(err.Error(), "already has a savepoint") {
		t.Errorf("second put of one id: %v", err)
	}
	second := sp
	second.ID, second.CreatedAt = "second", sp.CreatedAt.Add(time.Second)
	if err := e.sps.Put(e.ctx, second); err != nil {
		t.Fatal(err)
	}
	list, err := e.sps.List(e.ctx, "orders")
	if err != nil || len(list) != 2 || list[0].ID != "first" || list[1].ID != "second" {
		t.Fatalf("list: %v, %+v", err, list)
	}
	if other, err := e.sps.List(e.ctx, "other"); err != nil || len(other) != 0 {
		t.Errorf("another job's list: %v %+v", err, other)
	}
	if err := e.sps.Delete(e.ctx, "orders", "second"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sps.Get(e.ctx, "orders", "second"); !errors.Is(err, state.ErrSavepointNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	if err := e.sps.Delete(e.ctx, "orders", "second"); !errors.Is(err, state.ErrSavepointNotFound) {
		t.Errorf("second delete: %v", err)
	}
	got, err := e.sps.Get(e.ctx, "orders", "first")
	if err != nil || got.Total() != 60 {
		t.Fatalf("get: %v %+v", err, got)
	}

	// The group moves on and the state changes; restoring puts both back.
	e.commit(t, map[int32]int64{0: 15, 1: 25, 2: 35})
	st, err = state.OpenKafka(e.ctx, opts(e.addrs[0], state.DefaultTopic))
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Put(state.Key("orders", "strategy"), []byte(`{"kind":"aimd","version":1,"limit":90}`))
	_ = st.Put(state.Key("orders", "breaker"), []byte(`{"version":1,"state":"open"}`))
	_ = st.Close(e.ctx)
	var logs bytes.Buffer
	if err := e.sps.RestoreOffsets(e.ctx, got, []string{"in"}, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if c := e.committed(t); c[0] != 10 || c[1] != 20 || c[2] != 30 {
		t.Errorf("committed after restore: %v", c)
	}
	if err := e.sps.RestoreState(e.ctx, got); err != nil {
		t.Fatal(err)
	}
	st = open(t, opts(e.addrs[0], state.DefaultTopic))
	if v, _ := st.Get(state.Key("orders", "strategy")); string(v) != `{"kind":"aimd","version":1,"limit":40}` {
		t.Errorf("strategy after restore: %s", v)
	}
	if v, ok := st.Get(state.Key("orders", "breaker")); ok {
		t.Errorf("breaker after restore: %s, want none (the savepoint had none)", v)
	}
	ctl := open(t, opts(e.addrs[0], state.DefaultControlTopic))
	if v, _ := ctl.Get("orders"); !strings.Contains(string(v), `"records_per_second":500`) {
		t.Errorf("control record after restore: %s, want the savepoint's live limit", v)
	}
}

// TestRestoreOffsetsRefuses: a group with a member, or a savepoint partition
// that no longer exists, changes nothing; a partition added since starts
// as configured (its commit deleted), said in a log line.
func TestRestoreOffsetsRefuses(t *testing.T) {
	e := newSavepointEnv(t)
	sp, err := e.sps.Capture(e.ctx, "orders", "g", []string{"in"})
	if err != nil {
		t.Fatal(err)
	}
	sp.ID = "x"
	e.commit(t, map[int32]int64{0: 11, 1: 21, 2: 31})

	// A partition the topic no longer has.
	gone := sp
	gone.Partitions = map[string]int32{"in": 4}
	gone.Offsets = append(gone.Offsets[:len(gone.Offsets):len(gone.Offsets)], state.SavepointOffset{Topic: "in", Partition: 3, Offset: 1})
	err = e.sps.RestoreOffsets(e.ctx, gone, []string{"in"}, nil)
	if err == nil || !strings.Contains(err.Error(), "partitions changed: in/3 (the topic has 3 partitions now) no longer exist") {
		t.Errorf("restore with a partition gone: %v", err)
	}
	// A partition added since the savepoint.
	fewer := sp
	fewer.Partitions = map[string]int32{"in": 2}
	fewer.Offsets = nil
	for _, o := range sp.Offsets {
		if o.Partition < 2 {
			fewer.Offsets = append(fewer.Offsets, o)
		}
	}
	var logs bytes.Buffer
	if err := e.sps.RestoreOffsets(e.ctx, fewer, []string{"in"}, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if c := e.committed(t); c[0] != 10 || c[1] != 20 || len(c) != 2 {
		t.Errorf("committed after restore: %v, want 0:10 1:20 and no commit for partition 2", c)
	}
	if !strings.Contains(logs.String(), "partitions added since the savepoint start as the source is configured") || !strings.Contains(logs.String(), "partitions=[2]") {
		t.Errorf("log: %s", logs.String())
	}

	// A member in the group.
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.addrs...), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("in"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		g, err := e.sps.Group(e.ctx, "g")
		if err != nil {
			t.Fatal(err)
		}
		if !g.Empty() {
			break
		}
		pctx, cancel := context.WithTimeout(e.ctx, 100*time.Millisecond)
		cl.PollRecords(pctx, 1) // joins
		cancel()
	}
	before := e.committed(t)
	err = e.sps.RestoreOffsets(e.ctx, sp, []string{"in"}, nil)
	if err == nil || !strings.Contains(err.Error(), "group g is not empty (Stable, 1 members") {
		t.Errorf("restore into a group with a member: %v", err)
	}
	if c := e.committed(t); c[0] != before[0] || c[1] != before[1] {
		t.Errorf("committed changed: %v, was %v", c, before)
	}
}
