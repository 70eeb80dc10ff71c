// Command custom-sink is Spillway with two components of its own, added
// from outside the spillway module through the public registry: a sink that
// appends tab-separated lines to a file, and a rate-limiting strategy that
// admits at most a fixed number of records per window. Everything else
// (the Kafka source, operators, the AsyncSink writer, the dead-letter queue,
// the CLI with run, validate and config defaults) is Spillway's own.
//
//	go run . run -c pipeline.yaml
//
// with a pipeline file such as
//
//	name: tsv-demo
//	source:
//	  generate: {count: 10000}
//	sink:
//	  tsv: {path: out.tsv}
//	  rate_limit: {kind: quota, records: 5000, window: 1s}
package main

import (
	"os"

	"github.com/spillway-io/spillway/cli"
	"github.com/spillway-io/spillway/registry"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr, newRegistry()))
}

// newRegistry is Spillway's built-in components plus this program's: one
// line per component.
func newRegistry() *registry.Registry {
	r := registry.Builtin()
	registry.Must(r.AddSink(registry.SinkOf("tsv", "append tab-separated lines to a file", newTSV)))
	registry.Must(r.AddStrategy(registry.StrategyOf("quota", "at most N records per fixed window", newQuota)))
	return r
}
