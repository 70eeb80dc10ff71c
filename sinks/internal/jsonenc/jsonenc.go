// Package jsonenc appends JSON values to byte slices for the sinks that
// write records as JSON (sinks/file, sinks/http), without reflection and,
// on the common paths, without allocating. Values is the one
// implementation of those sinks' value_encoding, binary_values and
// tombstones settings (DefaultSettings, ValidateSettings): record bytes
// are never replaced, a value an encoding cannot carry is refused.
//
// Its functions are pure: they only append to dst and are safe for
// concurrent use on distinct slices.
package jsonenc

import (
	"unicode/utf8"
)

// MayBeJSON reports whether the first byte of v after JSON white space can
// start a JSON value. It is a cheap filter in front of json.Valid, which
// allocates an error for every invalid input, so most plain text skips it;
// true does not mean v is valid.
func MayBeJSON(v []byte) bool {
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

// AppendString appends s as a JSON string, byte for byte as encoding/json
// encodes it with HTML escaping off: invalid UTF-8 becomes U+FFFD, and
// U+2028 and U+2029 are escaped. Callers that must not replace bytes check
// s first (InvalidUTF8) or use AppendText.
func AppendString[S string | []byte](dst []byte, s S) []byte {
	dst, _ = appendString(dst, s, false)
	return dst
}

// appendString is AppendString; when strict is set, it stops at the first
// invalid UTF-8 byte and returns false, with dst extended by a partial
// string the caller discards.
func appendString[S string | []byte](dst []byte, s S, strict bool) ([]byte, bool) {
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
		// A lead byte 0xc2-0xdf and one continuation byte always form a
		// valid rune below U+0800, so the common accented letters need no
		// decoding.
		if c < 0xe0 && c >= 0xc2 && i+1 < len(s) && s[i+1]&0xc0 == 0x80 {
			i += 2
			continue
		}
		// utf8.DecodeRune takes only []byte; a rune is at most UTFMax bytes,
		// so decode from a copy on the stack that serves both types.
		var rb [utf8.UTFMax]byte
		r, size := utf8.DecodeRune(rb[:copy(rb[:], s[i:])])
		if r == utf8.RuneError && size == 1 {
			if strict {
				return dst, false
			}
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
	return append(dst, '"'), true
}
