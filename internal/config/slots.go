package config

import (
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/sinks"
)

// slot is a place in the pipeline file filled by a registered kind: the
// source, the sink, each operator and the rate limit. The decoder hands
// it the node; it looks the kind up in the decoder's registry and decodes
// the kind's section into a new config of the kind's type.
type slot interface {
	decodeSlot(d *decoder, n *yaml.Node, path string)
}

// Source is the pipeline's source: the one kind written under source:.
type Source struct {
	Kind   string // registered source kind, such as "kafka"; empty when none was written
	Config any    // pointer to the kind's config
	given  []given
}

// given is a kind key the file wrote in a slot, with its decoded config; a
// slot that got several is an error, and each of them is validated too.
type given struct {
	kind string
	cfg  any
}

// Operator is one step of the chain: an optional name and one kind.
type Operator struct {
	Name   string // optional, used in errors and dead-letter headers
	Kind   string // registered operator kind, such as "filter"
	Config any    // pointer to the kind's config
	given  []given
}

// Sink is the concrete sink (one kind) and the settings of the AsyncSink
// writer around it.
type Sink struct {
	Kind   string // registered sink kind, such as "http"
	Config any    // pointer to the kind's config
	given  []given

	Writer sinks.Config `yaml:"writer"`
	// RateLimit is the rate-limiting strategy consulted before every
	// request; absent means only max_in_flight_requests limits sending.
	RateLimit *RateLimit `yaml:"rate_limit"`
	// CircuitBreaker stops sending while the destination is unhealthy
	// (sony/gobreaker); absent means no breaker.
	CircuitBreaker *sinks.BreakerConfig `yaml:"circuit_breaker"`
}

// fixed returns the keys of sink: that are not a sink kind, for printing.
func (s *Sink) fixed() any {
	return struct {
		Writer         sinks.Config         `yaml:"writer"`
		RateLimit      *RateLimit           `yaml:"rate_limit"`
		CircuitBreaker *sinks.BreakerConfig `yaml:"circuit_breaker"`
	}{s.Writer, s.RateLimit, s.CircuitBreaker}
}

// RateLimit is sink.rate_limit: a strategy kind and its config.
type RateLimit struct {
	Kind   string // registered strategy kind; "none" when the file wrote none
	Config any    // pointer to the kind's config
}

// reservedOperators are operator keys known but not implemented.
var reservedOperators = []string{"route"}

// decodeKind decodes val into a new config of the kind key and records it
// among the kinds written in a slot; the first one written is the slot's
// choice.
func (d *decoder) decodeKind(key string, val *yaml.Node, path string, newConfig func() any, kind *string, cfg *any, g *[]given) {
	c := newConfig()
	d.decode(val, reflect.ValueOf(c).Elem(), path)
	*g = append(*g, given{key, c})
	if *kind == "" {
		*kind, *cfg = key, c
	}
}

func (s *Source) decodeSlot(d *decoder, n *yaml.Node, path string) {
	kinds := kindNames(d.reg.Sources(), func(e registry.Source) string { return e.Kind })
	d.mapping(n, path, func(key string, k, val *yaml.Node, p string) {
		e, ok := d.reg.Source(key)
		if !ok {
			d.errorf(k, p, "unknown key%s", suggest(key, kinds))
			return
		}
		d.decodeKind(key, val, p, e.Config, &s.Kind, &s.Config, &s.given)
	})
}

func (o *Operator) decodeSlot(d *decoder, n *yaml.Node, path string) {
	kinds := append(kindNames(d.reg.Operators(), func(e registry.Operator) string { return e.Kind }), reservedOperators...)
	d.mapping(n, path, func(key string, k, val *yaml.Node, p string) {
		if key == "name" {
			if s, null, ok := d.scalar(val, p, "a string"); ok && !null {
				o.Name = s
			}
			return
		}
		if slices.Contains(reservedOperators, key) {
			o.given = append(o.given, given{key, nil})
			return // rejected by Validate whatever it holds
		}
		e, ok := d.reg.Operator(key)
		if !ok {
			d.errorf(k, p, "unknown key%s", suggest(key, append(kinds, "name")))
			return
		}
		d.decodeKind(key, val, p, e.Config, &o.Kind, &o.Config, &o.given)
	})
}

func (s *Sink) decodeSlot(d *decoder, n *yaml.Node, path string) {
	kinds := kindNames(d.reg.Sinks(), func(e registry.Sink) string { return e.Kind })
	fixedKeys, fixed := fields(reflect.TypeFor[Sink]())
	fv := reflect.ValueOf(s).Elem()
	d.mapping(n, path, func(key string, k, val *yaml.Node, p string) {
		if f, ok := fixed[key]; ok {
			d.decode(val, fv.FieldByIndex(f.Index), p)
			return
		}
		e, ok := d.reg.Sink(key)
		if !ok {
			d.errorf(k, p, "unknown key%s", suggest(key, append(slices.Clone(kinds), fixedKeys...)))
			return
		}
		d.decodeKind(key, val, p, e.Config, &s.Kind, &s.Config, &s.given)
	})
}

// decodeSlot reads kind first, then decodes the section into the kind's
// config; the kind key is passed on only to a config that has a kind
// field of its own.
func (r *RateLimit) decodeSlot(d *decoder, n *yaml.Node, path string) {
	if isNull(n) {
		r.Kind = "none"
	}
	if n.Kind != yaml.MappingNode {
		if !isNull(n) {
			d.errorf(n, path, "expected a mapping, got %s", describe(n))
		}
		return
	}
	kind, kindAt := "none", -1
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "kind" {
			kindAt = i
			if s, null, ok := d.scalar(n.Content[i+1], join(path, "kind"), "a string"); ok && !null && strings.TrimSpace(s) != "" {
				kind = s
			}
		}
	}
	e, ok := d.reg.Strategy(kind)
	if !ok {
		kinds := kindNames(d.reg.Strategies(), func(e registry.Strategy) string { return e.Kind })
		at := n
		if kindAt >= 0 {
			at = n.Content[kindAt+1]
		}
		d.errorf(at, join(path, "kind"), "must be %s, got %q", field.OrList(kinds), kind)
		return
	}
	cfg := e.Config()
	body := n
	if _, index := fields(reflect.TypeOf(cfg).Elem()); index["kind"].Index == nil && kindAt >= 0 {
		c := *n
		c.Content = slices.Delete(slices.Clone(n.Content), kindAt, kindAt+2)
		body = &c
		d.pos[join(path, "kind")] = position{n.Content[kindAt].Line, n.Content[kindAt].Column}
	}
	d.decode(body, reflect.ValueOf(cfg).Elem(), path)
	r.Kind, r.Config = kind, cfg
}

func kindNames[E any](list []E, kind func(E) string) []string {
	out := make([]string, len(list))
	for i, e := range list {
		out[i] = kind(e)
	}
	return out
}

// chosen is what a slot's checks see: the kinds the file wrote, or for a
// Pipeline built in code, its Kind and Config.
func chosen(g []given, kind string, cfg any) []given {
	if len(g) == 0 && kind != "" {
		return []given{{kind, cfg}}
	}
	return g
}

// exactlyOneKind reports a slot that got no kind or several, naming them
// in the order of kinds.
func (v *validator) exactlyOneKind(path string, kinds []string, g []given) {
	var names []string
	for _, k := range kinds {
		if slices.ContainsFunc(g, func(x given) bool { return x.kind == k }) {
			names = append(names, k)
		}
	}
	switch len(names) {
	case 0:
		v.errorf(path, "exactly one of %s is required, got none", strings.Join(kinds, ", "))
	case 1:
	default:
		v.errorf(path, "exactly one of %s is allowed, got %s", strings.Join(kinds, ", "), andList(names))
	}
}
