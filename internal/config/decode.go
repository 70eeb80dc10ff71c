package config

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/spillway-io/spillway/registry"
)

// position is where a key was written.
type position struct{ line, col int }

// A numeric field for which an explicit 0 has a meaning of its own carries
// the struct tag zero:"ok"; for every other numeric key 0 would silently
// mean the default, so writing it is an error.

var (
	durationType = reflect.TypeFor[time.Duration]()
	brokersType  = reflect.TypeFor[Brokers]()
)

// decoder fills the config structs from a yaml.Node tree, strictly: every
// key must exist, every value must have the field's type. It records where
// each key was written and keeps going after a problem so that all of them
// are reported.
type decoder struct {
	file   string
	lookup func(string) (string, bool)
	reg    *registry.Registry
	pos    map[string]position
	zeroOK map[string]bool // paths whose field is tagged zero:"ok"
	errs   []*Error
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Column: n.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// decode stores n into v, which is addressable.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if v.CanAddr() {
		if s, ok := v.Addr().Interface().(slot); ok {
			s.decodeSlot(d, n, path)
			return
		}
	}
	switch v.Type() {
	case durationType:
		d.duration(n, v, path)
		return
	case brokersType:
		d.brokers(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		// A present key allocates its struct even when its value is null
		// ("stdout:") or wrong, so Validate sees which kind was chosen.
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		d.slice(n, v, path)
	case reflect.Map:
		d.stringMap(n, v, path)
	case reflect.String:
		if s, null, ok := d.scalar(n, path, "a string"); ok && !null {
			v.SetString(s)
		}
	case reflect.Int, reflect.Int64:
		d.integer(n, v, path)
	case reflect.Float64:
		d.float(n, v, path)
	case reflect.Bool:
		d.boolean(n, v, path)
	default:
		panic(fmt.Sprintf("config: field %s has unsupported type %s", path, v.Type()))
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// describe names what n is for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "null"
		}
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

// scalar returns the interpolated text of a scalar node. null is true for
// a YAML null, which leaves the field at its zero value; ok is false after
// an error.
func (d *decoder) scalar(n *yaml.Node, path, want string) (s string, null, ok bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected %s, got %s", want, describe(n))
		return "", false, false
	}
	if isNull(n) {
		return "", true, true
	}
	s, probs := interpolate(n.Value, d.lookup)
	for _, p := range probs {
		line := n.Line + strings.Count(n.Value[:p.offset], "\n")
		if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			line++ // the content starts below the | or >
		}
		d.errs = append(d.errs, &Error{File: d.file, Line: line, Column: n.Column, Path: path, Msg: p.msg})
	}
	return s, false, len(probs) == 0
}

// number returns the interpolated text of a scalar that must not be null.
func (d *decoder) number(n *yaml.Node, path, want string) (string, bool) {
	s, null, ok := d.scalar(n, path, want)
	if null {
		d.errorf(n, path, "expected %s, got null", want)
		return "", false
	}
	return strings.TrimSpace(s), ok
}

func (d *decoder) positive(n *yaml.Node, path string, zero bool, shown string) {
	if zero && !d.zeroOK[path] {
		d.errorf(n, path, "must be positive, got %s (leave it out for the default)", shown)
	}
}

func (d *decoder) integer(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.number(n, path, "an integer")
	if !ok {
		return
	}
	i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, v.Type().Bits())
	if err != nil {
		if ne, isNum := err.(*strconv.NumError); isNum && ne.Err == strconv.ErrRange {
			d.errorf(n, path, "integer %s out of range", s)
		} else {
			d.errorf(n, path, "expected an integer, got %q", s)
		}
		return
	}
	v.SetInt(i)
	d.positive(n, path, i == 0, "0")
}

func (d *decoder) float(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.number(n, path, "a number")
	if !ok {
		return
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		d.errorf(n, path, "expected a finite number, got %q", s)
		return
	}
	v.SetFloat(f)
	d.positive(n, path, f == 0, "0")
}

func (d *decoder) boolean(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.number(n, path, "true or false")
	if !ok {
		return
	}
	switch s {
	case "true", "True", "TRUE":
		v.SetBool(true)
	case "false", "False", "FALSE":
		v.SetBool(false)
	default:
		d.errorf(n, path, "expected true or false, got %q", s)
	}
}

// duration accepts time.ParseDuration strings and requires a unit: a bare
// number is ambiguous (seconds? milliseconds?).
func (d *decoder) duration(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.number(n, path, `a duration such as "5s"`)
	if !ok {
		return
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		d.errorf(n, path, `expected a duration with a unit such as "5s" or "250ms", got %s`, s)
		return
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.errorf(n, path, `expected a duration such as "5s" or "250ms", got %q`, s)
		return
	}
	v.SetInt(int64(dur))
	d.positive(n, path, dur == 0, s)
}

// brokers accepts "embedded", "host:port,host:port" or a list of strings.
func (d *decoder) brokers(n *yaml.Node, v reflect.Value, path string) {
	var out Brokers
	add := func(n *yaml.Node, path, s string) {
		s = strings.TrimSpace(s)
		if s == "" {
			d.errorf(n, path, "empty broker address")
			return
		}
		out = append(out, s)
	}
	switch n.Kind {
	case yaml.ScalarNode:
		s, _, ok := d.scalar(n, path, "a string or a list")
		if !ok || strings.TrimSpace(s) == "" {
			break
		}
		for part := range strings.SplitSeq(s, ",") {
			add(n, path, part)
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.pos[p] = position{e.Line, e.Column}
			if s, _, ok := d.scalar(e, p, "a string"); ok {
				add(e, p, s)
			}
		}
	default:
		d.errorf(n, path, `expected "embedded", "host:port,..." or a list, got %s`, describe(n))
	}
	v.Set(reflect.ValueOf(out))
}

func (d *decoder) slice(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, e := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.pos[p] = position{e.Line, e.Column}
		d.decode(e, s.Index(i), p)
	}
	v.Set(s)
}

// mapping calls fn for each key of n after checking that n is a mapping
// with unique scalar keys. It reports false if n is not a mapping.
func (d *decoder) mapping(n *yaml.Node, path string, fn func(key string, k, val *yaml.Node, p string)) bool {
	if isNull(n) {
		return true
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", describe(n))
		return false
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be strings, got %s", describe(k))
			continue
		}
		p := join(path, k.Value)
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			d.errorf(k, p, "merge keys are not supported")
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.errorf(k, p, "duplicate key, first written on line %d", line)
			continue
		}
		seen[k.Value] = k.Line
		d.pos[p] = position{k.Line, k.Column}
		fn(k.Value, k, val, p)
	}
	return true
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	keys, index := fields(v.Type())
	d.mapping(n, path, func(key string, k, val *yaml.Node, p string) {
		f, ok := index[key]
		if !ok {
			d.errorf(k, p, "unknown key%s", suggest(key, keys))
			return
		}
		if f.Tag.Get("zero") == "ok" {
			if d.zeroOK == nil {
				d.zeroOK = map[string]bool{}
			}
			d.zeroOK[p] = true
		}
		d.decode(val, v.FieldByIndex(f.Index), p)
	})
}

func (d *decoder) stringMap(n *yaml.Node, v reflect.Value, path string) {
	if v.Type().Key().Kind() != reflect.String || v.Type().Elem().Kind() != reflect.String {
		panic(fmt.Sprintf("config: field %s has unsupported type %s", path, v.Type()))
	}
	m := reflect.MakeMap(v.Type())
	if d.mapping(n, path, func(key string, _, val *yaml.Node, p string) {
		s, _, ok := d.scalar(val, p, "a string")
		if ok {
			m.SetMapIndex(reflect.ValueOf(key), reflect.ValueOf(s))
		}
	}) {
		v.Set(m)
	}
}

// fields maps the yaml keys of struct type t to its fields, including
// those of embedded structs tagged `yaml:",inline"`.
func fields(t reflect.Type) (keys []string, index map[string]reflect.StructField) {
	index = map[string]reflect.StructField{}
	for _, f := range reflect.VisibleFields(t) {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" || (name == "" && opts == "inline") {
			continue
		}
		if name == "" || !inlined(t, f.Index) {
			continue
		}
		keys = append(keys, name)
		index[name] = f
	}
	return keys, index
}

// inlined reports whether the field at index is reached from t only through
// embedded structs tagged `yaml:",inline"`.
func inlined(t reflect.Type, index []int) bool {
	for _, i := range index[:len(index)-1] {
		f := t.Field(i)
		if _, opts, _ := strings.Cut(f.Tag.Get("yaml"), ","); !f.Anonymous || opts != "inline" {
			return false
		}
		t = f.Type
	}
	return true
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest names the closest known key, or lists them all.
func suggest(key string, keys []string) string {
	if len(keys) == 0 {
		return "; this section takes no keys"
	}
	best, bestDist := "", 3
	lk := strings.ToLower(key)
	for _, k := range keys {
		dist := levenshtein(lk, k)
		if len(lk) >= 4 && (strings.HasPrefix(k, lk) || strings.HasPrefix(lk, k)) {
			dist = min(dist, 2)
		}
		if dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %s?", best)
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	return "; known keys: " + strings.Join(sorted, ", ")
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
