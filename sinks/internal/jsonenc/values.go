package jsonenc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/spillway-io/spillway/field"
)

// Value encodings: the values of a sink's value_encoding key, how a record
// value becomes one JSON element.
const (
	// EncodingAuto writes a value that is valid JSON as is and other UTF-8
	// text as a JSON string; a value that is not valid UTF-8 fails, or is
	// written as {"$base64":"…"} with binary_values base64.
	EncodingAuto = "auto"
	// EncodingJSON writes every value as is; one that is not valid JSON
	// (in UTF-8) fails.
	EncodingJSON = "json"
	// EncodingString writes every value as a JSON string; one that is not
	// valid UTF-8 fails.
	EncodingString = "string"
	// EncodingBase64 writes every value as a JSON string holding its
	// standard base64 encoding (RFC 4648, with padding).
	EncodingBase64 = "base64"
)

// What EncodingAuto does with a value that is not valid UTF-8: the values
// of a sink's binary_values key.
const (
	BinaryDeadLetter = "dead_letter" // the record fails alone, fatal
	BinaryBase64     = "base64"      // {"$base64":"<standard base64>"}
)

// What becomes of a tombstone, a record with a nil value: the values of a
// sink's tombstones key.
const (
	TombstonesSend = "send" // a JSON null
	TombstonesDrop = "drop" // left out; it counts as delivered
)

// DefaultSettings fills in the empty ones of a sink's value_encoding,
// binary_values and tombstones settings: auto, dead_letter and send. It is
// what each such sink's Config.ApplyDefaults calls.
func DefaultSettings(valueEncoding, binaryValues, tombstones *string) {
	if *valueEncoding == "" {
		*valueEncoding = EncodingAuto
	}
	if *binaryValues == "" {
		*binaryValues = BinaryDeadLetter
	}
	if *tombstones == "" {
		*tombstones = TombstonesSend
	}
}

// ValidateSettings adds to l what is wrong with defaulted value_encoding,
// binary_values and tombstones settings, under those keys.
func ValidateSettings(l *field.List, valueEncoding, binaryValues, tombstones string) {
	l.OneOf("value_encoding", valueEncoding, EncodingAuto, EncodingJSON, EncodingString, EncodingBase64)
	l.OneOf("binary_values", binaryValues, BinaryDeadLetter, BinaryBase64)
	if binaryValues == BinaryBase64 && valueEncoding != EncodingAuto {
		l.Add("binary_values", "only with value_encoding %s (with %s, a value the encoding cannot carry is dead-lettered)", EncodingAuto, valueEncoding)
	}
	l.OneOf("tombstones", tombstones, TombstonesSend, TombstonesDrop)
}

// Values writes record values as JSON elements per a sink's value
// encoding. It never replaces bytes: a value the encoding cannot carry is
// refused with the reason. It is read-only once set up and safe for
// concurrent use.
type Values struct {
	Encoding     string // an Encoding constant; "" is EncodingAuto
	BinaryBase64 bool   // with EncodingAuto: write a value that is not valid UTF-8 as {"$base64":"…"} instead of refusing it
	OneLine      bool   // compact a JSON value that spans lines onto one
	// Section and Verb name the sink's config section ("sink.http") and
	// what it does with values ("send") in error messages.
	Section, Verb string
}

// Append appends v as one JSON element and returns the extended slice, or
// returns dst unchanged and an error saying why the encoding cannot carry
// v (naming the offending byte and the setting that would). A nil v is
// null in every encoding; an empty one is "" except with EncodingJSON,
// which refuses it.
func (e *Values) Append(dst, v []byte) ([]byte, error) {
	if v == nil {
		return append(dst, "null"...), nil
	}
	switch e.Encoding {
	case EncodingBase64:
		return appendBase64(dst, v), nil
	case EncodingString:
		if at := InvalidUTF8(v); at >= 0 {
			return dst, fmt.Errorf("value is not valid UTF-8: byte 0x%02x at offset %d; value_encoding %s %ss only text, set %s.value_encoding: %s to %s any bytes",
				v[at], at, EncodingString, e.Verb, e.Section, EncodingBase64, e.Verb)
		}
		return AppendString(dst, v), nil
	case EncodingJSON:
		if at := InvalidUTF8(v); at >= 0 {
			return dst, fmt.Errorf("value is not valid UTF-8: byte 0x%02x at offset %d; value_encoding %s %ss only JSON, set %s.value_encoding: %s to %s any bytes",
				v[at], at, EncodingJSON, e.Verb, e.Section, EncodingBase64, e.Verb)
		}
		if !MayBeJSON(v) || !json.Valid(v) {
			return dst, fmt.Errorf("value is not valid JSON: %s; value_encoding %s %ss only JSON, set %s.value_encoding: %s to %s text as strings",
				jsonProblem(v), EncodingJSON, e.Verb, e.Section, EncodingAuto, e.Verb)
		}
		return appendJSON(dst, v, e.OneLine), nil
	}
	// auto
	if len(v) == 0 {
		return append(dst, `""`...), nil
	}
	if at := InvalidUTF8(v); at >= 0 {
		if e.BinaryBase64 {
			return AppendBase64Object(dst, v), nil
		}
		what := "value"
		if MayBeJSON(v) && json.Valid(v) {
			what = "JSON value"
		}
		return dst, fmt.Errorf("%s is not valid UTF-8: byte 0x%02x at offset %d; set %s.value_encoding: %s, or %s.binary_values: %s, to %s it base64-encoded",
			what, v[at], at, e.Section, EncodingBase64, e.Section, BinaryBase64, e.Verb)
	}
	if MayBeJSON(v) && json.Valid(v) {
		return appendJSON(dst, v, e.OneLine), nil
	}
	return AppendString(dst, v), nil
}

// AppendText appends s as a JSON string when it is valid UTF-8, and as
// {"$base64":"<standard base64>"} otherwise, so no byte is replaced. It
// suits fields that are otherwise always strings (keys, header values),
// where the object cannot be mistaken for a string.
func AppendText[S string | []byte](dst []byte, s S) []byte {
	if out, ok := appendString(dst, s, true); ok {
		return out
	}
	return AppendBase64Object(dst, []byte(s))
}

// AppendBase64Object appends {"$base64":"<standard base64 of v>"}.
func AppendBase64Object(dst, v []byte) []byte {
	dst = append(dst, `{"$base64":`...)
	return append(appendBase64(dst, v), '}')
}

// InvalidUTF8 returns the offset of the first byte of v that is not part
// of a valid UTF-8 sequence, or -1.
func InvalidUTF8(v []byte) int {
	if utf8.Valid(v) {
		return -1
	}
	return invalidAt(v)
}

// invalidAt is InvalidUTF8 for both types, without utf8.Valid's fast path.
func invalidAt[S string | []byte](s S) int {
	var rb [utf8.UTFMax]byte
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			i++
			continue
		}
		// utf8.DecodeRune takes only []byte; decode from a copy on the stack.
		r, size := utf8.DecodeRune(rb[:copy(rb[:], s[i:])])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return -1
}

// appendJSON appends v, valid JSON in UTF-8, as is, or compacted onto one
// line when oneLine is set and v spans several.
func appendJSON(dst, v []byte, oneLine bool) []byte {
	if oneLine && bytes.ContainsAny(v, "\r\n") {
		buf := bytes.NewBuffer(dst)
		if json.Compact(buf, v) == nil {
			return buf.Bytes()
		}
	}
	return append(dst, v...)
}

// appendBase64 appends v as a JSON string of its standard base64 encoding.
func appendBase64(dst, v []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, v)
	return append(dst, '"')
}

// jsonProblem says why v is not valid JSON, for an error message.
func jsonProblem(v []byte) string {
	if len(v) == 0 {
		return "the value is empty"
	}
	var raw json.RawMessage
	err := json.Unmarshal(v, &raw)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%v (offset %d)", se, se.Offset)
	}
	if err != nil {
		return err.Error()
	}
	return "it does not start like a JSON value"
}
