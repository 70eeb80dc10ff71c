// Package integration holds end-to-end tests that run Spillway over a real
// Kafka wire protocol: a fresh in-process kfake cluster per test by default,
// an external cluster when SPILLWAY_TEST_BROKERS is set, or a Kafka
// container through testcontainers-go when SPILLWAY_TEST_TESTCONTAINERS=1
// and a Docker engine is reachable.
package integration
