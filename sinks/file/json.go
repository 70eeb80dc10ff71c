package file

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// The two functions below are also in sinks/http (encode.go); they belong in
// a shared internal package once one exists for sinks.

// appendValue appends v as one JSON element on one line: raw when it is
// valid JSON (compacted when it contains a line break), a JSON string
// otherwise, null when empty.
func appendValue(dst, v []byte) []byte {
	if len(v) == 0 {
		return append(dst, "null"...)
	}
	if !mayBeJSON(v) || !json.Valid(v) {
		return appendString(dst, v)
	}
	if bytes.ContainsAny(v, "\r\n") {
		buf := bytes.NewBuffer(dst)
		if json.Compact(buf, v) == nil {
			return buf.Bytes()
		}
		return appendString(dst, v) // unreachable: v is valid
	}
	return append(dst, v...)
}

// mayBeJSON reports whether v starts like a JSON value. It spares json.Valid,
// which allocates an error for every invalid input, on most plain text.
func mayBeJSON(v []byte) bool {
	for _, c := range v {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '{', '[', '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 't', 'f', 'n':
			return true
		}
		return false
	}
	return false
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string exactly as encoding/json does with
// HTML escaping off: invalid UTF-8 becomes U+FFFD, and U+2028 and U+2029
// are escaped.
func appendString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		var rb [utf8.UTFMax]byte
		r, size := utf8.DecodeRune(rb[:copy(rb[:], s[i:])])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
