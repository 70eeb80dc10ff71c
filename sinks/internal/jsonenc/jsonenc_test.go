package jsonenc_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/spillway-io/spillway/sinks/internal/jsonenc"
)

// stdString is encoding/json's encoding of s with HTML escaping off.
func stdString(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "a\"b\\c", "\x00\x01\x1f\x7f", "\b\f\n\r\t", "<&>", "\u2028\u2029", "é\xffx\xc3", "\xed\xa0\x80", "😀",
		"\xc2\x80\xdf\xbf", "\xc2", "x\xc2A", "\xc1\xbf", "\xc0\x80", "\xe2\x80\xa8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := append([]byte("prefix"), stdString(t, s)...)
		if got := jsonenc.AppendString([]byte("prefix"), s); !bytes.Equal(got, want) {
			t.Fatalf("AppendString(%q) = %q, want %q", s, got, want)
		}
		if got := jsonenc.AppendString([]byte("prefix"), []byte(s)); !bytes.Equal(got, want) {
			t.Fatalf("AppendString([]byte(%q)) = %q, want %q", s, got, want)
		}
	})
}

func TestMayBeJSON(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", false},
		{" \t\r\n", false},
		{`{"a":1}`, true},
		{" \n[1]", true},
		{`"s"`, true},
		{"-1", true},
		{"0", true},
		{"true", true},
		{"false", true},
		{"null", true},
		{"nope", true}, // only the first byte is checked
		{"text", true},
		{"plain", false},
		{"<xml/>", false},
		{"\xef\xbb\xbf{}", false}, // a BOM is not JSON white space
		{"\v{}", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := jsonenc.MayBeJSON([]byte(tc.in)); got != tc.want {
				t.Errorf("MayBeJSON(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}
