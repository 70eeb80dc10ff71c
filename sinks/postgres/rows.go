package pgsink

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/pipeline/exprop"
	"github.com/spillway-io/spillway/sinks"
)

// category is how a value becomes the text input of a column's type.
type category uint8

const (
	catText  category = iota // any type with a text input function
	catJSON                  // json, jsonb: a string is JSON text
	catBytea                 // bytea: a string's bytes, hex-encoded
)

// variable is a column expression that is one of the record's plain
// variables, read without running the expression.
type variable uint8

const (
	varNone variable = iota
	varKey
	varValue
	varTopic
	varPartition
	varOffset
	varTimestamp
)

// variableOf recognises an expression that is a plain variable.
func variableOf(src string) variable {
	switch strings.TrimSpace(src) {
	case "key":
		return varKey
	case "value":
		return varValue
	case "topic":
		return varTopic
	case "partition":
		return varPartition
	case "offset":
		return varOffset
	case "timestamp":
		return varTimestamp
	}
	return varNone
}

// column is one target column as the sink writes it.
type column struct {
	name  string   // as configured
	ident string   // quoted for SQL
	typ   string   // the table's type, as format_type gives it
	plain string   // the same without its modifier (for arrays of it)
	cat   category // from the table's type
	v     variable // varNone: expr computes it
	expr  *exprop.Expr
	slot  int // index in the combined expression's result (v == varNone)
}

// evaluator computes the text of every column of a record.
type evaluator struct {
	cols []column
	// combined evaluates every computed column in one run over one
	// environment (one JSON decode per record); nil when there is no
	// computed column or the combination does not compile, and then each
	// runs alone.
	combined *exprop.Expr
	computed int // columns with v == varNone
}

func newEvaluator(cols []column) *evaluator {
	e := &evaluator{cols: cols}
	var parts []string
	for i := range e.cols {
		c := &e.cols[i]
		if c.v = variableOf(c.expr.String()); c.v != varNone {
			continue
		}
		c.slot = e.computed
		e.computed++
		parts = append(parts, "("+c.expr.String()+"\n)")
	}
	if e.computed > 1 {
		if x, err := exprop.Compile("[" + strings.Join(parts, ",\n") + "]"); err == nil {
			e.combined = x
		}
	}
	return e
}

// span is one field of a row in a rows arena: bytes [start, end), or NULL.
type span struct {
	start, end int32
	null       bool
}

// rows holds the text of a batch's fields.
type rows struct {
	ncols  int
	arena  []byte
	fields []span // record i's column j at i*ncols+j
	failed []error
	vals   []any // scratch for one record's computed values
}

func (w *rows) reset(n, ncols int) {
	w.ncols = ncols
	if w.arena == nil {
		w.arena = make([]byte, 0, 64<<10)
	}
	w.arena = w.arena[:0]
	w.fields = grow(w.fields, n*ncols)
	w.failed = grow(w.failed, n)
	clear(w.failed)
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// field returns the bytes of record i's column j (nil for NULL; a
// non-nil empty slice for an empty text).
func (w *rows) field(i, j int) []byte {
	f := w.fields[i*w.ncols+j]
	if f.null {
		return nil
	}
	return w.arena[f.start:f.end:f.end]
}

// build evaluates every column of every record of batch into w. A record
// whose expressions fail, or whose value cannot be written as the
// column's text, gets a fatal error in w.failed.
func (e *evaluator) build(w *rows, batch []pipeline.Record) {
	w.reset(len(batch), len(e.cols))
	for i := range batch {
		mark := len(w.arena)
		if err := e.record(w, i, &batch[i]); err != nil {
			w.failed[i] = err
			w.arena = w.arena[:mark]
		}
	}
}

func (e *evaluator) record(w *rows, i int, r *pipeline.Record) error {
	if e.computed > 0 {
		if err := e.compute(w, r); err != nil {
			return err
		}
	}
	for j := range e.cols {
		c := &e.cols[j]
		start := len(w.arena)
		null := false
		var err error
		switch c.v {
		case varKey:
			w.arena, err = appendBytes(w.arena, r.Key, c.cat)
		case varValue:
			w.arena, err = appendBytes(w.arena, r.Value, c.cat)
		case varTopic:
			w.arena, err = appendValue(w.arena, r.Origin.Topic, c.cat)
		case varPartition:
			w.arena = strconv.AppendInt(w.arena, int64(r.Origin.Partition), 10)
		case varOffset:
			w.arena = strconv.AppendInt(w.arena, r.Origin.Offset, 10)
		case varTimestamp:
			w.arena, err = appendValue(w.arena, r.Timestamp, c.cat)
		default:
			v := w.vals[c.slot]
			null = v == nil
			if !null {
				w.arena, err = appendValue(w.arena, v, c.cat)
			}
		}
		if err != nil {
			return sinks.AsFatal(fmt.Errorf("postgres sink: column %q (%s): %w", c.name, c.typ, err))
		}
		w.fields[i*w.ncols+j] = span{start: int32(start), end: int32(len(w.arena)), null: null}
	}
	return nil
}

// compute runs the computed columns' expressions over r into w.vals.
func (e *evaluator) compute(w *rows, r *pipeline.Record) error {
	w.vals = grow(w.vals, e.computed)
	if e.combined != nil {
		out, err := e.combined.Eval(*r)
		if list, ok := out.([]any); err == nil && ok && len(list) == e.computed {
			copy(w.vals, list)
			return nil
		}
		// Run each alone to name the column that failed.
	}
	for j := range e.cols {
		c := &e.cols[j]
		if c.v != varNone {
			continue
		}
		v, err := c.expr.Eval(*r)
		if err != nil {
			return sinks.AsFatal(fmt.Errorf("postgres sink: column %q: %w", c.name, err))
		}
		w.vals[c.slot] = v
	}
	return nil
}

// appendBytes appends b, a key or value, as a column's text.
func appendBytes(dst, b []byte, cat category) ([]byte, error) {
	if cat == catBytea {
		return appendHex(dst, b), nil
	}
	return append(dst, b...), nil
}

func appendHex(dst, b []byte) []byte {
	dst = append(dst, `\x`...)
	return hex.AppendEncode(dst, b)
}

// appendValue appends an expression's result v (not nil) as the text
// input of a column of category cat.
func appendValue(dst []byte, v any, cat category) ([]byte, error) {
	switch v := v.(type) {
	case string:
		if cat == catBytea {
			return appendHex(dst, []byte(v)), nil
		}
		return append(dst, v...), nil
	case []byte:
		return appendBytes(dst, v, cat)
	case bool:
		return strconv.AppendBool(dst, v), nil
	case int:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(dst, v, 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case uint64:
		return strconv.AppendUint(dst, v, 10), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if cat == catJSON {
				return dst, fmt.Errorf("%v is not a JSON number", v)
			}
			switch {
			case math.IsNaN(v):
				return append(dst, "NaN"...), nil
			case v > 0:
				return append(dst, "Infinity"...), nil
			}
			return append(dst, "-Infinity"...), nil
		}
		return strconv.AppendFloat(dst, v, 'g', -1, 64), nil
	case time.Time:
		if cat == catJSON {
			dst = append(dst, '"')
			dst = v.AppendFormat(dst, time.RFC3339Nano)
			return append(dst, '"'), nil
		}
		return v.AppendFormat(dst, time.RFC3339Nano), nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return dst, fmt.Errorf("result %T cannot be written as JSON: %w", v, err)
	}
	out := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	if cat == catBytea {
		return appendHex(dst, out), nil
	}
	return append(dst, out...), nil
}

// appendElem appends field f as an element of an array literal: NULL, or
// double-quoted with backslash and double quote escaped.
func appendElem(dst, f []byte, null bool) []byte {
	if null {
		return append(dst, "NULL"...)
	}
	dst = append(dst, '"')
	start := 0
	for i, c := range f {
		if c == '"' || c == '\\' {
			dst = append(dst, f[start:i]...)
			dst = append(dst, '\\', c)
			start = i + 1
		}
	}
	dst = append(dst, f[start:]...)
	return append(dst, '"')
}

// appendCopy appends field f to a COPY text-format line: \N for NULL,
// backslash, newline, carriage return and tab escaped.
func appendCopy(dst, f []byte, null bool) []byte {
	if null {
		return append(dst, `\N`...)
	}
	start := 0
	for i, c := range f {
		var esc string
		switch c {
		case '\\':
			esc = `\\`
		case '\n':
			esc = `\n`
		case '\r':
			esc = `\r`
		case '\t':
			esc = `\t`
		default:
			continue
		}
		dst = append(dst, f[start:i]...)
		dst = append(dst, esc...)
		start = i + 1
	}
	return append(dst, f[start:]...)
}
