package exprop

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
)

// FilterConfig is a filter operator's config: one boolean expression,
// written as the value of the filter key (filter: 'json.amount > 10').
type FilterConfig string

// Validate compiles the expression.
func (c FilterConfig) Validate() error {
	var l field.List
	if _, err := Filter(string(c)); err != nil {
		l.Add("", "%s", oneLine(err))
	}
	return l.Err()
}

// New builds the filter.
func (c FilterConfig) New() (pipeline.Operator, error) { return Filter(string(c)) }

// MapConfig is a map operator's config: each non-empty field is an
// expression whose string result replaces that part of the record.
type MapConfig struct {
	Key     string            `yaml:"key"`
	Value   string            `yaml:"value"`
	Headers map[string]string `yaml:"headers"` // header name → expression
}

// Validate compiles every expression and checks header names.
func (c MapConfig) Validate() error {
	var l field.List
	if c.Key == "" && c.Value == "" && len(c.Headers) == 0 {
		l.Add("", "needs at least one of key, value, headers")
	}
	for _, k := range []struct{ path, src string }{{"key", c.Key}, {"value", c.Value}} {
		if k.src == "" {
			continue
		}
		if msg := checkMsg(k.src); msg != "" {
			l.Add(k.path, "%s", msg)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		src, path := c.Headers[name], "headers."+name
		if !validHeaderName(name) {
			l.Add(path, "invalid header name %q", name)
		}
		if msg := checkMsg(src); msg != "" {
			l.Add(path, "%s", msg)
		}
	}
	return l.Err()
}

// New builds the map operator.
func (c MapConfig) New() (pipeline.Operator, error) { return Map(c.Key, c.Value, c.Headers) }

// checkMsg compiles src and says on one line what is wrong, or "".
func checkMsg(src string) string {
	if err := Check(src); err != nil {
		return oneLine(err)
	}
	return ""
}

// oneLine formats a compile error on one line.
func oneLine(err error) string {
	var e *Error
	if !errors.As(err, &e) {
		return err.Error()
	}
	if e.Msg == "empty expression" {
		return "expression is empty"
	}
	msg := "invalid expression: " + e.Msg
	switch {
	case e.Line > 1:
		msg += fmt.Sprintf(" (line %d, column %d of the expression)", e.Line, e.Column)
	case e.Column > 0:
		msg += fmt.Sprintf(" (column %d of the expression)", e.Column)
	}
	return msg
}

// validHeaderName reports whether s is a valid header name (an HTTP
// token): map writes headers the HTTP sink may forward.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
