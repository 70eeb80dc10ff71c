package config

import (
	"fmt"
	"strings"
)

// interpolation is one problem found while expanding a value.
type interpolation struct {
	offset int // byte offset of the "${" in the input
	msg    string
}

// interpolate expands ${VAR} and ${VAR:default} in s. The default applies
// when VAR is unset or empty and runs to the first "}". "$${" is a literal
// "${"; any other "$" is kept as is. It returns the problems in order; s
// is expanded as far as possible even when there are some.
func interpolate(s string, lookup func(string) (string, bool)) (string, []interpolation) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	var probs []interpolation
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString("${")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			probs = append(probs, interpolation{i, fmt.Sprintf("unterminated ${ in %q (write $${ for a literal ${)", s[i:])})
			b.WriteString(s[i:])
			break
		}
		body := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(body, ":")
		switch {
		case !validEnvName(name):
			probs = append(probs, interpolation{i, fmt.Sprintf("invalid environment variable name %q in ${%s}", name, body)})
		case strings.Contains(def, "${"):
			probs = append(probs, interpolation{i, fmt.Sprintf("nested ${ in the default of %s is not supported", name)})
		default:
			v, ok := lookup(name)
			switch {
			case ok && (v != "" || !hasDef):
				b.WriteString(v)
			case hasDef:
				b.WriteString(def)
			default:
				probs = append(probs, interpolation{i, fmt.Sprintf("environment variable %s is not set (write ${%s:default} for a default)", name, name)})
			}
		}
		i += 2 + end + 1
	}
	return b.String(), probs
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
