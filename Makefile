# The test command CI and the README use. Needs only Go (1.26+); kfake is
# in-process, so no broker or Docker is required.
GO ?= go

.PHONY: test check race example demo bench
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
