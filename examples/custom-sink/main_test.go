package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spillway-io/spillway/backpressure"
	"github.com/spillway-io/spillway/backpressure/strategytest"
	"github.com/spillway-io/spillway/cli"
	"github.com/spillway-io/spillway/registry"
)

// TestRunsThroughSpillway runs the CLI with the registry of this program:
// the file names the custom sink and strategy and Spillway's generator, and
// every generated record arrives once in the file, bytes intact.
func TestRunsThroughSpillway(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.tsv")
	cfg := filepath.Join(dir, "pipeline.yaml")
	write(t, cfg, `name: tsv-test
source:
  generate: {count: 3000, keys: 10, value_bytes: 64}
sink:
  tsv: {path: `+out+`}
  writer: {max_batch_size: 100}
  rate_limit: {kind: quota, records: 1000, window: 100ms}
log: {level: warn}
`)
	var stdout, stderr bytes.Buffer
	if code := cli.Main([]string{"run", "-c", cfg, "--summary", "0"}, &stdout, &stderr, newRegistry()); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 3000 {
		t.Fatalf("%d lines, want 3000", len(lines))
	}
	seen := map[string]bool{}
	for _, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) != 5 {
			t.Fatalf("line %q has %d fields, want 5", l, len(f))
		}
		if seen[f[2]] {
			t.Fatalf("offset %s written twice", f[2])
		}
		seen[f[2]] = true
		v, err := base64.StdEncoding.DecodeString(f[4])
		if err != nil || len(v) != 64 {
			t.Fatalf("value %q: %d bytes, err %v; want 64 bytes of base64", f[4], len(v), err)
		}
	}
}

// TestValidateNamesCustomKeys: the loader checks the custom components'
// configs like the built-in ones, with key path, line and column, exit 2.
func TestValidateNamesCustomKeys(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	write(t, cfg, `name: bad
source:
  generate: {count: 1}
sink:
  tsv:
    encoding: hex
  rate_limit:
    kind: quota
    window: 1s
    recrods: 5
`)
	var stdout, stderr bytes.Buffer
	code := cli.Main([]string{"validate", "-c", cfg}, &stdout, &stderr, newRegistry())
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr: %s", code, stderr.String())
	}
	for _, want := range []string{
		cfg + ":5:3: sink.tsv.path: required",
		cfg + `:6:5: sink.tsv.encoding: must be "base64" or "text", got "hex"`,
		cfg + ":10:5: sink.rate_limit.recrods: unknown key; did you mean records?",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestDefaultsListCustomKinds: `config defaults` shows the custom kinds
// with their defaults next to the built-in ones.
func TestDefaultsListCustomKinds(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := cli.Main([]string{"config", "defaults"}, &stdout, &stderr, newRegistry()); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"tsv:", "encoding: base64", "quota:", "window: 1s", "http:"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("config defaults lacks %q", want)
		}
	}
}

// TestQuotaAdmitsPerWindow: the custom strategy admits at most its quota
// per window and Acquire waits for the next window, not longer.
func TestQuotaAdmitsPerWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := newQuota(&QuotaConfig{Records: 100, Window: time.Second}, registry.Env{})
		req := backpressure.Request{Records: 60}
		if !q.TryAcquire(req) || q.TryAcquire(req) {
			t.Fatal("want the first 60 admitted and the second refused in one window")
		}
		start := time.Now()
		if err := q.Acquire(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(start); waited != time.Second {
			t.Errorf("Acquire waited %v, want the rest of the window (1s)", waited)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := q.Acquire(ctx, req); err == nil {
				t.Error("Acquire admitted past the quota")
			}
		})
		synctest.Wait()
		cancel()
		wg.Wait()
	})
}

// TestQuotaConforms: the strategy written outside Spillway passes the suite
// every built-in strategy passes, alone and inside a Composite.
func TestQuotaConforms(t *testing.T) {
	strategytest.Run(t, strategytest.Features{}, func(t *testing.T) strategytest.Subject {
		s, err := newQuota(&QuotaConfig{Records: 100, Window: time.Second}, registry.Env{})
		if err != nil {
			t.Fatal(err)
		}
		return strategytest.Subject{Strategy: s}
	})
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
