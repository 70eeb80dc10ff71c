package config

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/spillway-io/spillway/registry"
)

// TestREADMEDefaults checks the config table of the README against
// Reference (spillway config defaults): every key in the table exists, every
// default written as `code` is the real one, a default written in words
// belongs to a key that really has none (its value is empty), and every key
// of the built-in kinds is in the table (sink.rate_limit has its own).
func TestREADMEDefaults(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := Reference(registry.Builtin())
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(ref, &root); err != nil {
		t.Fatal(err)
	}
	leaves := map[string]*yaml.Node{}
	all := map[string]*yaml.Node{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		all[path] = n
		if n.Kind == yaml.MappingNode && len(n.Content) > 0 {
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], join(path, n.Content[i].Value))
			}
			return
		}
		leaves[path] = n
	}
	walk(root.Content[0], "")

	rows := configRows(t, string(data))
	if len(rows) < 40 {
		t.Fatalf("found %d rows in the README's config table; is it still there?", len(rows))
	}
	documented := map[string]bool{}
	for _, r := range rows {
		parts := []string{r.def}
		if len(r.keys) > 1 {
			if p := strings.Split(r.def, ", "); len(p) == len(r.keys) {
				parts = p
			}
		}
		for i, key := range r.keys {
			documented[key] = true
			n, ok := all[key]
			if !ok {
				t.Errorf("README documents %s, which is not a key (see spillway config defaults)", key)
				continue
			}
			def := parts[min(i, len(parts)-1)]
			code := regexp.MustCompile("^`([^`]*)`").FindStringSubmatch(def)
			switch {
			case n.Kind != yaml.ScalarNode && n.Kind != yaml.SequenceNode && !(n.Kind == yaml.MappingNode && len(n.Content) == 0):
				// A section (sink.rate_limit): documented elsewhere.
			case code != nil:
				if !sameDefault(code[1], n.Value) {
					t.Errorf("README says %s defaults to %s, config defaults says %q", key, code[1], n.Value)
				}
			case !emptyDefault(n):
				t.Errorf("README gives %s no value (%q), but it defaults to %q", key, def, n.Value)
			}
		}
	}
	for key := range leaves {
		if !documented[key] && !strings.HasPrefix(key, "sink.rate_limit.") {
			t.Errorf("%s is not in the README's config table", key)
		}
	}
}

type configRow struct {
	keys []string
	def  string
}

// configRows reads the rows of the table whose header is "| key | meaning |
// default |"; each key cell lists `path` spans (operators[] stands for any
// operator).
func configRows(t *testing.T, readme string) []configRow {
	_, table, ok := strings.Cut(readme, "| key | meaning | default |\n")
	if !ok {
		t.Fatal("no config table in the README")
	}
	var rows []configRow
	for _, line := range strings.Split(table, "\n")[1:] {
		if !strings.HasPrefix(line, "| ") {
			break
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 3 {
			t.Fatalf("README row %q: want 3 cells", line)
		}
		var keys []string
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(cells[0], -1) {
			keys = append(keys, strings.ReplaceAll(m[1], "operators[].", "operators."))
		}
		rows = append(rows, configRow{keys: keys, def: strings.TrimSpace(cells[2])})
	}
	return rows
}

func emptyDefault(n *yaml.Node) bool {
	switch n.Kind {
	case yaml.SequenceNode, yaml.MappingNode:
		return len(n.Content) == 0
	}
	switch n.Value {
	case "", "0", "0s", "false", "null":
		return true
	}
	return false
}

// sameDefault compares a README default with a printed one: literally, as
// durations ("60s" = "1m0s") or as sizes ("4 MiB" = "4194304").
func sameDefault(readme, printed string) bool {
	if readme == printed {
		return true
	}
	if a, err := time.ParseDuration(readme); err == nil {
		b, err := time.ParseDuration(printed)
		return err == nil && a == b
	}
	for unit, shift := range map[string]int{" KiB": 10, " MiB": 20, " GiB": 30} {
		if n, ok := strings.CutSuffix(readme, unit); ok {
			v, err := strconv.Atoi(n)
			return err == nil && strconv.Itoa(v<<shift) == printed
		}
	}
	return false
}

// TestMarshalRoundTrip: what validate --print writes is a pipeline file
// that reads back as the same pipeline (absent sections stay absent), for
// every example config without secrets.
func TestMarshalRoundTrip(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(data), "password") || strings.Contains(string(data), "token") {
				t.Skip("holds a secret, which --print redacts")
			}
			p, err := Parse(f, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			q, err := Parse("printed.yaml", out, nil)
			if err != nil {
				t.Fatalf("printed config does not read back: %v\n%s", err, out)
			}
			again, err := q.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != string(out) {
				t.Errorf("printed twice differently:\n%s\n---\n%s", out, again)
			}
			if (p.Kafka.TLS == nil) != (q.Kafka.TLS == nil) || (p.Sink.CircuitBreaker == nil) != (q.Sink.CircuitBreaker == nil) {
				t.Errorf("an optional section changed presence: tls %v→%v, circuit_breaker %v→%v",
					p.Kafka.TLS != nil, q.Kafka.TLS != nil, p.Sink.CircuitBreaker != nil, q.Sink.CircuitBreaker != nil)
			}
		})
	}
}

// TestInvalidUTF8Line: a file that is not UTF-8 (saved as Latin-1, say)
// gets the line and column of the first bad byte, not the parser's bare
// "invalid leading UTF-8 octet".
func TestInvalidUTF8Line(t *testing.T) {
	data := []byte("name: t\nsource:\n  generate: {count: 1}\nsink:\n  http: {url: \"http://h/caf\xe9\"}\n")
	_, err := Parse("latin1.yaml", data, nil)
	var e *Error
	if !errors.As(err, &e) || e.Line != 5 || e.Column != 28 || !strings.Contains(e.Msg, "invalid UTF-8 (byte 0xe9") {
		t.Fatalf("Parse = %v; want line 5, column 28, invalid UTF-8 byte 0xe9", err)
	}
}
