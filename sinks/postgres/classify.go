package pgsink

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spillway-io/spillway/sinks"
)

// kind is what a failed statement says about the batch.
type kind int

const (
	// kindRetry: the database was unreachable, restarting, or refused the
	// transaction for reasons of concurrency (serialization failure,
	// deadlock); the same batch may succeed later.
	kindRetry kind = iota
	// kindThrottle: the database says it is overloaded or starting (too
	// many connections, cannot connect now).
	kindThrottle
	// kindData: some row is refused as it is (a bad value, a constraint);
	// which one, only sending rows apart can tell.
	kindData
	// kindConfig: the statement is wrong for every row (a missing table
	// or column, missing privileges, failed authentication).
	kindConfig
	// kindCtx: the request's context ended.
	kindCtx
)

// kindOf classifies err by its SQLSTATE (never by its text).
func kindOf(err error) kind {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return kindCtx
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) != 5 {
		return kindRetry // connection loss, timeouts, a closed pool
	}
	switch pe.Code {
	case "53300", "57P03": // too_many_connections, cannot_connect_now
		return kindThrottle
	case "25006": // read_only_sql_transaction: a standby, before a failover ends
		return kindRetry
	}
	switch pe.Code[:2] {
	case "21", // cardinality_violation (ON CONFLICT affecting a row twice)
		"22", // data_exception: invalid text, out of range, bad encoding
		"23", // integrity_constraint_violation: unique, check, not null, foreign key
		"44", // with_check_option_violation
		"54", // program_limit_exceeded: an index row too large
		"P0": // raise_exception in a trigger
		return kindData
	case "42", // syntax_error_or_access_rule_violation: undefined table/column, privileges
		"28", // invalid_authorization_specification
		"3D", // invalid_catalog_name: the database does not exist
		"3F", // invalid_schema_name
		"0A", // feature_not_supported
		"2B": // dependent_privilege_descriptor_still_exists
		return kindConfig
	}
	return kindRetry // 08 connection, 40 serialization/deadlock, 53, 55, 57, 58, XX
}

// wrap gives err, which failed the rows of a request together, its class
// for the writer; shared says other entries of the batch were not part of
// the request, so a fatal answer must be marked as the request's.
func wrap(err error, k kind, shared bool) error {
	switch k {
	case kindData:
		if shared {
			return sinks.AsRequestError(sinks.AsFatal(err))
		}
		return sinks.AsFatal(err)
	case kindConfig:
		return sinks.AsConfigError(err)
	case kindThrottle:
		return &sinks.ThrottledError{Err: err}
	}
	return err
}

// rowError is the database's refusal of one row, with what it says about
// where.
type rowError struct {
	pe     *pgconn.PgError
	column string // "" when unknown
	typ    string // the column's type, with column
}

func (e *rowError) Error() string {
	msg := "postgres sink: row refused: "
	if e.column != "" {
		msg += fmt.Sprintf("column %q (%s): ", e.column, e.typ)
	} else if e.pe.ColumnName != "" {
		msg += fmt.Sprintf("column %q: ", e.pe.ColumnName)
	}
	msg += e.pe.Message
	if e.pe.Detail != "" {
		msg += ": " + e.pe.Detail
	}
	return msg + " (SQLSTATE " + e.pe.Code + ")"
}

func (e *rowError) Unwrap() error { return e.pe }

// details are the dead-letter headers of a refused row.
func (e *rowError) details() map[string]string {
	d := map[string]string{"postgres.sqlstate": e.pe.Code}
	switch {
	case e.column != "":
		d["postgres.column"] = e.column
	case e.pe.ColumnName != "":
		d["postgres.column"] = e.pe.ColumnName
	}
	if e.pe.ConstraintName != "" {
		d["postgres.constraint"] = e.pe.ConstraintName
	}
	return d
}

// copyWhere reads the line (1-based) and column of a COPY error's context
// ("COPY t, line 3, column amount: ...", on any line of it: a trigger
// adds its own lines above). The text is the server's
// message context, in English unless lc_messages says otherwise; when it
// does not match, the batch is bisected as for INSERT.
var copyWhere = regexp.MustCompile(`(?m)^COPY [^\n]*?, line (\d+)(?:, column ([^:\n]+))?`)

func copyLine(pe *pgconn.PgError) (line int, column string, ok bool) {
	m := copyWhere.FindStringSubmatch(pe.Where)
	if m == nil {
		return 0, "", false
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n < 1 {
		return 0, "", false
	}
	return n, m[2], true
}
