package pipeline

import (
	"context"
	"fmt"
)

// Operator transforms one record into zero or more records. Returning no
// records drops the input on purpose (it counts as done for checkpointing);
// returning an error sends the input to the dead-letter queue with the error.
// Operators run on the source's goroutine, one record at a time, and must not
// keep the input after returning.
type Operator func(ctx context.Context, r Record) ([]Record, error)

// Filter keeps records for which keep returns true.
func Filter(keep func(Record) (bool, error)) Operator {
	return func(_ context.Context, r Record) ([]Record, error) {
		ok, err := keep(r)
		if err != nil || !ok {
			return nil, err
		}
		return []Record{r}, nil
	}
}

// Map replaces each record by fn's result.
func Map(fn func(Record) (Record, error)) Operator {
	return func(_ context.Context, r Record) ([]Record, error) {
		out, err := fn(r)
		if err != nil {
			return nil, err
		}
		return []Record{out}, nil
	}
}

// FlatMap replaces each record by any number of records.
func FlatMap(fn func(Record) ([]Record, error)) Operator {
	return func(_ context.Context, r Record) ([]Record, error) { return fn(r) }
}

// OperatorError is the error an operator chain reports for one input record.
type OperatorError struct {
	Operator string // name of the failing operator, "op[2]" when unnamed
	Err      error
}

func (e *OperatorError) Error() string { return fmt.Sprintf("operator %s: %v", e.Operator, e.Err) }
func (e *OperatorError) Unwrap() error { return e.Err }

// Named pairs an operator with the name used in errors and dead-letter
// headers.
type Named struct {
	Name string
	Op   Operator
}

// Chain applies operators in order. The zero Chain passes records through.
// It is not safe for concurrent use only if an operator is not.
type Chain []Named

// Apply runs r through the chain and returns the surviving records, each
// wired so that r is acknowledged once all of them are done. On error the
// returned error is an *OperatorError and no output is returned; the caller
// owns r's acknowledgement.
func (c Chain) Apply(ctx context.Context, r Record) ([]Record, error) {
	if len(c) == 0 {
		return []Record{r}, nil
	}
	cur := []Record{r}
	for i, n := range c {
		var next []Record
		for _, in := range cur {
			out, err := n.Op(ctx, in)
			if err != nil {
				name := n.Name
				if name == "" {
					name = fmt.Sprintf("op[%d]", i)
				}
				return nil, &OperatorError{Operator: name, Err: err}
			}
			next = append(next, out...)
		}
		cur = next
		if len(cur) == 0 {
			break
		}
	}
	return Fanout(r, cur), nil
}
