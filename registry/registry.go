// Package registry maps the kinds a pipeline file names (source.kafka,
// sink.http, a filter operator, rate_limit kind aimd) to components: each
// entry is a kind, a config type, a constructor and a line of docs. The
// config loader decodes a kind's section into a new value of its config
// type; the job builder calls its constructor. Nothing registers itself:
// Builtin lists Spillway's own components in one place, and a program that
// embeds Spillway adds its own with Add* before loading a pipeline (see
// examples/custom-sink).
//
// A config type is a struct (or a string type, for one-value kinds such as
// filter) decoded strictly from YAML by its `yaml` tags. It may have the
// optional methods of the field package's convention: ApplyDefaults()
// on the pointer and Validate() error on the value, reporting *field.Error
// with paths relative to the kind's section.
package registry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// Env is what a constructor may use from the job being built. It is
// read-only for constructors.
type Env struct {
	Job     string       // the pipeline's name
	Log     *slog.Logger // never nil
	Brokers []string     // the job's Kafka brokers, resolved (the embedded broker's addresses); nil without brokers
	// KafkaOpts returns the franz-go options of one new Kafka client of the
	// job: seed brokers, client id, rack, TLS, SASL and logging; append a
	// component's own options after them. Call it once per client: the
	// options carry per-client state (how each connection got on, for
	// kafkaclient.Ping). Nil when the job has no brokers.
	KafkaOpts func() ([]kgo.Opt, error)
	// Writer is the sink's AsyncSink writer settings, defaulted: a sink
	// whose own timeout defaults to the request timeout, or a strategy
	// whose limit defaults from the batch size, reads them here.
	Writer sinks.Config
	Stdout io.Writer // where the stdout sink writes; os.Stdout unless a test changes it
}

// Source is a source kind. New builds the source from a config of the
// type Config returns, defaulted and validated, without I/O where it can
// (connecting belongs in Run). Whatever the source opens it releases in
// pipeline.Source's Close, which the pipeline calls once.
type Source struct {
	Kind   string
	Doc    string
	Config func() any // a pointer to a new zero config
	New    func(ctx context.Context, cfg any, env Env) (pipeline.Source, error)
}

// Sink is a sink kind: the concrete sink under the AsyncSink writer. If
// the built sink has a Close() error method the job calls it after the
// pipeline stopped.
type Sink struct {
	Kind   string
	Doc    string
	Config func() any
	New    func(ctx context.Context, cfg any, env Env) (sinks.Sink, error)
}

// Operator is an operator kind.
type Operator struct {
	Kind   string
	Doc    string
	Config func() any
	New    func(cfg any, env Env) (pipeline.Operator, error)
}

// Strategy is a rate-limiting strategy kind, chosen by sink.rate_limit's
// kind key; the other keys of that section are decoded into its config (a
// config struct may also have a `kind` field to receive the kind).
type Strategy struct {
	Kind   string
	Doc    string
	Config func() any
	New    func(cfg any, env Env) (backpressure.Strategy, error)
}

// SourceOf returns a Source entry with config type C.
func SourceOf[C any](kind, doc string, build func(ctx context.Context, cfg *C, env Env) (pipeline.Source, error)) Source {
	return Source{Kind: kind, Doc: doc, Config: func() any { return new(C) },
		New: func(ctx context.Context, cfg any, env Env) (pipeline.Source, error) { return build(ctx, cfg.(*C), env) }}
}

// SinkOf returns a Sink entry with config type C.
func SinkOf[C any](kind, doc string, build func(ctx context.Context, cfg *C, env Env) (sinks.Sink, error)) Sink {
	return Sink{Kind: kind, Doc: doc, Config: func() any { return new(C) },
		New: func(ctx context.Context, cfg any, env Env) (sinks.Sink, error) { return build(ctx, cfg.(*C), env) }}
}

// OperatorOf returns an Operator entry with config type C.
func OperatorOf[C any](kind, doc string, build func(cfg *C, env Env) (pipeline.Operator, error)) Operator {
	return Operator{Kind: kind, Doc: doc, Config: func() any { return new(C) },
		New: func(cfg any, env Env) (pipeline.Operator, error) { return build(cfg.(*C), env) }}
}

// StrategyOf returns a Strategy entry with config type C.
func StrategyOf[C any](kind, doc string, build func(cfg *C, env Env) (backpressure.Strategy, error)) Strategy {
	return Strategy{Kind: kind, Doc: doc, Config: func() any { return new(C) },
		New: func(cfg any, env Env) (backpressure.Strategy, error) { return build(cfg.(*C), env) }}
}

// Registry holds the kinds a pipeline may name. Build it before loading
// pipelines and do not change it afterwards: reads are safe for concurrent
// use, Add* are not. The zero value is empty and ready.
type Registry struct {
	sources    []Source
	sinks      []Sink
	operators  []Operator
	strategies []Strategy
}

// New returns an empty registry.
func New() *Registry { return &Registry{} }

// AddSource registers a source kind; a kind already taken is an error.
func (r *Registry) AddSource(e Source) error {
	return add(&r.sources, e, "source", e.Kind, e.Config, e.New == nil)
}

// AddSink registers a sink kind.
func (r *Registry) AddSink(e Sink) error {
	return add(&r.sinks, e, "sink", e.Kind, e.Config, e.New == nil)
}

// AddOperator registers an operator kind.
func (r *Registry) AddOperator(e Operator) error {
	return add(&r.operators, e, "operator", e.Kind, e.Config, e.New == nil)
}

// AddStrategy registers a rate-limiting strategy kind.
func (r *Registry) AddStrategy(e Strategy) error {
	return add(&r.strategies, e, "strategy", e.Kind, e.Config, e.New == nil)
}

func add[E any](list *[]E, e E, what, kind string, cfg func() any, noNew bool) error {
	switch {
	case kind == "":
		return fmt.Errorf("registry: %s kind is empty", what)
	case cfg == nil || noNew:
		return fmt.Errorf("registry: %s %q needs Config and New", what, kind)
	}
	if slices.ContainsFunc(*list, func(x E) bool { return kindOf(x) == kind }) {
		return fmt.Errorf("registry: %s kind %q is already registered", what, kind)
	}
	*list = append(*list, e)
	return nil
}

func kindOf(e any) string {
	switch e := e.(type) {
	case Source:
		return e.Kind
	case Sink:
		return e.Kind
	case Operator:
		return e.Kind
	case Strategy:
		return e.Kind
	}
	return ""
}

// Source returns the source kind named kind.
func (r *Registry) Source(kind string) (Source, bool) { return find(r.sources, kind) }

// Sink returns the sink kind named kind.
func (r *Registry) Sink(kind string) (Sink, bool) { return find(r.sinks, kind) }

// Operator returns the operator kind named kind.
func (r *Registry) Operator(kind string) (Operator, bool) { return find(r.operators, kind) }

// Strategy returns the strategy kind named kind.
func (r *Registry) Strategy(kind string) (Strategy, bool) { return find(r.strategies, kind) }

func find[E any](list []E, kind string) (E, bool) {
	for _, e := range list {
		if kindOf(e) == kind {
			return e, true
		}
	}
	var zero E
	return zero, false
}

// Sources lists the source kinds in registration order.
func (r *Registry) Sources() []Source { return slices.Clone(r.sources) }

// Sinks lists the sink kinds in registration order.
func (r *Registry) Sinks() []Sink { return slices.Clone(r.sinks) }

// Operators lists the operator kinds in registration order.
func (r *Registry) Operators() []Operator { return slices.Clone(r.operators) }

// Strategies lists the strategy kinds in registration order.
func (r *Registry) Strategies() []Strategy { return slices.Clone(r.strategies) }

// Clone returns a copy that can be extended without changing r.
func (r *Registry) Clone() *Registry {
	return &Registry{sources: r.Sources(), sinks: r.Sinks(), operators: r.Operators(), strategies: r.Strategies()}
}

// Must panics if err is not nil; for building a registry in main, where a
// duplicate kind is a programming error.
func Must(err error) {
	if err != nil {
		panic(err)
	}
}

// TopicReader is the optional ability of a source config that reads Kafka
// topics: the embedded broker creates them, the pipeline's brokers key is
// required, and the dead-letter topic must differ from them.
type TopicReader interface {
	KafkaTopics() []string
}

// OrderingRequirer is the optional ability of a sink config that needs a
// writer ordering for a guarantee it gives: the pipeline's validation
// refuses another sink.writer.ordering, naming the sink's key.
type OrderingRequirer interface {
	// RequiredOrdering returns the ordering needed ("" for none), the key
	// that asks for it relative to the sink kind's section, and why.
	RequiredOrdering() (ordering, key, why string)
}

// TopicWriter is the optional ability of a sink config that produces to
// Kafka. The pipeline's validation requires the pipeline's brokers when
// the sink has none of its own, and refuses a fixed target topic that the
// source reads on the same cluster (the job would read its own output: a
// loop) or that is the dead-letter topic, naming the key.
type TopicWriter interface {
	// KafkaTarget returns the topic the config names (empty when it is
	// computed per record), the key naming it relative to the sink kind's
	// section, and the brokers the sink writes to (nil: the pipeline's).
	KafkaTarget() (topic, key string, brokers []string)
}
