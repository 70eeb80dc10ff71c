package integration

import (
	"github.com/spillway-io/spillway/internal/config"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
	"github.com/spillway-io/spillway/sources/kafka"
)

// kafkaSrc returns cfg's Kafka source config, for a test to adjust.
func kafkaSrc(cfg *config.Pipeline) *kafka.Config {
	return cfg.Source.Config.(*kafka.Config)
}

// httpSink returns cfg's HTTP sink config, for a test to adjust.
func httpSink(cfg *config.Pipeline) *sinkhttp.Config {
	return cfg.Sink.Config.(*sinkhttp.Config)
}
