package cli

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/registry"
)

// TestVersionLine: the line names the release, the commit and the Go
// version; a release stamped at build time wins over the module's.
func TestVersionLine(t *testing.T) {
	line := versionLine()
	if !strings.HasPrefix(line, "spillway ") || !strings.Contains(line, "commit ") || !strings.Contains(line, runtime.Version()) {
		t.Errorf("version line %q, want spillway <version> (commit <rev>, <go version> ...)", line)
	}
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v1.2.3"
	if line := versionLine(); !strings.HasPrefix(line, "spillway v1.2.3 (") {
		t.Errorf("version line %q with Version stamped, want it first", line)
	}
}

// TestHealthcheck: 0 for a 2xx /healthz, 1 for another status or no
// answer, 2 for a bad flag.
func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"healthcheck", "--url", srv.URL + "/healthz"}, 0},
		{[]string{"healthcheck", "--url", srv.URL + "/nope"}, 1},
		{[]string{"healthcheck", "--url", "http://127.0.0.1:1/healthz", "--timeout", "500ms"}, 1},
		{[]string{"healthcheck", "--bogus"}, 2},
	} {
		var out, errb strings.Builder
		if got := Main(tc.args, &out, &errb, registry.Builtin()); got != tc.want {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, got, tc.want, errb.String())
		}
	}
}
