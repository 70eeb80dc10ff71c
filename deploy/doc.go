// Package deploy holds no code: its test checks the deployment files at
// the repository's root and under deploy/ (the compose stack, Prometheus
// and Grafana provisioning, the Kubernetes manifests), since no Docker
// engine or cluster runs where the tests do.
package deploy
