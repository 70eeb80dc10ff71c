package registry_test

import (
	"context"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/sinks"
	pgsink "github.com/spillway-io/spillway/sinks/postgres"
)

type nopSink struct{}

func (nopSink) WriteBatch(context.Context, []pipeline.Record) error { return nil }

type nopConfig struct {
	Path string `yaml:"path"`
}

func nop(context.Context, *nopConfig, registry.Env) (sinks.Sink, error) { return nopSink{}, nil }

func TestBuiltinKinds(t *testing.T) {
	r := registry.Builtin()
	kinds := func(n int, kind func(int) string) string {
		var out []string
		for i := range n {
			out = append(out, kind(i))
		}
		return strings.Join(out, ",")
	}
	src, snk, ops, st := r.Sources(), r.Sinks(), r.Operators(), r.Strategies()
	for _, c := range []struct{ got, want string }{
		{kinds(len(src), func(i int) string { return src[i].Kind }), "kafka,file,generate"},
		{kinds(len(snk), func(i int) string { return snk[i].Kind }), "http,file,kafka,postgres,stdout"},
		{kinds(len(ops), func(i int) string { return ops[i].Kind }), "filter,map"},
		{kinds(len(st), func(i int) string { return st[i].Kind }), "token_bucket,sliding_window,aimd,multi_tier,none,adaptive_rate"},
	} {
		if c.got != c.want {
			t.Errorf("kinds %s, want %s", c.got, c.want)
		}
	}
	for _, e := range src {
		if e.Doc == "" || e.Config() == nil {
			t.Errorf("source %s lacks docs or a config", e.Kind)
		}
	}
}

// TestAddIsExplicit: registering on one registry leaves Builtin's and
// other registries untouched (nothing is global), and a taken or empty
// kind is refused.
func TestAddIsExplicit(t *testing.T) {
	r := registry.Builtin()
	if err := r.AddSink(registry.SinkOf("nop", "drops batches", nop)); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Sink("nop"); !ok {
		t.Fatal("registered sink not found")
	}
	if _, ok := registry.Builtin().Sink("nop"); ok {
		t.Fatal("a sink registered on one registry appeared in a new Builtin")
	}
	c := r.Clone()
	if err := c.AddSink(registry.SinkOf("nop2", "drops batches", nop)); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Sink("nop2"); ok {
		t.Fatal("Clone shares its entries with the original")
	}
	for _, e := range []registry.Sink{
		registry.SinkOf("http", "again", nop),
		registry.SinkOf("", "no kind", nop),
		{Kind: "half", Config: func() any { return new(nopConfig) }},
	} {
		if err := r.AddSink(e); err == nil {
			t.Errorf("AddSink(%q) accepted", e.Kind)
		}
	}
}

// TestSinkOfTypes: the generic adapter hands New the config Config made.
func TestSinkOfTypes(t *testing.T) {
	var got *nopConfig
	e := registry.SinkOf("nop", "", func(_ context.Context, c *nopConfig, _ registry.Env) (sinks.Sink, error) {
		got = c
		return nopSink{}, nil
	})
	cfg := e.Config().(*nopConfig)
	cfg.Path = "x"
	if _, err := e.New(context.Background(), cfg, registry.Env{}); err != nil {
		t.Fatal(err)
	}
	if got != cfg {
		t.Fatalf("New got %p, want the config %p", got, cfg)
	}
}

// TestPostgresEffectivelyOnceNeedsPartitionOrder: the postgres sink's
// effectively_once is refused, before connecting, unless the writer keeps
// each partition in order.
func TestPostgresEffectivelyOnceNeedsPartitionOrder(t *testing.T) {
	e, ok := registry.Builtin().Sink("postgres")
	if !ok {
		t.Fatal("no postgres sink")
	}
	cfg := &pgsink.Config{DSN: "postgres://u@127.0.0.1:1/db", Table: "t", Columns: []pgsink.Column{{Name: "id", Expr: "json.id"}},
		Delivery: pgsink.EffectivelyOnce}
	for _, ordering := range []string{sinks.OrderKey, sinks.OrderNone} {
		_, err := e.New(t.Context(), cfg, registry.Env{Job: "j", Writer: sinks.Config{Ordering: ordering, MaxInFlightRequests: 8}})
		if err == nil || !strings.Contains(err.Error(), "effectively_once needs sink.writer.ordering: partition") {
			t.Errorf("ordering %s: New = %v, want a refusal naming the ordering", ordering, err)
		}
	}
}
