package http_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	sinkhttp "github.com/spillway-io/spillway/sinks/http"
	"go.yaml.in/yaml/v3"
)

// TestConfigYAML decodes a sink.http section strictly, as the pipeline
// loader does: the keys are today's, basic_auth is a nested mapping and
// max_error_body is not a file setting.
func TestConfigYAML(t *testing.T) {
	const doc = `
url: https://api.example.com/ingest
method: put
format: ndjson
headers: {X-Team: data}
basic_auth: {username: u, password: "p@ss: #word"}
timeout: 5s
successful_on: [409]
backoff_on: [400]
throttle_on: [502]
drop_on: [500]
value_encoding: string
tombstones: drop
rejections: {path: bad_ids, match: field, field: id}
`
	var c sinkhttp.Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	want := sinkhttp.Config{URL: "https://api.example.com/ingest", Method: "put", Format: "ndjson",
		Headers: map[string]string{"X-Team": "data"}, BasicAuth: &sinkhttp.BasicAuth{Username: "u", Password: "p@ss: #word"},
		Timeout: 5 * time.Second, SuccessfulOn: []int{409}, BackoffOn: []int{400}, ThrottleOn: []int{502}, DropOn: []int{500},
		ValueEncoding: "string", Tombstones: "drop", Rejections: &sinkhttp.Rejections{Path: "bad_ids", Match: "field", Field: "id"}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decoded %+v\nwant    %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"url: x\nusername: u\n", "url: x\nmax_error_body: 10\n"} {
		dec := yaml.NewDecoder(strings.NewReader(bad))
		dec.KnownFields(true)
		if err := dec.Decode(new(sinkhttp.Config)); err == nil {
			t.Errorf("%q decoded without error", bad)
		}
	}
}

func TestConfigApplyDefaults(t *testing.T) {
	c := sinkhttp.Config{URL: "http://h", Method: "patch"}
	c.ApplyDefaults()
	if c.Method != "PATCH" || c.Format != sinkhttp.FormatJSON || c.MaxErrorBody != sinkhttp.DefaultMaxErrorBody || c.Timeout != 0 ||
		c.ValueEncoding != "auto" || c.BinaryValues != "dead_letter" || c.Tombstones != "send" || c.Rejections != nil {
		t.Errorf("defaulted %+v", c)
	}
	before := c
	c.ApplyDefaults()
	if !reflect.DeepEqual(c, before) {
		t.Error("ApplyDefaults is not idempotent")
	}
	var z sinkhttp.Config
	z.ApplyDefaults()
	if z.Method != "POST" {
		t.Errorf("default method %q, want POST", z.Method)
	}
	// Rejections gets its own defaulted copy: what it pointed to is not changed.
	rej := &sinkhttp.Rejections{Path: "failed"}
	r := sinkhttp.Config{Rejections: rej}
	r.ApplyDefaults()
	if r.Rejections.Match != sinkhttp.MatchIndex || rej.Match != "" {
		t.Errorf("rejections defaulted to %+v, the original to %+v", *r.Rejections, *rej)
	}
	// Validate works on a copy.
	v := sinkhttp.Config{URL: "http://h", Method: "put"}
	if err := v.Validate(); err != nil || v.Method != "put" || v.Format != "" {
		t.Errorf("Validate = %v and left %+v", err, v)
	}
}

// TestConfigHeaderSizes: a header no destination accepts (431 on every
// request) is a validation error naming the key, not a run-time flood of
// failures; the token counts too, and is not shown.
func TestConfigHeaderSizes(t *testing.T) {
	big := strings.Repeat("x", 9<<10)
	for _, c := range []struct {
		cfg  sinkhttp.Config
		want string
	}{
		{sinkhttp.Config{URL: "http://h", Headers: map[string]string{"X-Big": big}}, "headers.X-Big: value of 9216 bytes; destinations refuse headers over 8192 bytes (431)"},
		{sinkhttp.Config{URL: "http://h", BearerToken: big}, "bearer_token: 9216 bytes; destinations refuse headers over 8192 bytes (431)"},
		{sinkhttp.Config{URL: "http://h", Headers: map[string]string{"A": big[:8000], "B": big[:8000], "C": big[:8000], "D": big[:8000], "E": big[:2000]}},
			"headers: 34005 bytes of headers in all; destinations refuse more than 32768 (431)"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate = %v, want %q", err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), big[:100]) {
			t.Errorf("the error shows the value: %.80v", err)
		}
	}
	ok := sinkhttp.Config{URL: "http://h", Headers: map[string]string{"X-Fine": big[:8000]}}
	if err := ok.Validate(); err != nil {
		t.Errorf("an 8000-byte header refused: %v", err)
	}
}
