# The test command CI and the README use. Needs only Go (1.26+); kfake is
# in-process, so no broker or Docker is required.
GO ?= go
KAFKA_SH := integration/realkafka/kafka.sh
PG_SH := integration/postgres/pg.sh

.PHONY: test check race example demo bench test-kafka
test: check race example

check:
	@out=$$(gofmt -l . ); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

race:
	$(GO) test -race -shuffle=on -timeout 12m ./...

# A program outside the module that registers its own sink and strategy
# (its own go.mod, replace ../..): it must build, vet and pass its tests.
example:
	cd examples/custom-sink && $(GO) mod tidy -diff && $(GO) vet ./... && $(GO) test -race -shuffle=on ./...

demo:
	$(GO) run ./cmd/spillway demo

bench:
	$(GO) run ./cmd/spillway bench

# The full path: every package's tests (no -race) against a real Apache
# Kafka single node (fetched once from Maven Central into ~/.cache/spillway)
# and a private PostgreSQL (installed from Debian when missing, as root), plus
# the three-node cluster tooling test. Both are stopped on exit, pass or fail.
# Needs Java 17+, Maven and PostgreSQL's server binaries.
test-kafka:
	@set -e; \
	trap '$(KAFKA_SH) stop --clean; $(PG_SH) stop --clean' EXIT; \
	brokers=$$($(KAFKA_SH) start single); \
	dsn=$$($(PG_SH) start); \
	start=$$(date +%s); \
	SPILLWAY_TEST_BROKERS=$$brokers SPILLWAY_TEST_POSTGRES=$$dsn SPILLWAY_REQUIRE_POSTGRES=1 \
	SPILLWAY_TEST_REALKAFKA=1 $(GO) test -count=1 -shuffle=on -timeout 25m ./...; \
	echo "test-kafka: go test took $$(( $$(date +%s) - start ))s"
