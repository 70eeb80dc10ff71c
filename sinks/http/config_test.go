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
`
	var c sinkhttp.Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	want := sinkhttp.Config{URL: "https://api.example.com/ingest", Method: "put", Format: "ndjson",
		Headers: map[string]string{"X-Team": "data"}, BasicAuth: &sinkhttp.BasicAuth{Username: "u", Password: "p@ss: #word"},
		Timeout: 5 * time.Second, SuccessfulOn: []int{409}, BackoffOn: []int{400}, ThrottleOn: []int{502}, DropOn: []int{500}}
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
	if c.Method != "PATCH" || c.Format != sinkhttp.FormatJSON || c.MaxErrorBody != sinkhttp.DefaultMaxErrorBody || c.Timeout != 0 {
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
	// Validate works on a copy.
	v := sinkhttp.Config{URL: "http://h", Method: "put"}
	if err := v.Validate(); err != nil || v.Method != "put" || v.Format != "" {
		t.Errorf("Validate = %v and left %+v", err, v)
	}
}
