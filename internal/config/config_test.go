package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/pipeline/exprop"
	"github.com/spillway-io/spillway/sinks"
	sinkfile "github.com/spillway-io/spillway/sinks/file"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
	"github.com/spillway-io/spillway/sources/generate"
	"github.com/spillway-io/spillway/sources/kafka"
	"github.com/spillway-io/spillway/state"
)

// as returns a component config as its type, failing the test otherwise.
func as[T any](t *testing.T, cfg any) T {
	t.Helper()
	c, ok := cfg.(T)
	if !ok {
		t.Fatalf("config is %T, want %T", cfg, *new(T))
	}
	return c
}

// env returns a lookup function over vars.
func env(vars ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(vars); i += 2 {
		m[vars[i]] = vars[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// unwrapAll flattens errors.Join trees into the *Error leaves; it fails the
// test on any other kind of leaf.
func unwrapAll(t *testing.T, err error) []*Error {
	t.Helper()
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*Error
		for _, e := range j.Unwrap() {
			out = append(out, unwrapAll(t, e)...)
		}
		return out
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	return []*Error{e}
}

// base is a valid config whose last section is sink, so a case can append
// keys to sink (indented) or add top-level sections (not indented).
const base = `name: t
source:
  generate: {count: 10}
sink:
  stdout: {}
`

const anyLine = -1

func TestParseErrors(t *testing.T) {
	type want struct {
		line int
		path string
		msg  string // substring
	}
	tests := []struct {
		name string
		yaml string
		env  []string
		want []want // every error, in order
	}{
		{"unknown top-level key", base + "nmae: x\n", nil,
			[]want{{6, "nmae", "unknown key; did you mean name?"}}},
		{"unknown nested key", base + "  writer:\n    max_batch: 10\n", nil,
			[]want{{7, "sink.writer.max_batch", "unknown key; did you mean max_batch_size?"}}},
		{"unknown key lists known keys", base + "log:\n  colour: red\n", nil,
			[]want{{7, "log.colour", "unknown key; known keys: format, kafka_level, level"}}},
		{"integer of wrong type", base + "  writer:\n    max_batch_size: abc\n", nil,
			[]want{{7, "sink.writer.max_batch_size", `expected an integer, got "abc"`}}},
		{"float for integer", base + "  writer:\n    max_batch_size: 1.5\n", nil,
			[]want{{7, "sink.writer.max_batch_size", `expected an integer, got "1.5"`}}},
		{"list for integer", base + "  writer:\n    max_batch_size: [1]\n", nil,
			[]want{{7, "sink.writer.max_batch_size", "expected an integer, got a list"}}},
		{"null for integer", base + "  writer:\n    max_batch_size:\n", nil,
			[]want{{7, "sink.writer.max_batch_size", "expected an integer, got null"}}},
		{"integer out of range", base + "  writer:\n    max_batch_size: 99999999999999999999\n", nil,
			[]want{{7, "sink.writer.max_batch_size", "out of range"}}},
		{"explicit zero size", base + "  writer:\n    max_batch_size: 0\n", nil,
			[]want{{7, "sink.writer.max_batch_size", "must be positive, got 0"}}},
		{"negative size", base + "  writer:\n    max_in_flight_requests: -2\n", nil,
			[]want{{7, "sink.writer.max_in_flight_requests", "must be positive, got -2"}}},
		{"zero count allowed but negative not", "name: t\nsource:\n  generate:\n    count: -1\nsink:\n  stdout: {}\n", nil,
			[]want{{4, "source.generate.count", "must not be negative, got -1"}}},
		{"duration without unit", base + "  writer:\n    max_time_in_buffer: 5\n", nil,
			[]want{{7, "sink.writer.max_time_in_buffer", `expected a duration with a unit such as "5s"`}}},
		{"bad duration", base + "shutdown_timeout: soon\n", nil,
			[]want{{6, "shutdown_timeout", `expected a duration such as "5s" or "250ms", got "soon"`}}},
		{"zero duration", base + "shutdown_timeout: 0s\n", nil,
			[]want{{6, "shutdown_timeout", "must be positive, got 0s"}}},
		{"negative duration", base + "  writer:\n    request_timeout: -1s\n", nil,
			[]want{{7, "sink.writer.request_timeout", "must be positive, got -1s"}}},
		{"bool of wrong type", "name: t\nbrokers: embedded\nsource:\n  kafka:\n    topics: [a]\n    group: g\n    create_topics: maybe\nsink:\n  stdout: {}\n", nil,
			[]want{{7, "source.kafka.create_topics", `expected true or false, got "maybe"`}}},
		{"string for list", "name: t\nbrokers: embedded\nsource:\n  kafka:\n    topics: orders\n    group: g\nsink:\n  stdout: {}\n", nil,
			[]want{{5, "source.kafka.topics", `expected a list, got "orders"`}}},
		{"scalar for section", "name: t\nsource:\n  generate: {}\nsink: stdout\n", nil,
			[]want{{4, "sink", `expected a mapping, got "stdout"`}}},
		{"duplicate key", base + "name: u\n", nil,
			[]want{{6, "name", "duplicate key, first written on line 1"}}},
		{"missing name", "source:\n  generate: {}\nsink:\n  stdout: {}\n", nil,
			[]want{{1, "name", "required"}}},
		{"no sink", "name: t\nsource:\n  generate: {}\n", nil,
			[]want{{1, "sink", "exactly one of http, file, kafka, postgres, stdout is required, got none"}}},
		{"two sources", "name: t\nsource:\n  generate: {}\n  file: {path: x}\nsink:\n  stdout: {}\n", nil,
			[]want{{2, "source", "exactly one of kafka, file, generate is allowed, got file and generate"}}},
		{"two sinks", base + "  file:\n    path: /tmp/x\n", nil,
			[]want{{4, "sink", "got file and stdout"}}},
		{"kafka source missing everything", "name: t\nsource:\n  kafka:\nsink:\n  stdout: {}\n", nil,
			[]want{{1, "brokers", "required with a kafka source"}, {3, "source.kafka.topics", "required"}, {3, "source.kafka.group", "required"}}},
		{"fetch sizes and overhead", "name: t\nbrokers: embedded\nsource:\n  kafka:\n    topics: [a]\n    group: g\n    fetch_max_bytes: 1000\n    fetch_max_partition_bytes: 2000\n    request_timeout_overhead: 0s\nsink:\n  stdout: {}\n", nil,
			[]want{{8, "source.kafka.fetch_max_partition_bytes", "must not exceed fetch_max_bytes (1000), got 2000"}, {9, "source.kafka.request_timeout_overhead", "must be positive"}}},
		{"bad start offset", "name: t\nbrokers: embedded\nsource:\n  kafka:\n    topics: [a]\n    group: g\n    start_offset: newest\nsink:\n  stdout: {}\n", nil,
			[]want{{7, "source.kafka.start_offset", `must be "earliest" or "latest", got "newest"`}}},
		{"bad topic name", "name: t\nbrokers: embedded\nsource:\n  kafka:\n    topics: [ok, 'no/slash']\n    group: g\nsink:\n  stdout: {}\n", nil,
			[]want{{5, "source.kafka.topics[1]", `invalid topic name "no/slash"`}}},
		{"broker without port", base + "brokers: localhost\n", nil,
			[]want{{6, "brokers", `invalid broker address "localhost": missing port in address`}}},
		{"embedded mixed with brokers", base + "brokers:\n  - embedded\n  - localhost:9092\n", nil,
			[]want{{7, "brokers[0]", `"embedded" cannot be combined`}}},
		{"empty broker in list", base + "brokers: a:1,,b:2\n", nil,
			[]want{{6, "brokers", "empty broker address"}}},
		{"embedded section with real brokers is still checked", base + "brokers: k:9092\nembedded:\n  partitions: -2\n", nil,
			[]want{{8, "embedded.partitions", "must be positive"}}},
		{"bad tolerance", base + "errors:\n  tolerance: some\n", nil,
			[]want{{7, "errors.tolerance", `must be "none" or "all", got "some"`}}},
		{"tolerance all without dead-letter topic", base + "errors:\n  tolerance: all\n", nil,
			[]want{{6, "errors.dead_letter_topic", "required with tolerance all"}}},
		{"dead-letter topic without brokers", base + "errors:\n  dead_letter_topic: dlq\n", nil,
			[]want{{7, "errors.dead_letter_topic", "requires brokers"}}},
		{"dead-letter topic is the source topic", "name: t\nbrokers: embedded\nsource:\n  kafka: {topics: [a], group: g}\nsink:\n  stdout: {}\nerrors:\n  dead_letter_topic: a\n", nil,
			[]want{{8, "errors.dead_letter_topic", `must differ from the source topic "a"`}}},
		{"kafka sink writes the source topic", "name: t\nbrokers: k:9092\nsource:\n  kafka: {topics: [a, b], group: g}\nsink:\n  kafka:\n    topic: b\n", nil,
			[]want{{7, "sink.kafka.topic", `must differ from the source topic "b": the job would read what it writes (a loop)`}}},
		{"kafka sink writes the source topic, same brokers", "name: t\nbrokers: k:9092\nsource:\n  kafka: {topics: [a], group: g}\nsink:\n  kafka:\n    brokers: [k:9092]\n    topic: a\n", nil,
			[]want{{8, "sink.kafka.topic", `must differ from the source topic "a"`}}},
		{"kafka sink writes the dead-letter topic", "name: t\nbrokers: k:9092\nsource:\n  kafka: {topics: [a], group: g}\nsink:\n  kafka:\n    topic: d\nerrors:\n  dead_letter_topic: d\n", nil,
			[]want{{7, "sink.kafka.topic", `must differ from errors.dead_letter_topic "d"`}}},
		{"kafka sink without brokers", "name: t\nsource:\n  generate: {}\nsink:\n  kafka:\n    topic: out\n", nil,
			[]want{{1, "brokers", "required with a kafka sink that has no brokers of its own"}}},
		{"kafka sink exactly once without a kafka source", "name: t\nbrokers: k:9092\nsource:\n  generate: {}\nsink:\n  kafka:\n    topic: out\n    delivery: exactly_once\n", nil,
			[]want{{8, "sink.kafka.delivery", `exactly_once needs a kafka source (its offsets are committed in the sink's transactions), got source "generate"`}}},
		{"kafka sink exactly once on another cluster", "name: t\nbrokers: k:9092\nsource:\n  kafka: {topics: [a], group: g}\nsink:\n  kafka:\n    brokers: [other:9092]\n    topic: out\n    delivery: exactly_once\n", nil,
			[]want{{7, "sink.kafka.brokers", "with exactly_once the sink writes to the source's cluster"}}},
		{"kafka sink exactly once on another cluster than the dead-letter topic", "name: t\nbrokers: k:9092\nsource:\n  kafka: {topics: [a], group: g}\nsink:\n  kafka:\n    brokers: [other:9092]\n    topic: out\n    delivery: exactly_once\nerrors:\n  dead_letter_topic: d\n", nil,
			[]want{{7, "sink.kafka.brokers", "(errors.dead_letter_topic is on brokers too, and a transaction spans one cluster)"}}},
		{"kafka sink exactly once writing the dead-letter topic", "name: t\nbrokers: k:9092\nsource:\n  kafka: {topics: [a], group: g}\nsink:\n  kafka:\n    topic: d\n    delivery: exactly_once\nerrors:\n  tolerance: all\n  dead_letter_topic: d\n", nil,
			[]want{{7, "sink.kafka.topic", `must differ from errors.dead_letter_topic "d"`}}},
		{"retry backoff above max", base + "errors:\n  retry_backoff: 2s\n  max_retry_backoff: 1s\n", nil,
			[]want{{7, "errors.retry_backoff", "must not exceed max_retry_backoff (1s), got 2s"}}},
		{"url without scheme", base + "  http:\n    url: example.com/x\n", nil,
			[]want{{4, "sink", "got http and stdout"}, {7, "sink.http.url", `malformed sink URL "example.com/x": scheme must be http or https, got none`}}},
		{"url with bad scheme", "name: t\nsource:\n  generate: {}\nsink:\n  http:\n    url: ftp://example.com\n", nil,
			[]want{{6, "sink.http.url", `malformed sink URL "ftp://example.com": scheme must be http or https, got "ftp"`}}},
		{"url that does not parse", "name: t\nsource:\n  generate: {}\nsink:\n  http:\n    url: 'http://exa mple.com:x/'\n", nil,
			[]want{{6, "sink.http.url", `malformed sink URL "http://exa mple.com:x/"`}}},
		{"url without host", "name: t\nsource:\n  generate: {}\nsink:\n  http:\n    url: http:///path\n", nil,
			[]want{{6, "sink.http.url", "missing host"}}},
		{"http sink without url", "name: t\nsource:\n  generate: {}\nsink:\n  http:\n    format: json\n", nil,
			[]want{{5, "sink.http.url", "required"}}},
		{"bad format and method", "name: t\nsource:\n  generate: {}\nsink:\n  http:\n    url: http://h\n    format: xml\n    method: GET\n", nil,
			[]want{{7, "sink.http.format", `must be "json" or "ndjson", got "xml"`}, {8, "sink.http.method", `must be "POST", "PUT" or "PATCH", got "GET"`}}},
		{"basic auth and bearer token", "name: t\nsource:\n  generate: {}\nsink:\n  http:\n    url: http://h\n    bearer_token: x\n    basic_auth: {username: u, password: p}\n", nil,
			[]want{{7, "sink.http.bearer_token", "conflicts with basic_auth"}}},
		{"buffered not above batch", base + "  writer:\n    max_batch_size: 100\n    max_buffered_requests: 100\n", nil,
			[]want{{8, "sink.writer.max_buffered_requests", "must be greater than max_batch_size (100), got 100"}}},
		{"record above batch bytes", base + "  writer:\n    max_batch_bytes: 1000\n    max_record_bytes: 2000\n", nil,
			[]want{{8, "sink.writer.max_record_bytes", "must not exceed max_batch_bytes (1000), got 2000"}}},
		{"aimd initial limit above the default max", base + "  writer:\n    max_batch_size: 10\n    max_in_flight_requests: 2\n  rate_limit:\n    kind: aimd\n    initial_limit: 100\n", nil,
			[]want{{11, "sink.rate_limit.initial_limit", "defaults to max_batch_size × max_in_flight_requests = 20; got 100"}}},
		{"effectively once without partition order", "name: t\nbrokers: k:9092\nsource:\n  kafka: {topics: [a], group: g}\nsink:\n  postgres:\n    dsn: postgres://u@h/db\n    table: t\n    delivery: effectively_once\n    columns: [{name: id, expr: key}]\n  writer:\n    ordering: none\n", nil,
			[]want{{9, "sink.postgres.delivery", `as set, requires sink.writer.ordering: partition (got "none")`}}},
		{"group-scoped limit without a consumer group", base + "  rate_limit:\n    kind: token_bucket\n    records_per_second: 100\n    scope: group\n", nil,
			[]want{{9, "sink.rate_limit.scope", "group needs a Kafka source"}}},
		{"group scope on a partition tier", "name: t\nbrokers: k:9092\nsource:\n  kafka: {topics: [a], group: g}\nsink:\n  stdout: {}\n  rate_limit:\n    kind: multi_tier\n    partition: {kind: token_bucket, records_per_second: 5, scope: group}\n", nil,
			[]want{{9, "sink.rate_limit.partition.scope", "group applies to the global tier only"}}},
		{"bad ops listen address", base + "ops:\n  listen: localhost\n", nil,
			[]want{{7, "ops.listen", `invalid listen address "localhost"`}}},
		{"bad state section", base + "state:\n  kind: redis\n  replication_factor: 0\n  write_interval: -1s\n", nil,
			[]want{{7, "state.kind", `must be "auto", "kafka" or "memory", got "redis"`}, {8, "state.replication_factor", "got 0 (leave it out for the default)"}, {9, "state.write_interval", "must be positive"}}},
		{"kafka state without brokers", base + "state:\n  kind: kafka\n", nil,
			[]want{{7, "state.kind", "kafka needs brokers"}}},
		{"bad log level and format", base + "log:\n  level: verbose\n  format: xml\n  kafka_level: chatty\n", nil,
			[]want{{7, "log.level", `must be "debug", "info", "warn" or "error", got "verbose"`}, {8, "log.format", `got "xml"`}, {9, "log.kafka_level", `got "chatty"`}}},
		{"missing env var", "name: t\nsource:\n  generate: {}\nsink:\n  file:\n    path: /data/${OUT_DIR}/x.jsonl\n", nil,
			[]want{{6, "sink.file.path", "environment variable OUT_DIR is not set"}}},
		{"missing env var in a block scalar", base + "operators:\n  - filter: |\n      key == \"a\" &&\n      value == \"${WANT}\"\n", nil,
			[]want{{9, "operators[0].filter", "environment variable WANT is not set"}}},
		{"unterminated interpolation", base + "shutdown_timeout: ${T\n", nil,
			[]want{{6, "shutdown_timeout", "unterminated ${"}}},
		{"env var of wrong type", base + "  writer:\n    max_batch_size: ${BATCH}\n", []string{"BATCH", "lots"},
			[]want{{7, "sink.writer.max_batch_size", `expected an integer, got "lots"`}}},
		{"filter syntax error", base + "operators:\n  - filter: 'json.amount >'\n", nil,
			[]want{{7, "operators[0].filter", "invalid expression: unexpected token EOF (column 13 of the expression)"}}},
		{"filter not boolean", base + "operators:\n  - filter: 'key'\n", nil,
			[]want{{7, "operators[0].filter", "expected bool, but got string"}}},
		{"filter unknown variable", base + "operators:\n  - filter: 'amount > 1'\n", nil,
			[]want{{7, "operators[0].filter", "unknown name amount"}}},
		{"empty filter", base + "operators:\n  - filter: ''\n", nil,
			[]want{{7, "operators[0].filter", "expression is empty"}}},
		{"map expression error", base + "operators:\n  - map:\n      headers:\n        x-a: 'key +'\n", nil,
			[]want{{9, "operators[0].map.headers.x-a", "invalid expression"}}},
		{"empty map", base + "operators:\n  - map: {}\n", nil,
			[]want{{7, "operators[0].map", "needs at least one of key, value, headers"}}},
		{"filter and map", base + "operators:\n  - filter: 'true'\n    map: {value: key}\n", nil,
			[]want{{7, "operators[0]", "exactly one of filter, map, route is allowed, got filter and map"}}},
		{"no operator kind", base + "operators:\n  - name: x\n", nil,
			[]want{{7, "operators[0]", "exactly one of filter, map, route is required, got none"}}},
		{"route", base + "operators:\n  - route:\n      to: [a, b]\n", nil,
			[]want{{7, "operators[0].route", "not supported yet"}}},
		{"duplicate operator name", base + "operators:\n  - {name: a, filter: 'true'}\n  - {name: a, filter: 'true'}\n", nil,
			[]want{{8, "operators[1].name", `duplicate operator name "a" (also operators[0])`}}},
		{"bad header name", "name: t\nsource:\n  generate: {}\nsink:\n  http:\n    url: http://h\n    headers:\n      'X Bad': 1\n", nil,
			[]want{{8, "sink.http.headers.X Bad", `invalid header name "X Bad"`}}},
		{"several problems at once", "name: ''\nsource:\n  generate:\n    keys: 0\n    bogus: 1\nsink:\n  writer:\n    max_batch_size: x\n", nil,
			[]want{{1, "name", "required"}, {4, "source.generate.keys", "must be positive, got 0"}, {5, "source.generate.bogus", "unknown key"}, {6, "sink", "got none"}, {8, "sink.writer.max_batch_size", "expected an integer"}}},
		{"invalid YAML", "name: t\nsource: [a\n", nil,
			[]want{{anyLine, "", "invalid YAML"}}},
		{"flow collection with interpolation", base + "brokers: [${B}]\n", nil,
			[]want{{anyLine, "", `quote values that use ${VAR}`}}},
		{"top-level list", "- a\n- b\n", nil,
			[]want{{1, "", "expected a mapping at the top level, got a list"}}},
		{"two documents", base + "---\nname: u\n", nil,
			[]want{{6, "", "only one YAML document is allowed"}}},
		{"empty file", "# nothing\n", nil,
			[]want{{0, "", "the file is empty"}}},
		{"merge key", "defaults: &d {count: 1}\n" + base, nil,
			[]want{{1, "defaults", "unknown key"}}},
	}
	if len(tests) < 25 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("x.yaml", []byte(tt.yaml), env(tt.env...))
			if err == nil {
				t.Fatalf("no error; got %+v", p)
			}
			if p != nil {
				t.Errorf("Parse returned a Pipeline with an error")
			}
			got := unwrapAll(t, err)
			for i, w := range tt.want {
				if i >= len(got) {
					t.Errorf("missing error %d: want %d %s: %s", i, w.line, w.path, w.msg)
					continue
				}
				g := got[i]
				if w.line == anyLine {
					// The YAML library's line for syntax errors is sometimes
					// that of the enclosing construct, one off.
					w.line = g.Line
					if g.Line <= 0 {
						t.Errorf("error %d = %q has no line", i, g)
					}
				}
				if g.File != "x.yaml" || g.Line != w.line || g.Path != w.path || !strings.Contains(g.Msg, w.msg) {
					t.Errorf("error %d = %q\nwant line %d, path %q, message containing %q", i, g, w.line, w.path, w.msg)
				}
				prefix := "x.yaml:" + fmt.Sprint(w.line) + ": "
				if g.Column > 0 {
					prefix = fmt.Sprintf("x.yaml:%d:%d: ", w.line, g.Column)
				}
				if w.line == 0 {
					prefix = "x.yaml: "
				}
				if w.path != "" {
					prefix += w.path + ": "
				}
				if !strings.HasPrefix(g.Error(), prefix) {
					t.Errorf("Error() = %q, want prefix %q", g.Error(), prefix)
				}
			}
			for _, g := range got[min(len(got), len(tt.want)):] {
				t.Errorf("unexpected error: %v", g)
			}
		})
	}
}

func TestParseGood(t *testing.T) {
	p, err := Parse("t.yaml", []byte(base), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "t" || p.Source.Kind != "generate" || as[*generate.Config](t, p.Source.Config).Count != 10 || p.Sink.Kind != "stdout" {
		t.Errorf("decoded %+v", p)
	}
	w := p.Sink.Writer
	if w.MaxBatchSize != 500 || w.MaxBatchBytes != 4<<20 || w.MaxInFlightRequests != 8 || w.MaxBufferedRequests != 10000 ||
		w.MaxTimeInBuffer != time.Second || w.MaxRecordBytes != 1<<20 || w.RequestTimeout != 30*time.Second {
		t.Errorf("writer defaults: %+v", w)
	}
	if p.Errors != (Errors{Config: deadletter.Config{Tolerance: "none"}, RetryConfig: sinks.RetryConfig{MaxAttempts: 10, RetryBackoff: 100 * time.Millisecond, MaxRetryBackoff: 10 * time.Second, IsolateBadRecords: sinks.IsolateBisect}}) {
		t.Errorf("errors defaults: %+v", p.Errors)
	}
	if p.ShutdownTimeout != 30*time.Second || p.Log != (Log{Level: "info", Format: "json", KafkaLevel: "warn"}) {
		t.Errorf("defaults: %v %+v", p.ShutdownTimeout, p.Log)
	}
	if g := as[*generate.Config](t, p.Source.Config); g.ValueBytes != 100 || g.Keys != 1000 {
		t.Errorf("generate defaults: %+v", g)
	}
	if p.State != (state.Config{Kind: "auto", Topic: "_spillway_state", ControlTopic: "_spillway_control", Partitions: 1, ReplicationFactor: -1,
		WriteInterval: 500 * time.Millisecond, RetryInterval: 5 * time.Second, LoadTimeout: 10 * time.Second}) {
		t.Errorf("state defaults: %+v", p.State)
	}
	if p.Embedded != (Embedded{}) {
		t.Errorf("embedded defaults without embedded brokers: %+v", p.Embedded)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("Validate after Parse: %v", err)
	}
}

func TestParseFixtures(t *testing.T) {
	t.Run("kafka-http", func(t *testing.T) {
		p := load(t, "kafka-http.yaml", "TEST_SINK_URL", "http://localhost:8080/in")
		if want := (Brokers{"127.0.0.1:9092", "127.0.0.2:9092"}); !reflect.DeepEqual(p.Brokers, want) {
			t.Errorf("brokers = %q, want %q", p.Brokers, want)
		}
		k := as[*kafka.Config](t, p.Source.Config)
		want := kafka.Config{ResumeAt: 0.5, Topics: []string{"orders", "refunds"}, Group: "orders-to-api", StartOffset: "latest", CreateTopics: true,
			Partitions: 6, CheckpointInterval: 2 * time.Second, CommitDelay: 100 * time.Millisecond, RevokeTimeout: 5 * time.Second, SessionTimeout: 45 * time.Second, RebalanceTimeout: time.Minute, GroupProtocol: "classic", ConnectTimeout: 3 * time.Second, MaxPollRecords: 1000}
		if !reflect.DeepEqual(*k, want) {
			t.Errorf("kafka = %+v\nwant %+v", *k, want)
		}
		if len(p.Operators) != 2 || as[*exprop.MapConfig](t, p.Operators[1].Config).Key != "json.customer" || !strings.HasPrefix(as[*exprop.MapConfig](t, p.Operators[1].Config).Value, `{"id"`) {
			t.Errorf("operators = %+v", p.Operators)
		}
		h := as[*sinkhttp.Config](t, p.Sink.Config)
		if h.URL != "http://localhost:8080/in" || h.Method != "PUT" || h.Format != "ndjson" || h.Timeout != 5*time.Second ||
			h.BasicAuth.Password != "p@ss: #word" || h.Headers["X-Team"] != "data" {
			t.Errorf("http = %+v %+v", h, h.BasicAuth)
		}
		w := p.Sink.Writer
		if w.MaxBufferedRequests != 5000 || w.MaxTimeInBuffer != 250*time.Millisecond || !w.FailOnTimeout || w.MaxRecordBytes != 1<<20 {
			t.Errorf("writer = %+v", w)
		}
		// retry_backoff defaults to max_retry_backoff when that is below 100ms.
		if p.Errors.RetryBackoff != 50*time.Millisecond || p.Errors.MaxAttempts != 5 {
			t.Errorf("errors = %+v", p.Errors)
		}
		if p.ShutdownTimeout != time.Minute || p.Log.Format != "text" {
			t.Errorf("shutdown %v log %+v", p.ShutdownTimeout, p.Log)
		}
	})
	t.Run("kafka-http with env", func(t *testing.T) {
		p := load(t, "kafka-http.yaml", "TEST_BROKERS", "k1:9092,k2:9093", "TEST_PASSWORD", "s3cret")
		if !reflect.DeepEqual(p.Brokers, Brokers{"k1:9092", "k2:9093"}) || as[*sinkhttp.Config](t, p.Sink.Config).BasicAuth.Password != "s3cret" {
			t.Errorf("brokers %q password %q", p.Brokers, as[*sinkhttp.Config](t, p.Sink.Config).BasicAuth.Password)
		}
	})
	t.Run("embedded", func(t *testing.T) {
		p := load(t, "embedded.yaml")
		if !p.Brokers.Embedded() || p.Embedded.Partitions != 4 || p.Embedded.DataDir != "/tmp/spillway-test" {
			t.Errorf("embedded: %q %+v", p.Brokers, p.Embedded)
		}
		if p.Sink.Kind != "stdout" {
			t.Error(`"stdout:" with no value did not select the stdout sink`)
		}
		k := as[*kafka.Config](t, p.Source.Config)
		if k.StartOffset != "earliest" || k.Partitions != 4 || k.CheckpointInterval != 5*time.Second ||
			k.RevokeTimeout != 10*time.Second || k.ConnectTimeout != 10*time.Second || k.MaxPollRecords != 5000 {
			t.Errorf("kafka defaults: %+v", k)
		}
	})
	t.Run("generate-file", func(t *testing.T) {
		p := load(t, "generate-file.yaml", "TEST_OUT", "")
		if f := as[*sinkfile.Config](t, p.Sink.Config); f.Path != "/tmp/out.jsonl" {
			t.Errorf("an empty variable did not take the default: %q", f.Path)
		}
		if g := as[*generate.Config](t, p.Source.Config); g.Count != 0 || g.Rate != 1500.5 || g.ValueBytes != 64 {
			t.Errorf("generate = %+v", g)
		}
		// Defaults that follow other fields.
		if w := p.Sink.Writer; w.MaxBufferedRequests != 40000 || w.MaxRecordBytes != 65536 {
			t.Errorf("writer = %+v", w)
		}
	})
}

func load(t *testing.T, name string, vars ...string) *Pipeline {
	t.Helper()
	path := filepath.Join("testdata", name)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(path, data, env(vars...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	if _, err := Load(filepath.Join("testdata", "embedded.yaml")); err != nil {
		t.Fatal(err)
	}
	_, err := Load(filepath.Join("testdata", "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func TestBrokerForms(t *testing.T) {
	tests := []struct {
		yaml string
		want Brokers
	}{
		{"brokers: embedded", Brokers{"embedded"}},
		{"brokers: a:1", Brokers{"a:1"}},
		{"brokers: ' a:1 , b:2 '", Brokers{"a:1", "b:2"}},
		{"brokers: [a:1, 'b:2']", Brokers{"a:1", "b:2"}},
		{"brokers:\n  - a:1\n  - ${B:b:2}", Brokers{"a:1", "b:2"}},
		{"brokers: ${NONE:}", nil},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			p, err := Parse("b.yaml", []byte(base+tt.yaml+"\n"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.Brokers, tt.want) {
				t.Errorf("brokers = %q, want %q", p.Brokers, tt.want)
			}
		})
	}
}

func TestInterpolation(t *testing.T) {
	lookup := env("A", "alpha", "EMPTY", "", "HASH", "x: #y")
	tests := []struct {
		in, want string
		err      string
	}{
		{"plain", "plain", ""},
		{"${A}", "alpha", ""},
		{"<${A}|${A}>", "<alpha|alpha>", ""},
		{"${B:beta}", "beta", ""},
		{"${A:beta}", "alpha", ""},
		{"${EMPTY:def}", "def", ""},
		{"${EMPTY}", "", ""},
		{"${B:}", "", ""},
		{"${B:a:b}", "a:b", ""},
		{"${HASH}", "x: #y", ""},
		{"$${A}", "${A}", ""},
		{"$$${A}", "$${A}", ""}, // leftmost first: "$", then the escape
		{"$A ${", "", "unterminated ${"},
		{"cost: $5", "cost: $5", ""},
		{"${B}", "", "environment variable B is not set"},
		{"${}", "", `invalid environment variable name ""`},
		{"${1X}", "", `invalid environment variable name "1X"`},
		{"${B:${A}}", "", "nested ${"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, probs := interpolate(tt.in, lookup)
			if tt.err != "" {
				if len(probs) == 0 || !strings.Contains(probs[0].msg, tt.err) {
					t.Fatalf("problems = %v, want %q", probs, tt.err)
				}
				return
			}
			if len(probs) > 0 || got != tt.want {
				t.Errorf("interpolate(%q) = %q, %v; want %q", tt.in, got, probs, tt.want)
			}
		})
	}
	// The result is never parsed as YAML, and comments are not expanded.
	p, err := Parse("i.yaml", []byte("# ${UNSET} is fine in a comment\n"+base+"  writer:\n    max_batch_size: ${N:700}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Sink.Writer.MaxBatchSize != 700 {
		t.Errorf("max_batch_size = %d", p.Sink.Writer.MaxBatchSize)
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	p := &Pipeline{
		Name:   "code",
		Source: Source{Kind: "generate", Config: &generate.Config{}},
		Sink:   Sink{Kind: "http", Config: &sinkhttp.Config{URL: "https://example.com/in", Method: "post"}},
	}
	h := p.Sink.Config.(*sinkhttp.Config)
	if err := p.Validate(); err != nil {
		t.Fatalf("zero fields must count as defaults: %v", err)
	}
	if h.Method != "post" || p.Sink.Writer.MaxBatchSize != 0 || p.Source.Config.(*generate.Config).Keys != 0 {
		t.Error("Validate modified the Pipeline")
	}

	p.Sink.Writer.MaxBatchSize = -1
	h.URL = "://bad"
	err := p.Validate()
	got := unwrapAll(t, err)
	if len(got) != 2 {
		t.Fatalf("errors = %v", err)
	}
	if got[0].Error() != `sink.http.url: malformed sink URL "://bad": missing protocol scheme` ||
		got[1].Error() != "sink.writer.max_batch_size: must be positive, got -1" {
		t.Errorf("errors = %q, %q", got[0], got[1])
	}
	var e *Error
	if !errors.As(err, &e) || e.Line != 0 || e.File != "" {
		t.Errorf("errors.As = %+v", e)
	}

	p.Sink.Writer.MaxBatchSize = 0
	h.URL = "http://h"
	p.ApplyDefaults()
	if h.Method != "POST" || p.Sink.Writer.MaxBatchSize != 500 {
		t.Errorf("ApplyDefaults: %+v %+v", h, p.Sink.Writer)
	}
	before := *h
	p.ApplyDefaults()
	if !reflect.DeepEqual(*h, before) {
		t.Error("ApplyDefaults is not idempotent")
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "configs/x.yaml", Line: 12, Path: "sink.writer.max_batch_size", Msg: "must be positive, got 0"},
			"configs/x.yaml:12: sink.writer.max_batch_size: must be positive, got 0"},
		{Error{File: "configs/x.yaml", Line: 12, Column: 21, Path: "sink.writer.max_batch_size", Msg: "must be positive, got 0"},
			"configs/x.yaml:12:21: sink.writer.max_batch_size: must be positive, got 0"},
		{Error{Line: 3, Column: 7, Msg: "invalid UTF-8"}, "line 3, column 7: invalid UTF-8"},
		{Error{File: "x.yaml", Msg: "the file is empty"}, "x.yaml: the file is empty"},
		{Error{Line: 3, Path: "name", Msg: "required"}, "line 3: name: required"},
		{Error{Path: "name", Msg: "required"}, "name: required"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		base,
		base + "operators:\n  - filter: 'json.a > 1'\n  - map: {value: 'json', headers: {a: key}}\n",
		base + "brokers: [a:1, ${B:b:2}]\nerrors: {tolerance: all, dead_letter_topic: d}\n",
		"a: &x [1]\nb: *x\n",
		"name: $${x} ${Y:1}\n",
		"",
	} {
		f.Add([]byte(s))
	}
	lookup := env("Y", "y", "B", "b:1")
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("f.yaml", data, lookup)
		if err != nil {
			if p != nil {
				t.Fatal("Pipeline returned with an error")
			}
			unwrapAll(t, err)
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Parse succeeded but Validate failed: %v", err)
		}
	})
}

// TestKafkaSinkExactlyOnceDeadLetter: with exactly_once, dead letters are
// written in the sink's transactions; a dead-letter topic is valid, with
// the sink on the pipeline's brokers (its own or none).
func TestKafkaSinkExactlyOnceDeadLetter(t *testing.T) {
	for _, sinkBrokers := range []string{"", "    brokers: [k:9092]\n"} {
		y := "name: t\nbrokers: k:9092\nsource:\n  kafka: {topics: [a], group: g}\nsink:\n  kafka:\n" + sinkBrokers +
			"    topic: out\n    delivery: exactly_once\nerrors:\n  tolerance: all\n  dead_letter_topic: d\n"
		if _, err := Parse("x.yaml", []byte(y), env()); err != nil {
			t.Errorf("Parse(%q) = %v", y, err)
		}
	}
}

// TestKafkaSinkOtherCluster: a Kafka sink with brokers of its own may
// write a topic named like a source topic (another cluster, no loop), and
// needs no pipeline brokers.
func TestKafkaSinkOtherCluster(t *testing.T) {
	for _, y := range []string{
		"name: t\nbrokers: k:9092\nsource:\n  kafka: {topics: [a], group: g}\nsink:\n  kafka:\n    brokers: [other:9092]\n    topic: a\n",
		"name: t\nsource:\n  generate: {}\nsink:\n  kafka:\n    brokers: [other:9092]\n    topic_expr: '\"t.\" + key'\n",
	} {
		if _, err := Parse("x.yaml", []byte(y), env()); err != nil {
			t.Errorf("Parse(%q) = %v", y, err)
		}
	}
}
