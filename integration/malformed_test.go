package integration

// Issue #4, scenario 10: malformed input of every kind is either a clear
// error or a dead-letter entry, never a panic, a silent drop or a silent
// acceptance.
//
//   - TestMalformedConfigs: broken pipeline files through `spillway validate`
//     (and some through `spillway run`): exit code 2 and a message naming the
//     file, the line and the key path.
//   - TestMalformedRecords: broken records mixed among valid ones through a
//     real Kafka → filter → HTTP job with a dead-letter topic: each one is
//     delivered intact or dead-lettered with spillway.* headers saying why;
//     every valid record is delivered and every offset committed.
//   - TestMalformedFlags: bad command-line flags: exit code 2 and a message
//     naming the flag.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/internal/config"
	"github.com/spillway-io/spillway/pipeline/exprop"
)

// malformedCLI runs the spillway binary and returns its exit code and
// combined output. The limit only stops a command that wrongly keeps
// running (a config accepted by mistake); nothing is asserted about time.
func malformedCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, spillwayBin, args...)
	out, _ := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("spillway %s did not exit; output:\n%s", strings.Join(args, " "), tail(string(out), 4000))
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// yamlLines joins lines with newlines, so that line N of the file is the
// Nth argument and the expected line numbers can be read off the case.
func yamlLines(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

// malformedAt is one problem a config error message must report: the key
// path at a line, as "FILE:LINE: PATH: ...MSG...". line 0 means the config
// package reports no line for it ("FILE: MSG"); path "" means the problem is
// not about one key (YAML syntax, the file as a whole).
type malformedAt struct {
	line int
	path string
	msg  string
}

func (w malformedAt) String() string {
	return fmt.Sprintf("line %d, path %q, message containing %q", w.line, w.path, w.msg)
}

// find reports whether out has the error w for file: one output line that
// starts with the location (file:line:, then the column when known) and
// holds the message.
func (w malformedAt) find(out, file string) bool {
	loc := regexp.QuoteMeta(file) + ": "
	if w.line > 0 {
		loc = regexp.QuoteMeta(file+":"+strconv.Itoa(w.line)) + `(:\d+)?: `
	}
	if w.path != "" {
		loc += regexp.QuoteMeta(w.path + ": ")
	}
	re := regexp.MustCompile(loc)
	for l := range strings.Lines(out) {
		// The first error line carries the "spillway validate: " prefix.
		if m := re.FindStringIndex(l); m != nil && strings.Contains(l[m[1]:], w.msg) {
			return true
		}
	}
	return false
}

// TestMalformedConfigs: each broken pipeline file is rejected with exit
// code 2 and every listed problem, located by file, line and key path. A
// case listed with run also goes through `spillway run`, which must reject
// it the same way before starting anything.
func TestMalformedConfigs(t *testing.T) {
	const unset = "SPILLWAY_MALFORMED_TEST_UNSET_VAR"
	if _, ok := os.LookupEnv(unset); ok {
		t.Fatalf("%s must not be set for this test", unset)
	}
	cases := []struct {
		name string
		yaml string
		want []malformedAt
		run  bool // also through `spillway run`
	}{
		// YAML syntax.
		{
			name: "yaml unclosed flow sequence",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  writer: [1, 2",
			),
			// The [ opens on line 6 and the file ends there.
			want: []malformedAt{{6, "", "invalid YAML"}},
		},
		{
			name: "yaml bad indentation",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate:",
				"    count: 1",
				"   value_bytes: 10",
				"sink:",
				"  stdout: {}",
			),
			// Line 5 is indented by 3 where the mapping above uses 4 (or 2).
			want: []malformedAt{{5, "", "invalid YAML"}},
		},
		{
			name: "yaml tab indentation",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"\tstdout: {}",
			),
			want: []malformedAt{{5, "", "invalid YAML"}},
			run:  true,
		},
		{
			name: "two yaml documents",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"---",
				"name: y",
			),
			want: []malformedAt{{6, "", "only one YAML document"}},
		},
		{
			name: "yaml merge key",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: &g {count: 1}",
				"sink:",
				"  stdout: {}",
				"  writer:",
				"    <<: *g",
			),
			want: []malformedAt{{7, "sink.writer.<<", "merge keys are not supported"}},
		},
		{
			name: "duplicate key",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"name: y",
			),
			want: []malformedAt{{6, "name", "duplicate key, first written on line 1"}},
		},

		// Whole file.
		{
			name: "empty file",
			yaml: "",
			// No line: there is none to point at.
			want: []malformedAt{{0, "", "the file is empty"}},
		},
		{
			name: "top level is a list",
			yaml: yamlLines(
				"- name: x",
				"- source: {generate: {count: 1}}",
			),
			want: []malformedAt{{1, "", "expected a mapping at the top level, got a list"}},
		},
		{
			name: "binary garbage, invalid utf-8",
			yaml: "\xff\xfe\xfd\x00\x80\x81name: x\n\x9c\x00",
			// The YAML reader reports no line for encoding errors; the
			// loader finds the first byte that is not UTF-8 itself.
			want: []malformedAt{{1, "", "invalid UTF-8 (byte 0xff at column 1)"}},
		},
		{
			name: "binary garbage, control characters",
			yaml: "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00",
			// No line either.
			want: []malformedAt{{0, "", "invalid YAML: control characters are not allowed"}},
		},

		// Wrong types.
		{
			name: "string for an integer",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  writer:",
				"    max_batch_size: lots",
			),
			want: []malformedAt{{7, "sink.writer.max_batch_size", `expected an integer, got "lots"`}},
		},
		{
			name: "fraction for an integer",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  writer:",
				"    max_in_flight_requests: 1.5",
			),
			want: []malformedAt{{7, "sink.writer.max_in_flight_requests", "expected an integer"}},
		},
		{
			name: "integer out of range",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  writer:",
				"    max_batch_bytes: 99999999999999999999",
			),
			want: []malformedAt{{7, "sink.writer.max_batch_bytes", "out of range"}},
		},
		{
			name: "list for a map",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: http://127.0.0.1:1/ingest",
				"    headers: [X-A, X-B]",
			),
			want: []malformedAt{{7, "sink.http.headers", "expected a mapping, got a list"}},
		},
		{
			name: "map for a list",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				`operators: {filter: "true"}`,
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{4, "operators", "expected a list, got a mapping"}},
		},
		{
			name: "list for a string",
			yaml: yamlLines(
				"name: [a, b]",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{1, "name", "expected a string, got a list"}},
		},
		{
			name: "yes is not a boolean",
			yaml: yamlLines(
				"name: x",
				"brokers: 127.0.0.1:9092",
				"source:",
				"  kafka:",
				"    topics: [a]",
				"    group: g",
				"    create_topics: yes",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{7, "source.kafka.create_topics", `expected true or false, got "yes"`}},
		},

		// Unknown keys.
		{
			name: "misspelt key",
			yaml: yamlLines(
				"name: x",
				"brokers: 127.0.0.1:9092",
				"source:",
				"  kafka:",
				"    topcis: [orders]",
				"    group: g",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{
				{5, "source.kafka.topcis", "unknown key; did you mean topics?"},
				{4, "source.kafka.topics", "required"},
			},
			run: true,
		},

		// Durations.
		{
			name: "negative duration",
			yaml: yamlLines(
				"name: x",
				"brokers: 127.0.0.1:9092",
				"source:",
				"  kafka:",
				"    topics: [orders]",
				"    group: g",
				"    checkpoint_interval: -5s",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{7, "source.kafka.checkpoint_interval", "must be positive, got -5s"}},
		},
		{
			name: "zero duration",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"errors:",
				"  max_retry_backoff: 0s",
			),
			want: []malformedAt{{7, "errors.max_retry_backoff", "must be positive"}},
		},
		{
			name: "duration without a unit",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  writer:",
				"    max_time_in_buffer: 100",
			),
			want: []malformedAt{{7, "sink.writer.max_time_in_buffer", "with a unit"}},
		},
		{
			name: "unparseable duration",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"shutdown_timeout: 5 minutes",
			),
			want: []malformedAt{{6, "shutdown_timeout", `got "5 minutes"`}},
		},

		// Inconsistent settings.
		{
			name: "retry backoff above its maximum",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"errors:",
				"  retry_backoff: 5s",
				"  max_retry_backoff: 1s",
			),
			want: []malformedAt{{7, "errors.retry_backoff", "must not exceed max_retry_backoff (1s), got 5s"}},
		},
		{
			name: "buffer smaller than a batch",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  writer:",
				"    max_batch_size: 500",
				"    max_buffered_requests: 100",
			),
			want: []malformedAt{{8, "sink.writer.max_buffered_requests", "must be greater than max_batch_size (500)"}},
		},
		{
			name: "negative integer",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  writer:",
				"    max_in_flight_requests: -1",
			),
			want: []malformedAt{{7, "sink.writer.max_in_flight_requests", "must be positive, got -1"}},
		},

		// Missing or doubled sections. A missing key has no line of its own:
		// the error points at the enclosing section, line 1 for the top level.
		{
			name: "no source",
			yaml: yamlLines(
				"name: x",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{1, "source", "exactly one of kafka, file, generate is required, got none"}},
		},
		{
			name: "no sink",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
			),
			want: []malformedAt{{1, "sink", "exactly one of http, file, kafka, postgres, stdout is required, got none"}},
			run:  true,
		},
		{
			name: "kafka source without topics, group or brokers",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  kafka:",
				"    start_offset: latest",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{
				{1, "brokers", "required with a kafka source"},
				{3, "source.kafka.topics", "required"},
				{3, "source.kafka.group", "required"},
			},
		},
		{
			name: "two sources",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"  file:",
				"    path: in.jsonl",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{2, "source", "got file and generate"}},
		},
		{
			name: "two sinks",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  file:",
				"    path: out.jsonl",
			),
			want: []malformedAt{{4, "sink", "got file and stdout"}},
		},
		{
			name: "tolerance all without a dead-letter topic",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"errors:",
				"  tolerance: all",
			),
			want: []malformedAt{{6, "errors.dead_letter_topic", "required with tolerance all"}},
		},
		{
			name: "dead-letter topic is the source topic",
			yaml: yamlLines(
				"name: x",
				"brokers: 127.0.0.1:9092",
				"source:",
				"  kafka:",
				"    topics: [orders]",
				"    group: g",
				"sink:",
				"  stdout: {}",
				"errors:",
				"  tolerance: all",
				"  dead_letter_topic: orders",
			),
			want: []malformedAt{{11, "errors.dead_letter_topic", `must differ from the source topic "orders"`}},
		},

		// Addresses and names.
		{
			name: "broker without a port",
			yaml: yamlLines(
				"name: x",
				"brokers: localhost",
				"source:",
				"  kafka:",
				"    topics: [orders]",
				"    group: g",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{2, "brokers", "missing port"}},
		},
		{
			name: "invalid topic name",
			yaml: yamlLines(
				"name: x",
				"brokers: 127.0.0.1:9092",
				"source:",
				"  kafka:",
				"    topics:",
				"      - orders",
				"      - orders/eu",
				"    group: g",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{7, "source.kafka.topics[1]", `invalid topic name "orders/eu"`}},
		},
		{
			name: "sink url without a scheme",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: localhost:8080/ingest",
			),
			want: []malformedAt{{6, "sink.http.url", "scheme must be http or https"}},
		},
		{
			name: "sink url port out of range",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: http://127.0.0.1:99999/ingest",
			),
			// The port can never be dialled; brokers get the same check.
			want: []malformedAt{{6, "sink.http.url", "port"}},
		},

		// HTTP status lists.
		{
			name: "status code out of range",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: http://127.0.0.1:1/ingest",
				"    successful_on: [200, 999]",
			),
			want: []malformedAt{{7, "sink.http.successful_on", "999 is not an HTTP status"}},
		},
		{
			name: "status code in two lists",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: http://127.0.0.1:1/ingest",
				"    backoff_on: [500]",
				"    drop_on:",
				"      - 400",
				"      - 500",
			),
			want: []malformedAt{{8, "sink.http.drop_on", "status 500 is also in backoff_on"}},
		},

		// HTTP settings the HTTP sink rejects when it is built: validate must
		// reject them too, with a line, rather than `run` failing later with
		// exit code 1 and no location.
		{
			name: "header the sink sets itself",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: http://127.0.0.1:1/ingest",
				"    headers:",
				"      Idempotency-Key: fixed",
			),
			want: []malformedAt{{8, "sink.http.headers.Idempotency-Key", "set by the sink"}},
			run:  true,
		},
		{
			name: "header value with a line break",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: http://127.0.0.1:1/ingest",
				"    headers:",
				`      X-Token: "abc\ndef"`,
			),
			want: []malformedAt{{8, "sink.http.headers.X-Token", "control characters"}},
			run:  true,
		},
		{
			name: "bearer token with a line break",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: http://127.0.0.1:1/ingest",
				`    bearer_token: "tok\r\nX-Evil: 1"`,
			),
			want: []malformedAt{{7, "sink.http.bearer_token", "control characters"}},
		},
		{
			name: "basic auth user name with a colon",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: http://127.0.0.1:1/ingest",
				"    basic_auth:",
				"      username: ann:admin",
				"      password: secret",
			),
			want: []malformedAt{{8, "sink.http.basic_auth.username", "':'"}},
		},

		// Rate limiting and the breaker.
		{
			name: "unknown rate-limit strategy",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  rate_limit:",
				"    kind: leaky_bucket",
			),
			want: []malformedAt{{7, "sink.rate_limit.kind", `got "leaky_bucket"`}},
		},
		{
			name: "rate-limit setting of another strategy",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  rate_limit:",
				"    kind: token_bucket",
				"    records_per_second: 100",
				"    window: 1s",
			),
			want: []malformedAt{{9, "sink.rate_limit.window", "only with kind sliding_window"}},
		},
		{
			name: "breaker failure ratio above 1",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  stdout: {}",
				"  circuit_breaker:",
				"    failure_ratio: 1.5",
			),
			want: []malformedAt{{7, "sink.circuit_breaker.failure_ratio", "must be in (0, 1], got 1.5"}},
		},

		// Operators.
		{
			name: "filter syntax error",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"operators:",
				"  - name: keep-all",
				`    filter: "true"`,
				"  - name: broken",
				`    filter: "json.amount >"`,
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{8, "operators[1].filter", "invalid expression"}},
		},
		{
			name: "filter that is not boolean",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"operators:",
				"  - filter: len(value)",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{5, "operators[0].filter", "expected bool"}},
		},
		{
			name: "map with an unknown variable",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"operators:",
				"  - map:",
				`      value: 'valeu + "!"'`,
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{6, "operators[0].map.value", "unknown name valeu"}},
		},
		{
			name: "route operator",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"operators:",
				"  - route: {}",
				"sink:",
				"  stdout: {}",
			),
			want: []malformedAt{{5, "operators[0].route", "not supported yet"}},
		},

		// Environment variables.
		{
			name: "unset variable without a default",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: ${"+unset+"}",
			),
			want: []malformedAt{{6, "sink.http.url", unset + " is not set"}},
			run:  true,
		},
		{
			name: "unset variable inside a block scalar",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  http:",
				"    url: http://127.0.0.1:1/ingest",
				"    bearer_token: |",
				"      first-part",
				"      ${"+unset+"}",
			),
			want: []malformedAt{{9, "sink.http.bearer_token", unset + " is not set"}},
		},
		{
			name: "unterminated variable",
			yaml: yamlLines(
				"name: x",
				"source:",
				"  generate: {count: 1}",
				"sink:",
				"  file:",
				"    path: /tmp/${HOME/out.jsonl",
			),
			want: []malformedAt{{6, "sink.file.path", "unterminated ${"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			file := writeConfig(t, tc.yaml)
			cmds := [][]string{{"validate", "-c", file}}
			if tc.run {
				cmds = append(cmds, []string{"run", "-c", file, "-summary", "0"})
			}
			for _, args := range cmds {
				code, out := malformedCLI(t, args...)
				if code != 2 {
					t.Errorf("spillway %s: exit code %d, want 2; output:\n%s", args[0], code, tail(out, 2000))
					continue
				}
				for _, w := range tc.want {
					if !w.find(out, file) {
						t.Errorf("spillway %s: output lacks %v; output:\n%s", args[0], w, tail(out, 2000))
					}
				}
				if strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") {
					t.Errorf("spillway %s panicked:\n%s", args[0], tail(out, 4000))
				}
			}
		})
	}
}

// TestMalformedFlags: bad command-line flags exit with code 2 and a message
// naming the flag (or the file) at fault.
func TestMalformedFlags(t *testing.T) {
	good := writeConfig(t, yamlLines(
		"name: x",
		"source:",
		"  generate: {count: 3}",
		"sink:",
		"  stdout: {}",
		"  writer:",
		"    max_time_in_buffer: 10ms",
	))
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		want []string // each must appear in the output
	}{
		{"unknown flag", []string{"validate", "--bogus", "-c", good}, []string{"flag provided but not defined: -bogus"}},
		{"unknown flag on run", []string{"run", "-c", good, "--colour", "red"}, []string{"flag provided but not defined: -colour"}},
		{"-c without its value", []string{"validate", "-c"}, []string{"flag needs an argument: -c"}},
		{"-summary without its value", []string{"run", "-c", good, "-summary"}, []string{"flag needs an argument: -summary"}},
		{"non-duration -summary", []string{"run", "-c", good, "-summary", "often"}, []string{`invalid value "often" for flag -summary`}},
		{"-summary without a unit", []string{"run", "-c", good, "-summary", "5"}, []string{`invalid value "5" for flag -summary`}},
		{"non-numeric demo --records", []string{"demo", "-c", "../configs/quickstart.yaml", "--records", "many"}, []string{`invalid value "many" for flag -records`}},
		{"zero demo --records", []string{"demo", "-c", "../configs/quickstart.yaml", "--records", "0"}, []string{"--records must be >= 1"}},
		{"non-numeric produce --count", []string{"produce", "--topic", "t", "--count", "ten"}, []string{`invalid value "ten" for flag -count`}},
		{"produce --value-bytes too small", []string{"produce", "--topic", "t", "--value-bytes", "4"}, []string{"--value-bytes >= 16"}},
		{"non-numeric broker --partitions", []string{"broker", "--partitions", "four"}, []string{`invalid value "four" for flag -partitions`}},
		{"broker --port out of range", []string{"broker", "--port", "70000"}, []string{"--port must be 0-65535"}},
		{"non-numeric bench --records", []string{"bench", "--records", "1e6x"}, []string{`invalid value "1e6x" for flag -records`}},
		{"unknown bench --scenario", []string{"bench", "--scenario", "latency"}, []string{`--scenario must be throughput, kafka, memory or ordering, got "latency"`}},
		{"-c is a directory", []string{"validate", "-c", dir}, []string{dir, "is a directory"}},
		{"run -c is a directory", []string{"run", "-c", dir}, []string{dir, "is a directory"}},
		{"empty -c", []string{"validate", "-c", ""}, []string{"-c FILE is required"}},
		{"file without -c", []string{"validate", good}, []string{"unexpected argument", "takes flags only"}},
		// A second file is not validated; saying "ok" about the first one
		// would let the user believe both were checked.
		{"stray argument after validate flags", []string{"validate", "-c", good, good + ".other"}, []string{good + ".other"}},
		{"stray argument after run flags", []string{"run", "-c", good, "-summary", "0", "extra"}, []string{"extra"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out := malformedCLI(t, tc.args...)
			if code != 2 {
				t.Fatalf("spillway %s: exit code %d, want 2; output:\n%s", strings.Join(tc.args, " "), code, tail(out, 2000))
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, tail(out, 2000))
				}
			}
			if strings.Contains(out, "panic:") {
				t.Errorf("panicked:\n%s", tail(out, 4000))
			}
		})
	}
}

// TestMalformedFlagsHelp: -h on a command prints its flags and exits 0, like
// 'spillway -h'; asking for help is not an error.
func TestMalformedFlagsHelp(t *testing.T) {
	for _, cmd := range []string{"validate", "run", "demo", "broker", "produce", "bench"} {
		code, out := malformedCLI(t, cmd, "-h")
		if code != 0 || !strings.Contains(out, "Usage of "+cmd) {
			t.Errorf("spillway %s -h: exit %d, output:\n%s", cmd, code, tail(out, 1000))
		}
	}
}

// malformedReceiver is an HTTP endpoint that keeps every element it is sent,
// by the element's "id"; elements without a numeric id are kept apart.
type malformedReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	byID     map[int64][][]byte
	noID     [][]byte // elements without a numeric id
	bad      []string // requests whose body is not a JSON array
	invalidU int      // requests whose body is not valid UTF-8
}

func newMalformedReceiver(t *testing.T) *malformedReceiver {
	rc := &malformedReceiver{byID: map[int64][][]byte{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *malformedReceiver) URL() string { return rc.srv.URL + "/ingest" }

func (rc *malformedReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	// Accept everything, but remember what a strict receiver would reject,
	// so the test reports it precisely instead of as dead-lettered batches.
	var elems []json.RawMessage
	if err := json.Unmarshal(body, &elems); err != nil {
		rc.mu.Lock()
		rc.bad = append(rc.bad, fmt.Sprintf("%v: %.200q", err, body))
		rc.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !utf8.Valid(body) {
		rc.invalidU++
	}
	for _, e := range elems {
		var v struct {
			ID json.Number `json:"id"`
		}
		id, err := int64(0), json.Unmarshal(e, &v)
		if err == nil {
			id, err = v.ID.Int64()
		}
		if err != nil {
			rc.noID = append(rc.noID, bytes.Clone(e))
			continue
		}
		rc.byID[id] = append(rc.byID[id], bytes.Clone(e))
	}
	w.WriteHeader(http.StatusOK)
}

func (rc *malformedReceiver) got(id int64) [][]byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.byID[id]
}

// malformedRecordCase is one malformed record and what must become of it.
type malformedRecordCase struct {
	name string
	id   int64 // the "id" the receiver would see if it were delivered; 0 when the value has none
	rec  *kgo.Record

	// Delivered: the record must reach the receiver (exact: byte for byte)
	// and must not be dead-lettered.
	delivered bool
	exact     bool
	// Otherwise it must be dead-lettered exactly once, with this class and
	// a message containing every reason.
	class  string
	reason []string
	// sized: the message must also state the record's own size.
	sized bool
}

func malformedSize(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// TestMalformedRecords runs malformed records, mixed among valid ones,
// through Kafka → filter `json.id >= 0` → HTTP with a dead-letter topic
// (errors.tolerance all). The filter needs every value as JSON, so each
// value that is not a JSON object with a numeric id must fail it and be
// dead-lettered by the operator; values the filter legitimately accepts
// must reach the receiver intact; records over max_record_bytes must be
// dead-lettered as oversized. Every valid record is delivered, every
// offset is committed, nothing is lost.
func TestMalformedRecords(t *testing.T) {
	const (
		nValid    = 300
		maxRecord = 64 << 10
		opName    = "needs-id"
	)
	c := newCluster(t, 1)
	topic, group, dlq := name(t, "topic"), name(t, "group"), name(t, "dlq")
	c.createTopic(t, topic, 1)
	c.createTopic(t, dlq, 1)

	val := func(s string) []byte { return []byte(s) }
	key := func(s string) []byte { return []byte(s) }
	nested := func(id, depth int) []byte {
		return fmt.Appendf(nil, `{"id":%d,"a":%s%s}`, id, strings.Repeat("[", depth), strings.Repeat("]", depth))
	}
	invalidJSON := []string{"not valid JSON"}
	cases := []malformedRecordCase{
		{
			name: "truncated JSON", rec: &kgo.Record{Key: key("bad-truncated"), Value: val(`{"id":10001,"amount":`)},
			class: "operator", reason: append([]string{opName, "unexpected EOF"}, invalidJSON...),
		},
		{
			name: "binary value, invalid UTF-8", rec: &kgo.Record{Key: key("bad-binary"), Value: []byte{0xff, 0xfe, 0x00, 0x01, 0x80, 'x'}},
			class: "operator", reason: append([]string{opName}, invalidJSON...),
		},
		{
			// Go's JSON decoder replaces invalid UTF-8 inside strings, so the
			// filter legitimately keeps this record. The HTTP sink must not
			// send it (a body that is not UTF-8 is invalid JSON, RFC 8259
			// §8.1) nor replace its bytes: with value_encoding auto it is
			// dead-lettered alone, saying where the bad byte is.
			name: "invalid UTF-8 inside a JSON string", id: 10003,
			rec:   &kgo.Record{Key: key("bad-utf8-string"), Value: val("{\"id\":10003,\"name\":\"caf\xe9 \xc3\x28\"}")},
			class: "fatal", reason: []string{"JSON value is not valid UTF-8: byte 0xe9 at offset 23", "binary_values: base64"},
		},
		{
			name: "null value (tombstone)", rec: &kgo.Record{Key: key("bad-null-value"), Value: nil},
			class: "operator", reason: append([]string{opName, "empty value"}, invalidJSON...),
		},
		{
			name: "empty value", rec: &kgo.Record{Key: key("bad-empty-value"), Value: []byte{}},
			class: "operator", reason: append([]string{opName, "empty value"}, invalidJSON...),
		},
		{
			// The key is neither read by the filter nor sent by the HTTP sink.
			name: "null key", id: 10006, rec: &kgo.Record{Key: nil, Value: val(`{"id":10006}`)},
			delivered: true, exact: true,
		},
		{
			name: "JSON array", rec: &kgo.Record{Key: key("bad-array"), Value: val(`[{"id":10007}]`)},
			class: "operator", reason: []string{opName, "json.id >= 0", "value is a JSON array, not an object"},
		},
		{
			name: "JSON number", rec: &kgo.Record{Key: key("bad-number"), Value: val(`10008`)},
			class: "operator", reason: []string{opName, "json.id >= 0", "cannot fetch id", "value is a JSON number, not an object"},
		},
		{
			name: "JSON string", rec: &kgo.Record{Key: key("bad-string"), Value: val(`"10009"`)},
			class: "operator", reason: []string{opName, "json.id >= 0", "value is a JSON string, not an object"},
		},
		{
			name: "JSON null literal", rec: &kgo.Record{Key: key("bad-json-null"), Value: val(`null`)},
			class: "operator", reason: []string{opName, "json.id >= 0", "cannot fetch id", "value is a JSON null, not an object"},
		},
		{
			name: "field of the wrong type", rec: &kgo.Record{Key: key("bad-type"), Value: val(`{"id":"abc"}`)},
			class: "operator", reason: []string{opName, "json.id >= 0", "string >= int"},
		},
		{
			name: "field missing", rec: &kgo.Record{Key: key("bad-missing"), Value: val(`{"ident":10012}`)},
			class: "operator", reason: []string{opName, "json.id >= 0", ">= int"},
		},
		{
			name: "data after the JSON value", rec: &kgo.Record{Key: key("bad-trailing"), Value: val(`{"id":10013} {"id":10013}`)},
			class: "operator", reason: append([]string{opName, "after the JSON value"}, invalidJSON...),
		},
		{
			name: "number out of range", rec: &kgo.Record{Key: key("bad-range"), Value: val(`{"id":1e400}`)},
			class: "operator", reason: append([]string{opName, "1e400 out of range"}, invalidJSON...),
		},
		{
			// 5000 levels is within encoding/json's nesting limit (10000) and
			// within max_record_bytes: a legitimate, if odd, record.
			name: "deeply nested JSON", id: 10015, rec: &kgo.Record{Key: key("deep"), Value: nested(10015, 5000)},
			delivered: true, exact: true,
		},
		{
			name: "JSON nested beyond the decoder's limit", rec: &kgo.Record{Key: key("bad-too-deep"), Value: nested(10016, 20000)},
			class: "operator", reason: append([]string{opName, "exceeded max depth"}, invalidJSON...),
		},
		{
			// A W3C traceparent is forwarded only when valid; this one would
			// split the request's headers if it were.
			name: "malformed traceparent header", id: 10017,
			rec: &kgo.Record{Key: key("bad-traceparent"), Value: val(`{"id":10017}`),
				Headers: []kgo.RecordHeader{{Key: "traceparent", Value: val("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nX-Evil: 1")}}},
			delivered: true, exact: true,
		},
		// Over max_record_bytes. pipeline.Record.Size counts key, value and
		// headers, so a huge key or header makes a record oversized although
		// the HTTP body carries only the value. The three are produced
		// together, so they reach the writer in one chunk.
		{
			name: "oversized value", rec: &kgo.Record{Key: key("bad-oversized"), Value: fmt.Appendf(nil, `{"id":10018,"pad":%q}`, strings.Repeat("x", 100_000))},
			class: "oversized", reason: []string{"max_record_bytes " + strconv.Itoa(maxRecord)}, sized: true,
		},
		{
			name: "huge key", rec: &kgo.Record{Key: bytes.Repeat([]byte("k"), 90_000), Value: val(`{"id":10019}`)},
			class: "oversized", reason: []string{"max_record_bytes " + strconv.Itoa(maxRecord)}, sized: true,
		},
		{
			name: "huge header", rec: &kgo.Record{Key: key("bad-huge-header"), Value: val(`{"id":10020}`),
				Headers: []kgo.RecordHeader{{Key: "x-huge", Value: bytes.Repeat([]byte("h"), 80_000)}}},
			class: "oversized", reason: []string{"max_record_bytes " + strconv.Itoa(maxRecord)}, sized: true,
		},
	}

	// Valid records {"id":0}..{"id":299}, with the malformed ones spread
	// among them; one partition, so the order is the offset order.
	var recs []*kgo.Record
	nextValid := 0
	valid := func(n int) {
		for ; n > 0 && nextValid < nValid; n-- {
			recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", nextValid), Value: fmt.Appendf(nil, `{"id":%d}`, nextValid)})
			nextValid++
		}
	}
	for i := range cases {
		if cases[i].class != "oversized" || i == 0 || cases[i-1].class != "oversized" {
			valid(nValid / (len(cases) + 1))
		}
		recs = append(recs, cases[i].rec)
	}
	valid(nValid)
	for _, r := range recs {
		r.Topic = topic
	}
	pcl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs...), kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
	err = pcl.ProduceSync(pctx, recs...).FirstErr()
	pcancel()
	pcl.Close()
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	byOffset := map[int64]int{} // offset → case index
	for i := range cases {
		byOffset[cases[i].rec.Offset] = i
	}

	rc := newMalformedReceiver(t)
	cfg := kafkaToHTTP(c, topic, group, rc.URL())
	filter := exprop.FilterConfig("json.id >= 0")
	cfg.Operators = []config.Operator{{Name: opName, Kind: "filter", Config: &filter}}
	cfg.Sink.Writer.MaxRecordBytes = maxRecord
	cfg.Sink.Writer.MaxBatchBytes = 1 << 20
	cfg.Errors.Tolerance = "all"
	cfg.Errors.Topic = dlq
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the test's own config is invalid: %v", err)
	}

	j, stop := startJob(t, cfg)
	waitFor(t, "every offset committed", 2*time.Minute, func() bool {
		if j.Health().Status == "stopped" {
			t.Fatalf("job stopped on its own: %v", stop())
		}
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatalf("job: %v", err)
	}
	if ok, desc := c.committedEqualsEnd(t, group, topic); !ok {
		t.Errorf("committed offsets after shutdown: %s", desc)
	}

	// Everything the dead-letter topic holds.
	ectx, ecancel := context.WithTimeout(context.Background(), 30*time.Second)
	ends, err := c.admin(t).ListEndOffsets(ectx, dlq)
	ecancel()
	if err != nil {
		t.Fatal(err)
	}
	var dlqCount int64
	ends.Each(func(o kadm.ListedOffset) { dlqCount += o.Offset })
	var dead []*kgo.Record
	if dlqCount > 0 {
		dead = c.readTopic(t, dlq, int(dlqCount))
	}
	deadBy := map[int][]*kgo.Record{} // case index → its dead letters
	for _, r := range dead {
		off, err := strconv.ParseInt(header(r, deadletter.HeaderOffset), 10, 64)
		i, isCase := byOffset[off]
		if err != nil || !isCase || header(r, deadletter.HeaderTopic) != topic {
			t.Errorf("dead letter for a record that is not malformed: %s@%s class %q: %s",
				header(r, deadletter.HeaderTopic), header(r, deadletter.HeaderOffset), header(r, deadletter.HeaderClass), header(r, deadletter.HeaderMessage))
			continue
		}
		deadBy[i] = append(deadBy[i], r)
	}

	// Every valid record is delivered, unchanged.
	var missing []int
	for id := range nValid {
		got := rc.got(int64(id))
		if len(got) == 0 {
			missing = append(missing, id)
			continue
		}
		if want := fmt.Sprintf(`{"id":%d}`, id); string(got[0]) != want {
			t.Errorf("valid record %d delivered as %.100q, want %s", id, got[0], want)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d valid records never delivered, first %v", len(missing), missing[:min(10, len(missing))])
	}

	accounted := nValid - len(missing)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got [][]byte
			if tc.id != 0 {
				got = rc.got(tc.id)
			}
			letters := deadBy[i]
			if len(got) > 0 || len(letters) > 0 {
				accounted++
			}
			if tc.delivered {
				if len(letters) > 0 {
					t.Fatalf("dead-lettered (class %q: %s), want delivered", header(letters[0], deadletter.HeaderClass), header(letters[0], deadletter.HeaderMessage))
				}
				if len(got) == 0 {
					t.Fatalf("never delivered (id %d)", tc.id)
				}
				for _, e := range got {
					if !utf8.Valid(e) {
						t.Errorf("delivered as invalid UTF-8 (%.80q); the whole request body is then invalid UTF-8 JSON", e)
					}
					if tc.exact && !bytes.Equal(e, tc.rec.Value) {
						t.Errorf("delivered as %.80q, want the value unchanged (%.80q)", e, tc.rec.Value)
					}
				}
				return
			}
			if len(got) > 0 {
				t.Errorf("delivered as %.80q, want dead-lettered", got[0])
			}
			if len(letters) != 1 {
				t.Fatalf("%d dead letters at offset %d, want exactly 1", len(letters), tc.rec.Offset)
			}
			d := letters[0]
			if class := header(d, deadletter.HeaderClass); class != tc.class {
				t.Errorf("class %q, want %q", class, tc.class)
			}
			msg := header(d, deadletter.HeaderMessage)
			if !utf8.ValidString(msg) || strings.TrimSpace(msg) == "" {
				t.Errorf("message %q is empty or not UTF-8", msg)
			}
			reasons := tc.reason
			if tc.sized {
				reasons = append(slices.Clone(reasons), fmt.Sprintf("record of %d bytes", malformedSize(tc.rec)))
			}
			for _, r := range reasons {
				if !strings.Contains(msg, r) {
					t.Errorf("message %q lacks %q", msg, r)
				}
			}
			if p := header(d, deadletter.HeaderPartition); p != strconv.Itoa(int(tc.rec.Partition)) {
				t.Errorf("original partition %q, want %d", p, tc.rec.Partition)
			}
			if _, err := strconv.Atoi(header(d, deadletter.HeaderAttempts)); err != nil {
				t.Errorf("attempts header %q: %v", header(d, deadletter.HeaderAttempts), err)
			}
			if _, err := time.Parse(time.RFC3339Nano, header(d, deadletter.HeaderTime)); err != nil {
				t.Errorf("time header %q: %v", header(d, deadletter.HeaderTime), err)
			}
			if !bytes.Equal(d.Key, tc.rec.Key) || !bytes.Equal(d.Value, tc.rec.Value) {
				t.Errorf("dead letter key/value (%d/%d bytes) differ from the original (%d/%d bytes)", len(d.Key), len(d.Value), len(tc.rec.Key), len(tc.rec.Value))
			}
			for _, h := range tc.rec.Headers {
				if v := header(d, h.Key); v != string(h.Value) {
					t.Errorf("original header %s not kept (%d bytes, want %d)", h.Key, len(v), len(h.Value))
				}
			}
		})
	}

	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, e := range rc.noID {
		t.Errorf("receiver got an element that is no record of the test: %.100q", e)
	}
	for _, b := range rc.bad {
		t.Errorf("receiver got a body that is not a JSON array: %s", b)
	}
	if rc.invalidU > 0 {
		t.Errorf("%d request bodies were not valid UTF-8", rc.invalidU)
	}
	if lost := nValid + len(cases) - accounted; lost != 0 {
		t.Errorf("%d records neither delivered nor dead-lettered", lost)
	}
	s := j.Snapshot()
	if s.In != int64(len(recs)) || s.Dropped != 0 {
		t.Errorf("job counted %d records in and %d dropped, want %d and 0", s.In, s.Dropped, len(recs))
	}
	t.Logf("%d records: %d delivered, %d dead-lettered (job counters: delivered %d, dead-lettered %d)",
		len(recs), s.Delivered, len(dead), s.Delivered, s.DeadLettered)
}
