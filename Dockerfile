# Spillway worker image: a static binary on a distroless base, non-root.
#   docker build -t spillway --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg COMMIT=$(git rev-parse --short HEAD) .
#   docker run --rm spillway version
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so a code change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/spillway-io/spillway/cli.Version=${VERSION} -X github.com/spillway-io/spillway/cli.Commit=${COMMIT}" \
      -o /out/spillway ./cmd/spillway

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/spillway /usr/local/bin/spillway
COPY configs/ /etc/spillway/
USER nonroot:nonroot
# ops.listen in the configs the image is run with; the probes and Prometheus
# read it.
EXPOSE 9090
# distroless has no shell or curl: the binary checks its own /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/spillway", "healthcheck", "--url", "http://127.0.0.1:9090/healthz"]
ENTRYPOINT ["/usr/local/bin/spillway"]
CMD ["run", "-c", "/etc/spillway/quickstart.yaml"]
