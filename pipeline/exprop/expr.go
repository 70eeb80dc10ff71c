package exprop

import (
	"github.com/spillway-io/spillway/pipeline"
)

// Expr is one compiled expression over a record, for a component that
// computes something from each record (the Kafka sink's topic_expr). It
// sees the variables of the package documentation. It is safe for
// concurrent use.
type Expr struct{ p *program }

// Compile compiles src, an expression of any result type. Errors are
// *Error; Explain words them on one line for a config message.
func Compile(src string) (*Expr, error) {
	p, err := compile(src)
	if err != nil {
		return nil, err
	}
	return &Expr{p: p}, nil
}

// Eval runs e over r and returns its result as expr-lang gives it (a
// string, a number, nil, ...). It fails with an *Error when the
// expression fails, and with an error wrapping ErrInvalidJSON when it uses
// json and r's value is not valid JSON.
func (e *Expr) Eval(r pipeline.Record) (any, error) {
	env, err := e.p.uses.env(r)
	if err != nil {
		return nil, err
	}
	return e.p.run(env)
}

// String returns the expression's source.
func (e *Expr) String() string { return e.p.src }

// Explain words a compile error of Compile, Check, Filter or Map on one
// line, for a config message ("invalid expression: ... (column 3 of the
// expression)"); other errors as their text.
func Explain(err error) string { return oneLine(err) }
