// Package exprop builds pipeline operators from expr-lang expressions
// (github.com/expr-lang/expr), the filter and map steps of a pipeline file.
//
// An expression sees one record through these variables:
//
//	key        string             the record key
//	value      string             the record value
//	json       any                the value decoded as JSON (see below)
//	headers    map[string]string  the headers; the last one wins for a repeated name
//	topic      string             the origin topic
//	partition  int                the origin partition
//	offset     int                the origin offset
//	timestamp  time.Time          the record timestamp
//
// In json, objects are map[string]any, arrays []any, integers that fit in
// int64 are int and other numbers float64, so json.id keeps the precision
// of a large id and json.n % 2 works.
//
// Expressions are type-checked when they are compiled, so a misspelt
// variable or a filter that is not boolean is reported at config time.
// The value is decoded as JSON only for expressions that mention json; for
// those, a record whose value is not valid JSON (an empty value included)
// fails with an error wrapping ErrInvalidJSON. A failing operator never
// panics: its error sends the record to the dead-letter queue.
package exprop

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/spillway-io/spillway/pipeline"
)

// ErrInvalidJSON is wrapped by the error of an operator whose expression
// uses json on a record whose value is not valid JSON.
var ErrInvalidJSON = errors.New("record value is not valid JSON")

// Error is an expression that failed to compile or to run.
type Error struct {
	Expr   string // the expression's source
	Line   int    // 1-based line in Expr; 0 when unknown
	Column int    // 1-based column in Expr; 0 when unknown
	Msg    string // one line, without the position
	Err    error  // the underlying error, often expr's *file.Error
}

func (e *Error) Error() string {
	pos := ""
	switch {
	case e.Line > 1:
		pos = fmt.Sprintf(" (line %d, column %d)", e.Line, e.Column)
	case e.Column > 0:
		pos = fmt.Sprintf(" (column %d)", e.Column)
	}
	return fmt.Sprintf("expression %q: %s%s", e.Expr, e.Msg, pos)
}

func (e *Error) Unwrap() error { return e.Err }

func exprError(src string, err error) *Error {
	e := &Error{Expr: src, Msg: err.Error(), Err: err}
	var fe *file.Error
	if errors.As(err, &fe) {
		e.Msg = fe.Message
		if fe.Line > 0 {
			e.Line, e.Column = fe.Line, fe.Column+1
		}
	}
	return e
}

// env is what an expression sees; the expr tags are the variable names.
type env struct {
	Key       string            `expr:"key"`
	Value     string            `expr:"value"`
	JSON      any               `expr:"json"`
	Headers   map[string]string `expr:"headers"`
	Topic     string            `expr:"topic"`
	Partition int               `expr:"partition"`
	Offset    int               `expr:"offset"`
	Timestamp time.Time         `expr:"timestamp"`
}

// uses says which costly variables an expression reads, so the environment
// converts only those.
type uses struct{ key, value, json, headers bool }

// program is one compiled expression. It is safe for concurrent use.
type program struct {
	src  string
	prog *vm.Program
	uses uses
	vms  sync.Pool // *vm.VM; a VM is reusable but not concurrency-safe
}

func compile(src string, opts ...expr.Option) (*program, error) {
	if src == "" {
		return nil, &Error{Expr: src, Msg: "empty expression"}
	}
	opts = append([]expr.Option{expr.Env(env{})}, opts...)
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, exprError(src, err)
	}
	p := &program{src: src, prog: prog, uses: scan(prog.Node())}
	p.vms.New = func() any { return new(vm.VM) }
	return p, nil
}

// scan reports the variables node reads. $env.name and $env["name"] read
// one variable; any other use of $env may read all of them.
func scan(node ast.Node) uses {
	var u uses
	set := func(name string) {
		switch name {
		case "key":
			u.key = true
		case "value":
			u.value = true
		case "json":
			u.json = true
		case "headers":
			u.headers = true
		}
	}
	envs, named := 0, 0
	ast.Find(node, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.IdentifierNode:
			if n.Value == "$env" {
				envs++
			} else {
				set(n.Value)
			}
		case *ast.MemberNode:
			if id, ok := n.Node.(*ast.IdentifierNode); ok && id.Value == "$env" {
				if s, ok := n.Property.(*ast.StringNode); ok {
					named++
					set(s.Value)
				}
			}
		}
		return false
	})
	if envs > named {
		u = uses{true, true, true, true}
	}
	return u
}

func (u uses) or(v uses) uses {
	return uses{u.key || v.key, u.value || v.value, u.json || v.json, u.headers || v.headers}
}

// env builds the environment of r. It fails only when the value must be
// decoded as JSON and is not valid JSON.
func (u uses) env(r pipeline.Record) (*env, error) {
	e := &env{
		Topic:     r.Origin.Topic,
		Partition: int(r.Origin.Partition),
		Offset:    int(r.Origin.Offset),
		Timestamp: r.Timestamp,
	}
	if u.key {
		e.Key = string(r.Key)
	}
	if u.value {
		e.Value = string(r.Value)
	}
	if u.json {
		v, err := decodeJSON(r.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidJSON, err)
		}
		e.JSON = v
	}
	if u.headers && len(r.Headers) > 0 {
		e.Headers = make(map[string]string, len(r.Headers))
		for _, h := range r.Headers {
			e.Headers[h.Key] = string(h.Value)
		}
	}
	return e, nil
}

// decodeJSON decodes one JSON value. Integers that fit in int64 become int
// so that they keep their precision and work with integer operators such as
// %; other numbers become float64.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if err == io.EOF {
			return nil, errors.New("empty value")
		}
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid data after the JSON value")
	}
	return numbers(v)
}

// numbers replaces the json.Numbers in v, in place.
func numbers(v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 0); err == nil {
			return int(i), nil
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return nil, fmt.Errorf("number %s out of range", v)
		}
		return f, nil
	case map[string]any:
		for k, x := range v {
			n, err := numbers(x)
			if err != nil {
				return nil, err
			}
			v[k] = n
		}
	case []any:
		for i, x := range v {
			n, err := numbers(x)
			if err != nil {
				return nil, err
			}
			v[i] = n
		}
	}
	return v, nil
}

func (p *program) run(e *env) (any, error) {
	m := p.vms.Get().(*vm.VM)
	out, err := m.Run(p.prog, e)
	p.vms.Put(m)
	if err != nil {
		xe := exprError(p.src, err)
		if p.uses.json {
			// expr's own message for a field of a non-object ("invalid
			// operation: int(string)") does not say that the record's
			// value is the problem; name what the value is.
			if kind := jsonKind(e.JSON); kind != "object" {
				xe.Msg += "; the record's value is a JSON " + kind + ", not an object"
			}
		}
		return nil, xe
	}
	return out, nil
}

// jsonKind names the JSON type of a decoded value.
func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return "number"
}

// Check compiles src as an expression of any result type and reports
// whether it is valid. The error is an *Error.
func Check(src string) error {
	_, err := compile(src)
	return err
}

// Filter returns an operator that keeps the records for which the boolean
// expression src is true and drops the others; a nil result, such as
// json.flag for a missing field, counts as false. Compile errors, including
// a result type that is not boolean, are *Error.
//
// The operator fails with an *Error when the expression fails at run time
// (json.a.b where a is missing; json.a?.b is nil instead), and with an
// error wrapping ErrInvalidJSON as described in the package documentation.
// It is safe for concurrent use.
func Filter(src string) (pipeline.Operator, error) {
	p, err := compile(src, expr.AsBool())
	if err != nil {
		return nil, err
	}
	return pipeline.Filter(func(r pipeline.Record) (bool, error) {
		e, err := p.uses.env(r)
		if err != nil {
			return false, err
		}
		out, err := p.run(e)
		if err != nil {
			return false, err
		}
		keep, ok := out.(bool)
		if !ok {
			return false, &Error{Expr: src, Msg: fmt.Sprintf("filter result is %s, want bool", describe(out))}
		}
		return keep, nil
	}), nil
}

// Map returns an operator that rewrites parts of a record. Each non-empty
// expression replaces its part: key, value, or the header named by the map
// key (existing headers of that name are removed, the new ones are appended
// in name order; other headers are kept). All expressions read the input
// record. A string or []byte result is used as is; any other result,
// nil included, is encoded as JSON (nil becomes "null", a number 5 becomes
// "5").
//
// Compile errors wrap an *Error and name the part ("map value: ..."); an
// error is also returned if there is nothing to rewrite. The operator returns a new
// record and never writes to the input's Key, Value or Headers arrays:
// rewritten parts and Headers are fresh slices, unchanged Key and Value
// share the input's arrays with their capacity clipped so that appending
// to them copies. It is safe for concurrent use.
func Map(key, value string, headers map[string]string) (pipeline.Operator, error) {
	type part struct {
		name string // header name
		prog *program
	}
	var kp, vp *program
	var err error
	if key != "" {
		if kp, err = compile(key); err != nil {
			return nil, fmt.Errorf("map key: %w", err)
		}
	}
	if value != "" {
		if vp, err = compile(value); err != nil {
			return nil, fmt.Errorf("map value: %w", err)
		}
	}
	names := make([]string, 0, len(headers))
	for name := range headers {
		names = append(names, name)
	}
	sort.Strings(names)
	hps := make([]part, 0, len(names))
	replaced := make(map[string]bool, len(names)) // the caller keeps headers
	for _, name := range names {
		if name == "" {
			return nil, errors.New("map headers: empty header name")
		}
		p, err := compile(headers[name])
		if err != nil {
			return nil, fmt.Errorf("map header %q: %w", name, err)
		}
		hps = append(hps, part{name, p})
		replaced[name] = true
	}
	if kp == nil && vp == nil && len(hps) == 0 {
		return nil, errors.New("map: no key, value or header expression")
	}

	u := uses{}
	for _, p := range []*program{kp, vp} {
		if p != nil {
			u = u.or(p.uses)
		}
	}
	for _, h := range hps {
		u = u.or(h.prog.uses)
	}

	return pipeline.Map(func(r pipeline.Record) (pipeline.Record, error) {
		e, err := u.env(r)
		if err != nil {
			return pipeline.Record{}, err
		}
		out := r
		out.Key = slices.Clip(r.Key)
		out.Value = slices.Clip(r.Value)
		if kp != nil {
			if out.Key, err = eval(kp, e); err != nil {
				return pipeline.Record{}, err
			}
		}
		if vp != nil {
			if out.Value, err = eval(vp, e); err != nil {
				return pipeline.Record{}, err
			}
		}
		out.Headers = make([]pipeline.Header, 0, len(r.Headers)+len(hps))
		for _, h := range r.Headers {
			if !replaced[h.Key] {
				out.Headers = append(out.Headers, h)
			}
		}
		for _, h := range hps {
			v, err := eval(h.prog, e)
			if err != nil {
				return pipeline.Record{}, err
			}
			out.Headers = append(out.Headers, pipeline.Header{Key: h.name, Value: v})
		}
		if len(out.Headers) == 0 {
			out.Headers = nil
		}
		return out, nil
	}), nil
}

// eval runs p and converts its result to bytes.
func eval(p *program, e *env) ([]byte, error) {
	out, err := p.run(e)
	if err != nil {
		return nil, err
	}
	switch v := out.(type) {
	case string:
		return []byte(v), nil
	case []byte:
		return slices.Clone(v), nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, &Error{Expr: p.src, Msg: fmt.Sprintf("cannot encode %s result as JSON: %v", describe(out), err), Err: err}
	}
	return b, nil
}

func describe(v any) string {
	if v == nil {
		return "nil"
	}
	return fmt.Sprintf("%T", v)
}
