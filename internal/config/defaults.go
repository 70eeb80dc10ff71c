package config

import (
	"cmp"
	"time"
)

// defaulter is the optional ApplyDefaults of a component config.
type defaulter interface{ ApplyDefaults() }

// validater is the optional Validate of a component config.
type validater interface{ Validate() error }

// ApplyDefaults replaces each zero field by its default: the pipeline's own
// settings here, every component's through its ApplyDefaults. It is
// idempotent and does not validate.
func (p *Pipeline) ApplyDefaults() {
	p.applyOwnDefaults()
	if p.Kafka.ClientID == "" && p.Name != "" {
		p.Kafka.ClientID = "spillway-" + p.Name
	}
	p.Kafka.ApplyDefaults()
	applyDefaults(p.Source.Config)
	for _, op := range p.Operators {
		applyDefaults(op.Config)
	}
	applyDefaults(p.Sink.Config)
	p.Sink.Writer.ApplyDefaults()
	if rl := p.Sink.RateLimit; rl != nil {
		applyDefaults(rl.Config)
	}
	if cb := p.Sink.CircuitBreaker; cb != nil {
		cb.ApplyDefaults()
	}
	p.Errors.Config.ApplyDefaults()
	p.Errors.RetryConfig.ApplyDefaults()
	p.State.ApplyDefaults()
}

// applyOwnDefaults sets the defaults of the settings the pipeline file
// owns itself (not a component's).
func (p *Pipeline) applyOwnDefaults() {
	p.ShutdownTimeout = cmp.Or(p.ShutdownTimeout, 30*time.Second)
	if p.Brokers.Embedded() && p.Embedded.Partitions == 0 {
		p.Embedded.Partitions = 4
	}
	p.Log.Level = cmp.Or(p.Log.Level, "info")
	p.Log.Format = cmp.Or(p.Log.Format, "json")
	p.Log.KafkaLevel = cmp.Or(p.Log.KafkaLevel, "warn")
}

func applyDefaults(cfg any) {
	if d, ok := cfg.(defaulter); ok {
		d.ApplyDefaults()
	}
}
