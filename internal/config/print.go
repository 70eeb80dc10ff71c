package config

import (
	"bytes"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/spillway-io/spillway/kafkaclient"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/state"
)

// printed is the layout Marshal writes: the file's keys in the order of
// the reference, each component's section as its config encodes.
type printed struct {
	Name            string             `yaml:"name"`
	Brokers         []string           `yaml:"brokers,omitempty"`
	Kafka           kafkaclient.Config `yaml:"kafka"`
	Embedded        *Embedded          `yaml:"embedded,omitempty"`
	Source          *yaml.Node         `yaml:"source"`
	Operators       []*yaml.Node       `yaml:"operators,omitempty"`
	Sink            *yaml.Node         `yaml:"sink"`
	Errors          Errors             `yaml:"errors"`
	ShutdownTimeout time.Duration      `yaml:"shutdown_timeout"`
	Log             Log                `yaml:"log"`
	Ops             Ops                `yaml:"ops"`
	State           state.Config       `yaml:"state"`
}

// Marshal writes p as YAML in the layout of a pipeline file, so that what
// a job will run with can be read (spillway validate --print). Parse
// returns p with every default filled in; a Pipeline built in code should
// have ApplyDefaults called first. Secrets (keys naming a password, token
// or secret) are written as "<redacted>".
func (p *Pipeline) Marshal() ([]byte, error) {
	d := p
	out := printed{
		Name: d.Name, Brokers: d.Brokers, Kafka: d.Kafka, Errors: d.Errors,
		ShutdownTimeout: d.ShutdownTimeout, Log: d.Log, Ops: d.Ops, State: d.State,
	}
	if d.Brokers.Embedded() {
		out.Embedded = &d.Embedded
	}
	var err error
	if out.Source, err = kindNode(d.Source.Kind, d.Source.Config); err != nil {
		return nil, err
	}
	for _, op := range d.Operators {
		n, err := kindNode(op.Kind, op.Config)
		if err != nil {
			return nil, err
		}
		if op.Name != "" {
			n.Content = append([]*yaml.Node{scalar("name"), scalar(op.Name)}, n.Content...)
		}
		out.Operators = append(out.Operators, n)
	}
	if out.Sink, err = kindNode(d.Sink.Kind, d.Sink.Config); err != nil {
		return nil, err
	}
	var fixed yaml.Node
	if err := fixed.Encode(d.Sink.fixed()); err != nil {
		return nil, err
	}
	out.Sink.Content = append(out.Sink.Content, fixed.Content...)

	var root yaml.Node
	if err := root.Encode(out); err != nil {
		return nil, err
	}
	dropNulls(&root)
	redact(&root)
	// An empty section that chooses a kind (stdout: {}) stays; a mapping
	// emptied of zeros reads back the same.
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}

// kindNode encodes {kind: cfg}.
func kindNode(kind string, cfg any) (*yaml.Node, error) {
	var v yaml.Node
	if err := v.Encode(cfg); err != nil {
		return nil, err
	}
	return &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{scalar(kind), &v}}, nil
}

func scalar(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: s} }

// MarshalYAML writes the strategy's config with its kind, as the file has
// it: kind and the kind's keys side by side.
func (r RateLimit) MarshalYAML() (any, error) {
	var n yaml.Node
	if err := n.Encode(r.Config); err != nil {
		return nil, err
	}
	if n.Kind == yaml.MappingNode && lookup(&n, "kind") == nil {
		n.Content = append([]*yaml.Node{scalar("kind"), scalar(r.Kind)}, n.Content...)
	}
	return &n, nil
}

// lookup follows keys through mappings.
func lookup(n *yaml.Node, keys ...string) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for _, k := range keys {
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

// dropNulls removes the keys whose value is null, an absent optional
// section (tls, sasl, basic_auth, circuit_breaker), which written as null
// would turn the section on when read back; and numeric zeros, which mean
// "derived" or "none" and which the loader refuses when written (it wants
// the key left out).
func dropNulls(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; v.Kind == yaml.ScalarNode && (v.Tag == "!!null" || (v.Tag == "!!int" || v.Tag == "!!float") && v.Value == "0" || v.Value == "0s") {
				continue
			}
			kept = append(kept, n.Content[i], n.Content[i+1])
		}
		n.Content = kept
	}
	for _, c := range n.Content {
		dropNulls(c)
	}
}

// redact replaces the values of secret-looking keys.
func redact(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := strings.ToLower(n.Content[i].Value), n.Content[i+1]
			if v.Kind == yaml.ScalarNode && v.Value != "" && v.Tag != "!!null" &&
				(strings.Contains(k, "password") || strings.Contains(k, "token") || strings.Contains(k, "secret")) {
				v.Value, v.Tag, v.Style = "<redacted>", "!!str", 0
			}
		}
	}
	for _, c := range n.Content {
		redact(c)
	}
}

// Reference writes every key a pipeline file may hold with its default:
// the pipeline's own settings, then under source, operators, sink and
// sink.rate_limit every kind of reg with its defaulted config. It is not a
// pipeline (it lists all kinds at once) but reads like one: the path of a
// default is the path of its key in a file (spillway config defaults).
func Reference(reg *registry.Registry) ([]byte, error) {
	p := &Pipeline{reg: reg, Brokers: Brokers{"embedded"}, Sink: Sink{CircuitBreaker: &sinks.BreakerConfig{}}}
	allocate(reflect.ValueOf(&p.Kafka).Elem(), 2)
	p.ApplyDefaults()
	p.Kafka.ClientID = "spillway-<name>"
	type ref struct {
		Name            string             `yaml:"name"`
		Brokers         string             `yaml:"brokers"`
		Kafka           kafkaclient.Config `yaml:"kafka"`
		Embedded        Embedded           `yaml:"embedded"`
		Source          yaml.Node          `yaml:"source"`
		Operators       yaml.Node          `yaml:"operators"`
		Sink            yaml.Node          `yaml:"sink"`
		Errors          Errors             `yaml:"errors"`
		ShutdownTimeout time.Duration      `yaml:"shutdown_timeout"`
		Log             Log                `yaml:"log"`
		Ops             Ops                `yaml:"ops"`
		State           state.Config       `yaml:"state"`
	}
	out := ref{Kafka: p.Kafka, Embedded: p.Embedded, Errors: p.Errors, ShutdownTimeout: p.ShutdownTimeout, Log: p.Log, Ops: p.Ops, State: p.State}
	kinds := func(n *yaml.Node, names []string, configs []func() any) error {
		n.Kind = yaml.MappingNode
		for i, k := range names {
			cfg := configs[i]()
			allocate(reflect.ValueOf(cfg).Elem(), 2)
			applyDefaults(cfg)
			var v yaml.Node
			if err := v.Encode(cfg); err != nil {
				return err
			}
			n.Content = append(n.Content, scalar(k), &v)
		}
		return nil
	}
	var names []string
	var configs []func() any
	for _, e := range reg.Sources() {
		names, configs = append(names, e.Kind), append(configs, e.Config)
	}
	if err := kinds(&out.Source, names, configs); err != nil {
		return nil, err
	}
	names, configs = nil, nil
	for _, e := range reg.Operators() {
		names, configs = append(names, e.Kind), append(configs, e.Config)
	}
	if err := kinds(&out.Operators, names, configs); err != nil {
		return nil, err
	}
	out.Operators.Content = append([]*yaml.Node{scalar("name"), {Kind: yaml.ScalarNode, Value: "", Style: yaml.DoubleQuotedStyle}}, out.Operators.Content...)
	names, configs = nil, nil
	for _, e := range reg.Sinks() {
		names, configs = append(names, e.Kind), append(configs, e.Config)
	}
	if err := kinds(&out.Sink, names, configs); err != nil {
		return nil, err
	}
	var fixed yaml.Node
	if err := fixed.Encode(p.Sink.fixed()); err != nil {
		return nil, err
	}
	out.Sink.Content = append(out.Sink.Content, fixed.Content...)
	names, configs = nil, nil
	for _, e := range reg.Strategies() {
		names, configs = append(names, e.Kind), append(configs, e.Config)
	}
	var rl yaml.Node
	if err := kinds(&rl, names, configs); err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(out.Sink.Content); i += 2 {
		if out.Sink.Content[i].Value == "rate_limit" {
			out.Sink.Content[i+1] = &rl
		}
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return b.Bytes(), enc.Close()
}

// allocate points the nil pointer-to-struct fields of v, down to depth
// levels, at zero structs, so that Reference shows their keys too (tls,
// sasl, basic_auth). A field of the struct's own type (a recursive
// config) is left alone.
func allocate(v reflect.Value, depth int) {
	if depth == 0 || v.Kind() != reflect.Struct {
		return
	}
	for i := range v.NumField() {
		f := v.Field(i)
		if !v.Type().Field(i).IsExported() || f.Kind() != reflect.Pointer || f.Type().Elem().Kind() != reflect.Struct {
			continue
		}
		if f.Type().Elem() == v.Type() {
			continue
		}
		if f.IsNil() {
			f.Set(reflect.New(f.Type().Elem()))
		}
		allocate(f.Elem(), depth-1)
	}
}
