package integration

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(spillwayBin, args...)
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(out)
}

func TestCLIExitCodes(t *testing.T) {
	bad := writeConfig(t, "name: x\nsource:\n  generate: {count: 1}\nsink:\n  stdout: {}\n  writer:\n    max_batch_size: 0\n")
	unknown := writeConfig(t, "name: x\nsource:\n  generate: {count: 1}\nsink:\n  stdout: {}\n  colour: red\n")
	badURL := writeConfig(t, "name: x\nsource:\n  generate: {count: 1}\nsink:\n  http:\n    url: \"ht!tp://\"\n")
	good := writeConfig(t, "name: x\nsource:\n  generate: {count: 3}\nsink:\n  stdout: {}\n  writer:\n    max_time_in_buffer: 10ms\n")
	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"no args", nil, 2, []string{"Usage"}},
		{"unknown command", []string{"frobnicate"}, 2, []string{"unknown command"}},
		{"run without -c", []string{"run"}, 2, []string{"-c"}},
		{"missing file", []string{"validate", "-c", "/nonexistent.yaml"}, 2, []string{"nonexistent.yaml"}},
		{"zero batch size", []string{"validate", "-c", bad}, 2, []string{":7:", "sink.writer.max_batch_size"}},
		{"unknown key", []string{"run", "-c", unknown}, 2, []string{":6:", "colour"}},
		{"malformed url", []string{"validate", "-c", badURL}, 2, []string{":6:", "sink.http.url"}},
		{"valid", []string{"validate", "-c", good}, 0, []string{"ok"}},
		{"examples validate", []string{"validate", "-c", "../configs/quickstart.yaml"}, 0, []string{"ok"}},
		{"run generate to stdout", []string{"run", "-c", good, "-summary", "0"}, 0, []string{`"id":2`}},
		{"version", []string{"version"}, 0, []string{"spillway"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCLI(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// exampleEnv is the environment an example config needs beyond its
// defaults: the variables it interpolates without a default.
var exampleEnv = map[string][]string{
	"secure.yaml": {"KAFKA_PASSWORD=example-password"},
}

// runCLIEnv is runCLI with env instead of the inherited environment.
func runCLIEnv(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(spillwayBin, args...)
	cmd.Env = env
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(out)
}

// environWithout returns the process environment without the variables
// named in drop.
func environWithout(drop ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, name) {
			env = append(env, kv)
		}
	}
	return env
}

// TestExampleConfigsValidate loads every example config, with the
// variables of exampleEnv set and no others of theirs inherited; one that
// needs a variable fails without it, naming it.
func TestExampleConfigsValidate(t *testing.T) {
	files, _ := filepath.Glob("../configs/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		extra := exampleEnv[filepath.Base(f)]
		var names []string
		for _, kv := range extra {
			name, _, _ := strings.Cut(kv, "=")
			names = append(names, name)
		}
		base := environWithout(names...)
		code, out := runCLIEnv(t, append(base, extra...), "validate", "-c", f)
		if code != 0 {
			t.Errorf("%s: exit %d: %s", f, code, out)
		}
		for _, name := range names {
			code, out := runCLIEnv(t, environWithout(name), "validate", "-c", f)
			if code != 2 || !strings.Contains(out, name) {
				t.Errorf("%s without %s: exit %d, want 2 and a message naming it: %s", f, name, code, out)
			}
		}
	}
	if _, err := os.Stat("../configs/secure.yaml"); err != nil {
		t.Errorf("configs/secure.yaml: %v", err)
	}
}

// TestDemo runs the README's first command on a small topic.
func TestDemo(t *testing.T) {
	cmd := exec.Command(spillwayBin, "demo", "-c", "../configs/quickstart.yaml", "--records", "5000", "--summary", "0")
	done := make(chan struct{})
	var out []byte
	go func() { out, _ = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("demo did not finish")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("demo exit %d:\n%s", code, out)
	}
	if !strings.Contains(string(out), "lost:            0") {
		t.Fatalf("demo report lacks lost: 0:\n%s", out)
	}
}

// TestOpsEndpoints runs a job with ops.listen and reads /healthz and
// /readyz from the running process, then stops it with SIGTERM.
func TestOpsEndpoints(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := writeConfig(t, "name: ops\nsource:\n  generate: {count: 0, rate: 50}\nsink:\n  file:\n    path: "+
		filepath.Join(t.TempDir(), "out.jsonl")+"\nops:\n  listen: "+addr+"\n")
	cmd := exec.Command(spillwayBin, "run", "-c", cfg, "-summary", "0")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	get := func(path string) (int, string, error) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	var code int
	var body string
	waitFor(t, "/readyz to answer ready", time.Minute, func() bool {
		code, body, err = get("/readyz")
		return err == nil && code == http.StatusOK
	})
	if !strings.Contains(body, `"status":"ready"`) || !strings.Contains(body, `"breaker":"none"`) {
		t.Fatalf("/readyz body: %s", body)
	}
	if code, body, err = get("/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz: %d %q %v", code, body, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run after SIGTERM: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "ops endpoints listening") {
		t.Errorf("no log line for the ops server:\n%s", out.String())
	}
}
