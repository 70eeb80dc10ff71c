package pgsink

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// outcome turns the transaction's error (nil: committed) into
// WriteBatch's result (see WriteBatch).
func (s *Sink) outcome(ctx context.Context, w *work, batch []pipeline.Record, err error) error {
	if err == nil {
		return s.entries(w, nil)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("postgres sink: %w (%v)", ctx.Err(), err)
	}
	k := kindOf(err)
	if k == kindCtx {
		return fmt.Errorf("postgres sink: %w", err)
	}
	var pe *pgconn.PgError
	if k == kindData && errors.As(err, &pe) {
		if s.cfg.Mode == ModeCopy {
			if line, col, ok := copyLine(pe); ok && line <= len(w.sent) {
				return s.copyRefused(ctx, w, w.sent[line-1], col, pe, err)
			}
		}
		if len(w.sent) == 1 {
			i := w.sent[0]
			re := &rowError{pe: pe}
			if pe.Code[:2] == "22" && pe.ColumnName == "" {
				re.column, re.typ = s.probe(ctx, w, i)
			}
			rerr := sinks.AsFatal(&sinks.DetailedError{Err: re, Details: re.details()})
			return s.entries(w, func(j int) error {
				if j == i {
					return rerr
				}
				return sinks.AsResend(err) // superseded by i: goes again
			})
		}
	}
	werr := fmt.Errorf("postgres sink: write %d rows to %s: %w", len(w.sent), s.stmt.table, err)
	if k == kindData {
		werr = fmt.Errorf("postgres sink: %d rows refused together, one or more of them bad: %w", len(w.sent), err)
	}
	whole := true
	for _, st := range w.states {
		if st == stFailed || st == stSkipped {
			whole = false
		}
	}
	if whole {
		return wrap(werr, k, false)
	}
	shared := wrap(werr, k, true)
	return s.entries(w, func(int) error { return shared })
}

// copyRefused reports the row of record i, which COPY refused at column
// col ("" when the server did not say), alone: the others go again.
func (s *Sink) copyRefused(ctx context.Context, w *work, i int, col string, pe *pgconn.PgError, err error) error {
	re := &rowError{pe: pe}
	for _, c := range s.cols {
		if c.name == col {
			re.column, re.typ = c.name, c.typ
		}
	}
	if re.column == "" && pe.Code[:2] == "22" && pe.ColumnName == "" {
		re.column, re.typ = s.probe(ctx, w, i)
	}
	rerr := sinks.AsFatal(&sinks.DetailedError{Err: re, Details: re.details()})
	resend := sinks.AsResend(fmt.Errorf("postgres sink: not written: another row of its COPY was refused: %w", err))
	return s.entries(w, func(j int) error {
		if j == i {
			return rerr
		}
		return resend
	})
}

// entries is the *sinks.BatchError of a batch whose records failing their
// expressions are fatal alone and whose records to write (or superseded)
// failed with notWritten (nil: they were written), or nil when nothing
// failed. Skipped records were written before.
func (s *Sink) entries(w *work, notWritten func(i int) error) error {
	var failed []sinks.EntryError
	for i, st := range w.states {
		switch {
		case st == stFailed:
			failed = append(failed, sinks.EntryError{Index: i, Err: w.rows.failed[i]})
		case (st == stWrite || st == stSuperseded) && notWritten != nil:
			failed = append(failed, sinks.EntryError{Index: i, Err: notWritten(i)})
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &sinks.BatchError{Failed: failed}
}

// probe finds the column of record i's row whose value the database
// cannot read as the column's type, by casting each value alone; "" when
// none fails alone (a value too long for a varchar(n), say, which an
// explicit cast truncates).
func (s *Sink) probe(ctx context.Context, w *work, i int) (name, typ string) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return "", ""
	}
	defer conn.Release()
	pc := conn.Conn().PgConn()
	for j, c := range s.cols {
		f := w.rows.field(i, j)
		if f == nil {
			continue
		}
		_, err := pc.ExecParams(ctx, "SELECT $1::"+c.typ, [][]byte{f}, nil, nil, nil).Close()
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code[:2] == "22" {
			return c.name, c.typ
		}
		if err != nil {
			return "", ""
		}
	}
	return "", ""
}
