// Package ops serves a job's operational endpoints: /healthz (liveness: the
// process serves), /readyz (readiness: the job works normally, or a JSON
// body saying why not) and, when given a handler, /metrics (Prometheus, from
// internal/telemetry). The REST job gateway will join them on the same
// server.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spillway-io/spillway/internal/job"
)

// Option adds to what the ops server serves.
type Option func(*http.ServeMux)

// WithMetrics serves h at GET /metrics.
func WithMetrics(h http.Handler) Option {
	return func(mux *http.ServeMux) { mux.Handle("GET /metrics", h) }
}

// Handler routes /healthz, /readyz and what opts add; health is called on
// every /readyz.
func Handler(health func() job.Health, opts ...Option) http.Handler {
	mux := http.NewServeMux()
	for _, o := range opts {
		o(mux)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		h := health()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !h.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(h)
	})
	return mux
}

// Server is a running ops server.
type Server struct {
	srv  *http.Server
	addr string
	done chan error
}

// Start listens on addr and serves Handler(health, opts...) until Close.
func Start(addr string, health func() job.Health, log *slog.Logger, opts ...Option) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ops.listen: %w", err)
	}
	s := &Server{
		srv: &http.Server{
			Handler:           Handler(health, opts...),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		addr: ln.Addr().String(),
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	paths := "/healthz /readyz"
	if len(opts) > 0 {
		paths += " /metrics"
	}
	log.Info("ops endpoints listening", "addr", s.addr, "paths", paths)
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.addr }

// Close stops the server, waiting up to ctx for open requests.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
