package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/spillway-io/spillway/registry"
)

// Error is one problem in a config file. Parse and Validate return several
// of them joined with errors.Join; use errors.As to get the first.
type Error struct {
	File   string // as given to Parse; empty for a Pipeline built in code
	Line   int    // 1-based; 0 when unknown
	Column int    // 1-based; 0 when unknown
	Path   string // key path such as "sink.writer.max_batch_size" or "operators[1].filter"; empty for the whole file
	Msg    string
}

// Error reads "file:line:column: path: msg", as compilers write
// locations (editors jump to them); the column is left out when unknown.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0 && e.Column > 0:
		fmt.Fprintf(&b, "%s:%d:%d: ", e.File, e.Line, e.Column)
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0 && e.Column > 0:
		fmt.Fprintf(&b, "line %d, column %d: ", e.Line, e.Column)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads the file at path and parses it with Parse, taking environment
// variables from the process.
func Load(path string, opts ...Option) (*Pipeline, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, os.LookupEnv, opts...)
}

// Option adjusts how Parse and Load read a file.
type Option func(*options)

type options struct{ reg *registry.Registry }

// WithRegistry makes the kinds of reg the ones a file may choose from;
// without it they are registry.Builtin's.
func WithRegistry(reg *registry.Registry) Option { return func(o *options) { o.reg = reg } }

// Parse decodes one YAML document, applies the defaults and validates the
// result, so a nil error means a ready-to-use Pipeline. file names the
// source in errors.
//
// Before a scalar value is decoded, ${VAR} is replaced by the environment
// variable VAR (an error if it is unset) and ${VAR:default} by VAR or, if
// VAR is unset or empty, by default; $${ stands for a literal ${. Expansion
// happens inside values, never in keys or comments, and its result is never
// parsed as YAML, so a secret containing ": " or "#" is safe. Inside a flow
// collection ([...] or {...}) quote such a value: ["${TOPIC}"].
//
// Decoding is strict: unknown and duplicate keys, values of the wrong type,
// durations without a unit ("5" instead of "5s") and an explicit zero where
// zero would mean the default are all errors. lookupEnv nil means that no
// variable is set.
//
// On failure Parse returns nil and every problem it found, each an *Error,
// joined with errors.Join and sorted by line.
func Parse(file string, data []byte, lookupEnv func(string) (string, bool), opts ...Option) (*Pipeline, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.reg == nil {
		o.reg = registry.Builtin()
	}
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	root, err := parseYAML(file, data)
	if err != nil {
		return nil, err
	}
	d := &decoder{file: file, lookup: lookupEnv, reg: o.reg, pos: map[string]position{"": {root.Line, root.Column}}}
	p := &Pipeline{reg: o.reg}
	d.decode(root, reflect.ValueOf(p).Elem(), "")
	p.file, p.pos = file, d.pos
	p.ApplyDefaults()

	errs := d.errs
	for _, e := range p.validate() {
		// A value that failed to decode is left at its zero value; do not
		// also report what that zero value breaks.
		if !slices.ContainsFunc(d.errs, func(de *Error) bool { return within(e.Path, de.Path) }) {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	return p, nil
}

// within reports whether path is base or below it.
func within(path, base string) bool {
	if base == "" || path == base {
		return path == base
	}
	rest, ok := strings.CutPrefix(path, base)
	return ok && (rest[0] == '.' || rest[0] == '[')
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML returns the root mapping of data's only document.
func parseYAML(file string, data []byte) (*yaml.Node, error) {
	if err := checkUTF8(file, data); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, &Error{File: file, Msg: "the file is empty"}
		}
		return nil, syntaxError(file, data, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, &Error{File: file, Line: extra.Line, Msg: "only one YAML document is allowed"}
	case err != io.EOF:
		return nil, syntaxError(file, data, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, &Error{File: file, Msg: "the file is empty"}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		if isNull(root) {
			return nil, &Error{File: file, Msg: "the file is empty"}
		}
		return nil, &Error{File: file, Line: root.Line, Column: root.Column, Msg: fmt.Sprintf("expected a mapping at the top level, got %s", describe(root))}
	}
	return root, nil
}

// checkUTF8 reports the first byte that is not UTF-8, with its line and
// column: the YAML parser says only "invalid leading UTF-8 octet".
func checkUTF8(file string, data []byte) *Error {
	if utf8.Valid(data) {
		return nil
	}
	line, col := 1, 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return &Error{File: file, Line: line, Column: col,
				Msg: fmt.Sprintf("invalid UTF-8 (byte 0x%02x at column %d); save the file as UTF-8", data[i], col)}
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		i += size
	}
	return nil
}

func syntaxError(file string, data []byte, err error) *Error {
	e := &Error{File: file, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = m[2]
		if l := problemLine(data, e.Msg); l > 0 {
			e.Line = l
		}
	}
	e.Msg = "invalid YAML: " + e.Msg
	if bytes.Contains(data, []byte("${")) {
		e.Msg += ` (inside [...] or {...}, quote values that use ${VAR}: ["${VAR}"])`
	}
	return e
}

// problemLine finds the line a YAML syntax error is on: the parser reports
// the line where the enclosing block or flow collection starts (a 0-based
// context mark), which points one line or more above the mistake. The first
// prefix of the file, in whole lines, that fails to parse with the same
// message ends at the offending line. Config files are small, so parsing
// each prefix costs nothing noticeable; a file of more than maxProbeLines
// keeps the parser's line. It returns 0 when no prefix fails the same way.
func problemLine(data []byte, msg string) int {
	const maxProbeLines = 2000
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > maxProbeLines {
		return 0
	}
	for k := 1; k <= len(lines); k++ {
		prefix := bytes.Join(lines[:k], nil)
		dec := yaml.NewDecoder(bytes.NewReader(prefix))
		var err error
		for err == nil {
			var n yaml.Node
			err = dec.Decode(&n)
		}
		if err == io.EOF {
			continue
		}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil && m[2] == msg {
			return k
		}
	}
	return 0
}

// joinErrors sorts errs by position and joins them; a single error is
// returned as is.
func joinErrors(errs []*Error) error {
	slices.SortStableFunc(errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	if len(errs) == 1 {
		return errs[0]
	}
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}
