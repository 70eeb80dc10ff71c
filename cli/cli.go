// Package cli is the spillway command line: run, validate, demo, broker,
// produce, bench, config, limits, savepoint, status and version.
// cmd/spillway calls Main with the built-in components; a program that
// adds its own components to a registry calls Main with that registry and
// gets the same commands (see examples/custom-sink).
//
// Exit codes: 0 success, 1 runtime failure, 2 bad usage or config.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/spillway-io/spillway/registry"
)

// Version is the release `spillway version` prints; set it at build time
// with -ldflags "-X github.com/spillway-io/spillway/cli.Version=..." (the
// Dockerfile does). Unset, the module version from the build info is
// printed ("(devel)" for a build from a checkout).
var Version = ""

// usageError is bad usage or config: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// parseFlags parses a command's flags. None of the commands takes
// positional arguments, so a stray one is an error rather than silently
// ignored (a file given without -c, or a flag after it). -h prints the
// flags and returns flag.ErrHelp, which exits 0.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q: %s takes flags only (see 'spillway %s -h')", fs.Arg(0), fs.Name(), fs.Name())
	}
	return nil
}

const usage = `spillway moves records from Kafka through operators into batching, rate-limited sinks.

Usage:
  spillway run -c FILE          run a pipeline until SIGINT/SIGTERM (graceful drain)
                                (--from-savepoint ID | --from-savepoint-file PATH: restore a savepoint first)
  spillway validate -c FILE     check a pipeline file without running it (--print: with defaults)
  spillway config defaults      print every key of a pipeline file with its default
  spillway limits set [flags]   change a running job's rate limit on every worker (control topic)
  spillway savepoint create|list|show|delete [flags]
                                save a job's group offsets and state under an id (--stop: stop the
                                workers gracefully first), list, show or delete the saved ones
  spillway demo [-c FILE]       seed the embedded broker, run the pipeline into a local receiver, report
  spillway broker [flags]       run the embedded Kafka broker (kfake) standalone
  spillway produce [flags]      write generated records to a topic
  spillway bench [flags]        measure the pipeline against a raw franz-go consumer
  spillway status -c FILE       the pipeline's group: members, partitions, committed offsets, lag; each worker's limits, share, breaker, state mode
  spillway receive [flags]      a demo HTTP destination that counts records (--rate: 429 like an API gateway)
  spillway healthcheck [--url U] exit 0 when a worker's /healthz answers 2xx (for container HEALTHCHECKs)
  spillway version              print the version, commit and Go version

Run 'spillway COMMAND -h' for a command's flags.
`

// session is one Main call: the components it may build and what the
// second SIGINT/SIGTERM does. Nothing of it is shared with other calls.
type session struct {
	reg *registry.Registry
	// onSecondSignal, when set, runs (bounded) before the process exits on
	// a second signal: run sets it to commit what is already done.
	onSecondSignal atomic.Pointer[func()]
	// log, when set, is the running job's logger (log.level, log.format),
	// which the signal handler's lines go to; slog's default otherwise.
	log atomic.Pointer[slog.Logger]
}

// logger returns the job's logger once run set it, else slog's default.
func (s *session) logger() *slog.Logger {
	if l := s.log.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// Main runs the command in args (without the program name) with the
// components of reg and returns the exit code. It handles SIGINT and
// SIGTERM while it runs: the first drains, a second exits at once.
func Main(args []string, stdout, stderr io.Writer, reg *registry.Registry) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	s := &session{reg: reg}
	ctx, stop := s.signalContext()
	defer stop()

	var err error
	switch args[0] {
	case "run":
		err = s.cmdRun(ctx, args[1:], stdout, stderr)
	case "validate":
		err = s.cmdValidate(args[1:], stdout, stderr)
	case "demo":
		err = s.cmdDemo(ctx, args[1:], stdout, stderr)
	case "broker":
		err = s.cmdBroker(ctx, args[1:], stdout, stderr)
	case "produce":
		err = s.cmdProduce(ctx, args[1:], stdout, stderr)
	case "bench":
		err = s.cmdBench(ctx, args[1:], stdout, stderr)
	case "config":
		err = s.cmdConfig(args[1:], stdout, stderr)
	case "status":
		err = s.cmdStatus(ctx, args[1:], stdout, stderr)
	case "receive":
		err = s.cmdReceive(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		err = cmdHealthcheck(ctx, args[1:], stderr)
	case "limits":
		err = s.cmdLimits(ctx, args[1:], stdout, stderr)
	case "savepoint":
		err = s.cmdSavepoint(ctx, args[1:], stdout, stderr)
	case "version", "-v", "--version":
		fmt.Fprintln(stdout, versionLine())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "spillway: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "spillway %s: %v\n", args[0], err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// signalContext is cancelled by the first SIGINT/SIGTERM; a second one
// exits at once, after committing only what is done. Whatever was not
// acknowledged is re-delivered from the last commit: nothing is lost.
func (s *session) signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			s.logger().Info("signal received; draining (send again to exit at once)", "signal", sig.String())
			cancel()
		case <-done:
			return
		}
		select {
		case <-ch:
			s.logger().Warn("second signal; exiting without drain, committing only what is done; the rest is re-delivered")
			if f := s.onSecondSignal.Load(); f != nil {
				(*f)()
			}
			os.Exit(130)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}

// durationText writes durations as text ("100ms"), not the JSON
// handler's nanoseconds, so a person reading the log need not convert.
func durationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	switch level {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: durationText}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
