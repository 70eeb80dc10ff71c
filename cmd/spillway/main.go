// Command spillway runs stream-processing pipelines from Kafka (or files, or
// a generator) through operators into rate-limited, batching sinks. It is
// package cli with Spillway's built-in components.
//
// Exit codes: 0 success, 1 runtime failure, 2 bad usage or config.
package main

import (
	"os"

	"github.com/spillway-io/spillway/cli"
	"github.com/spillway-io/spillway/registry"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr, registry.Builtin()))
}
