package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
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

// TestExampleConfigsValidate loads every example config.
func TestExampleConfigsValidate(t *testing.T) {
	files, _ := filepath.Glob("../configs/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		code, out := runCLI(t, "validate", "-c", f)
		if code != 0 {
			t.Errorf("%s: exit %d: %s", f, code, out)
		}
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
