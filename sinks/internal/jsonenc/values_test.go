package jsonenc_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/sinks/internal/jsonenc"
)

// decoded returns the bytes an element written by Values.Append stands
// for, in its encoding: what a receiver gets back.
func decoded(t *testing.T, e jsonenc.Values, elem []byte) []byte {
	t.Helper()
	switch e.Encoding {
	case jsonenc.EncodingBase64:
		var s string
		if err := json.Unmarshal(elem, &s); err != nil {
			t.Fatalf("base64 element %q: %v", elem, err)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("base64 element %q: %v", elem, err)
		}
		return b
	case jsonenc.EncodingString:
		var s string
		if err := json.Unmarshal(elem, &s); err != nil {
			t.Fatalf("string element %q: %v", elem, err)
		}
		return []byte(s)
	case jsonenc.EncodingJSON:
		return elem
	}
	if bytes.HasPrefix(elem, []byte(`{"$base64":`)) && e.BinaryBase64 {
		var o struct {
			B64 string `json:"$base64"`
		}
		if err := json.Unmarshal(elem, &o); err != nil {
			t.Fatal(err)
		}
		b, err := base64.StdEncoding.DecodeString(o.B64)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if elem[0] == '"' {
		var s string
		if err := json.Unmarshal(elem, &s); err != nil {
			t.Fatal(err)
		}
		// A value that was itself a JSON string is embedded as is.
		return []byte(s)
	}
	return elem
}

var encoders = []jsonenc.Values{
	{Encoding: jsonenc.EncodingAuto}, {Encoding: jsonenc.EncodingAuto, BinaryBase64: true},
	{Encoding: jsonenc.EncodingJSON}, {Encoding: jsonenc.EncodingString}, {Encoding: jsonenc.EncodingBase64},
}

// FuzzValues: every element Append writes is valid JSON in valid UTF-8,
// on one line with OneLine, and stands for exactly the value's bytes; a
// value is refused only when its encoding cannot carry it.
func FuzzValues(f *testing.F) {
	for _, s := range []string{"", "null", `{"a":1}`, " [1,\n2] ", "text", "\"str\"", "1e3", "{\n}",
		"{\"a\":\"caf\xe9 \xc3(\"}", "\"\xff\"", "\xff\xfe\x00\x01\xc3", "\uFFFD", `"\ufffd"`} {
		f.Add([]byte(s), true, false)
		f.Add([]byte(s), false, true)
	}
	f.Fuzz(func(t *testing.T, v []byte, oneLine, tombstone bool) {
		if json.Valid(v) && !jsonenc.MayBeJSON(v) {
			t.Fatalf("MayBeJSON(%q) = false for valid JSON", v)
		}
		if tombstone {
			v = nil
		}
		for _, e := range encoders {
			e.OneLine, e.Section, e.Verb = oneLine, "sink.x", "write"
			got, err := e.Append([]byte("["), v)
			if !bytes.HasPrefix(got, []byte("[")) {
				t.Fatalf("%+v: Append(%q) = %q dropped dst", e, v, got)
			}
			got = got[1:]
			carries := v == nil || e.Encoding == jsonenc.EncodingBase64 || (utf8.Valid(v) &&
				(e.Encoding != jsonenc.EncodingJSON || json.Valid(v))) || e.BinaryBase64
			switch {
			case err != nil && carries:
				t.Fatalf("%+v: Append(%q) refused: %v", e, v, err)
			case err == nil && !carries:
				t.Fatalf("%+v: Append(%q) = %q, want it refused", e, v, got)
			case err != nil:
				if len(got) != 0 {
					t.Fatalf("%+v: Append(%q) failed but wrote %q", e, v, got)
				}
				if strings.Contains(err.Error(), "\uFFFD") || !utf8.ValidString(err.Error()) {
					t.Fatalf("error %q shows replaced bytes", err)
				}
				continue
			}
			if !json.Valid(got) || !utf8.Valid(got) {
				t.Fatalf("%+v: Append(%q) = %q is not UTF-8 JSON", e, v, got)
			}
			if oneLine && bytes.ContainsAny(got, "\r\n") {
				t.Fatalf("%+v: Append(%q) = %q spans lines", e, v, got)
			}
			if v == nil {
				if string(got) != "null" {
					t.Fatalf("%+v: tombstone written as %q", e, got)
				}
				continue
			}
			back := decoded(t, e, got)
			want := v
			if oneLine && json.Valid(v) && e.Encoding != jsonenc.EncodingString && e.Encoding != jsonenc.EncodingBase64 {
				var c bytes.Buffer
				if bytes.ContainsAny(v, "\r\n") && json.Compact(&c, v) == nil {
					want = c.Bytes()
				}
			}
			if e.Encoding == jsonenc.EncodingAuto && json.Valid(v) && utf8.Valid(v) && got[0] == '"' {
				// An embedded JSON string: compare the JSON text.
				back = got
			}
			if !bytes.Equal(back, want) {
				t.Fatalf("%+v: Append(%q) = %q stands for %q", e, v, got, back)
			}
		}
	})
}

func TestValuesAppend(t *testing.T) {
	const (
		binary = "\xff\xfe\x00\x01\xc3"
		rawFF  = "{\"name\":\"caf\xff\"}"
		obj    = `{"a":[1,2]}`
	)
	auto := jsonenc.Values{Encoding: jsonenc.EncodingAuto, OneLine: true, Section: "sink.file", Verb: "write"}
	auto64 := auto
	auto64.BinaryBase64 = true
	js, str, b64 := auto, auto, auto
	js.Encoding, str.Encoding, b64.Encoding = jsonenc.EncodingJSON, jsonenc.EncodingString, jsonenc.EncodingBase64
	enc := func(s string) string { return `"` + base64.StdEncoding.EncodeToString([]byte(s)) + `"` }
	tests := []struct {
		name string
		e    jsonenc.Values
		v    []byte
		want string // "" = refused
		err  string
	}{
		{"auto JSON", auto, []byte(obj), obj, ""},
		{"auto multi-line JSON", auto, []byte("{\n \"a\": 1\n}"), `{"a":1}`, ""},
		{"auto text", auto, []byte("say \"hi\"\n"), `"say \"hi\"\n"`, ""},
		{"auto empty", auto, []byte{}, `""`, ""},
		{"auto tombstone", auto, nil, `null`, ""},
		{"auto binary", auto, []byte(binary), "", "value is not valid UTF-8: byte 0xff at offset 0; set sink.file.value_encoding: base64, or sink.file.binary_values: base64, to write it base64-encoded"},
		{"auto raw 0xff in JSON", auto, []byte(rawFF), "", "JSON value is not valid UTF-8: byte 0xff at offset 12"},
		{"auto base64 binary", auto64, []byte(binary), `{"$base64":` + enc(binary) + `}`, ""},
		{"auto base64 raw 0xff in JSON", auto64, []byte(rawFF), `{"$base64":` + enc(rawFF) + `}`, ""},
		{"json JSON", js, []byte(obj), obj, ""},
		{"json text", js, []byte("hello"), "", "value is not valid JSON: invalid character 'h' looking for beginning of value (offset 1); value_encoding json writes only JSON, set sink.file.value_encoding: auto to write text as strings"},
		{"json empty", js, []byte{}, "", "value is not valid JSON: the value is empty"},
		{"json tombstone", js, nil, "null", ""},
		{"json binary", js, []byte(binary), "", "value is not valid UTF-8: byte 0xff at offset 0; value_encoding json writes only JSON, set sink.file.value_encoding: base64 to write any bytes"},
		{"string JSON", str, []byte(obj), `"{\"a\":[1,2]}"`, ""},
		{"string empty", str, []byte{}, `""`, ""},
		{"string binary", str, []byte(binary), "", "value is not valid UTF-8: byte 0xff at offset 0; value_encoding string writes only text"},
		{"string raw 0xff", str, []byte(rawFF), "", "byte 0xff at offset 12"},
		{"base64 binary", b64, []byte(binary), enc(binary), ""},
		{"base64 empty", b64, []byte{}, `""`, ""},
		{"base64 tombstone", b64, nil, "null", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.e.Append([]byte("x"), tc.v)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Append(%q) = %q, %v; want an error containing %q", tc.v, got, err, tc.err)
			case tc.err != "" && string(got) != "x":
				t.Fatalf("refused, but dst is %q", got)
			case tc.err == "" && (err != nil || string(got) != "x"+tc.want):
				t.Fatalf("Append(%q) = %q, %v; want %q", tc.v, got, err, "x"+tc.want)
			}
		})
	}
}

func TestAppendText(t *testing.T) {
	for in, want := range map[string]string{
		"":           `""`,
		"k1":         `"k1"`,
		"é\u2028":    `"é\u2028"`,
		"k\xff":      `{"$base64":"a/8="}`,
		"\xc3":       `{"$base64":"ww=="}`,
		"a\"b\xfe\n": `{"$base64":"YSJi/go="}`,
	} {
		if got := string(jsonenc.AppendText([]byte("x"), in)); got != "x"+want {
			t.Errorf("AppendText(%q) = %s, want %s", in, got, want)
		}
		if got := string(jsonenc.AppendText([]byte("x"), []byte(in))); got != "x"+want {
			t.Errorf("AppendText([]byte(%q)) = %s, want %s", in, got, want)
		}
	}
}

func TestSettings(t *testing.T) {
	var enc, bin, tomb string
	jsonenc.DefaultSettings(&enc, &bin, &tomb)
	if enc != "auto" || bin != "dead_letter" || tomb != "send" {
		t.Fatalf("defaults %q %q %q", enc, bin, tomb)
	}
	tests := []struct {
		enc, bin, tomb string
		paths          []string
	}{
		{"auto", "dead_letter", "send", nil},
		{"base64", "dead_letter", "drop", nil},
		{"auto", "base64", "send", nil},
		{"utf8", "dead_letter", "send", []string{"value_encoding"}},
		{"json", "base64", "send", []string{"binary_values"}},
		{"auto", "skip", "null", []string{"binary_values", "tombstones"}},
	}
	for _, tc := range tests {
		var l field.List
		jsonenc.ValidateSettings(&l, tc.enc, tc.bin, tc.tomb)
		var paths []string
		for _, e := range field.Split(l.Err()) {
			var fe *field.Error
			if !errors.As(e, &fe) {
				t.Fatalf("%v is not a *field.Error", e)
			}
			paths = append(paths, fe.Path)
		}
		if strings.Join(paths, ",") != strings.Join(tc.paths, ",") {
			t.Errorf("%s/%s/%s: errors at %v, want %v", tc.enc, tc.bin, tc.tomb, paths, tc.paths)
		}
	}
}
