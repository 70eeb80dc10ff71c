package pgsink

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline/exprop"
	"github.com/spillway-io/spillway/sinks"
)

// Write modes (mode).
const (
	// ModeInsert writes each batch as one multi-row INSERT.
	ModeInsert = "insert"
	// ModeUpsert writes each batch as one multi-row INSERT ... ON CONFLICT
	// (key_columns) DO UPDATE, keeping the last row of each key within
	// the batch.
	ModeUpsert = "upsert"
	// ModeCopy writes each batch with COPY ... FROM STDIN.
	ModeCopy = "copy"
)

// Delivery guarantees (delivery).
const (
	// AtLeastOnce: a batch is acknowledged once its transaction
	// committed; a retry after an unanswered commit, or a replay after a
	// crash, writes its rows again.
	AtLeastOnce = "at_least_once"
	// EffectivelyOnce: the rows and the highest source offset of each
	// partition are committed in one transaction, and records at or below
	// the stored offset of their partition are skipped: a replay writes
	// nothing twice.
	EffectivelyOnce = "effectively_once"
)

// Column types the sink can create (columns[].type).
var columnTypes = []string{"text", "bigint", "double precision", "boolean", "jsonb", "timestamptz", "bytea"}

// maxIdent is PostgreSQL's identifier length limit (NAMEDATALEN-1).
const maxIdent = 63

// DSN is a PostgreSQL connection string, as a URL
// (postgres://user:password@host:port/db?sslmode=disable) or as key=value
// pairs (host=... password=...). It is a secret: it prints, and marshals
// to YAML (spillway validate --print), with its password replaced by
// "<redacted>".
type DSN string

// String returns the DSN with its password redacted.
func (d DSN) String() string { return Redact(string(d)) }

// MarshalYAML writes the DSN with its password redacted.
func (d DSN) MarshalYAML() (any, error) { return Redact(string(d)), nil }

// kvPassword matches a password in a key=value DSN (quoted or not).
var kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// Redact returns dsn with its password, if any, replaced by "<redacted>".
// A URL that does not parse is redacted whole.
func Redact(dsn string) string {
	if dsn == "" {
		return ""
	}
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return kvPassword.ReplaceAllString(dsn, "${1}<redacted>")
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "<redacted>"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "<redacted>")
		u.RawQuery = q.Encode()
	}
	if _, ok := u.User.Password(); !ok {
		return u.String()
	}
	// url.UserPassword would escape the brackets.
	name := url.User(u.User.Username()).String()
	u.User = nil
	rest := strings.TrimPrefix(u.String(), u.Scheme+"://")
	return u.Scheme + "://" + name + ":<redacted>@" + rest
}

// Column is one column of the target table and how each record fills it.
type Column struct {
	// Name is the column's name, used as written (quoted). Required.
	Name string `yaml:"name"`
	// Expr is an expr-lang expression over the record (the variables of
	// the filter and map operators: json, key, value, headers, topic,
	// partition, offset, timestamp) whose result fills the column: nil is
	// NULL; a string is the column's text input (for json and jsonb: JSON
	// text, so `value` stores the record's JSON; for bytea: the string's
	// bytes); a number or boolean its text; a time RFC 3339; anything else
	// (an object, a list) JSON. The database converts the text to the
	// column's type: a value it refuses is dead-lettered with the column
	// and the database's message. Required.
	Expr string `yaml:"expr"`
	// Type is the column's type when the sink creates the table
	// (create_table): text, bigint, double precision, boolean, jsonb,
	// timestamptz or bytea. Required with create_table, refused without
	// it (an existing table's own types are used).
	Type string `yaml:"type"`
}

// Config configures the sink: the keys of a pipeline file's sink.postgres
// section, plus the fields a program sets (yaml:"-"). Zero values mean the
// default documented on each field; ApplyDefaults fills them in. It is
// plain data.
type Config struct {
	// DSN is the connection string (a secret: printed redacted). Use
	// ${ENV} in the pipeline file to keep the password out of it.
	// Required.
	DSN DSN `yaml:"dsn"`
	// Table is the target table, "name" or "schema.name", used as written
	// (quoted). Required.
	Table string `yaml:"table"`
	// Columns are the table's columns the sink fills, in order. At least
	// one.
	Columns []Column `yaml:"columns"`
	// Mode is how a batch is written: insert (default, one multi-row
	// INSERT), upsert (INSERT ... ON CONFLICT (key_columns) DO UPDATE) or
	// copy (COPY ... FROM STDIN).
	Mode string `yaml:"mode"`
	// KeyColumns are the conflict target of upsert: columns of Columns
	// that a unique index or primary key of the table covers exactly.
	// Required with upsert, refused otherwise.
	KeyColumns []string `yaml:"key_columns"`
	// CreateTable creates the table at start when it does not exist, with
	// each column's Type (and, with upsert, a primary key on key_columns).
	// Without it a missing table is an error at start.
	CreateTable bool `yaml:"create_table"`
	// Delivery is the guarantee: at_least_once (default) or
	// effectively_once (see the package documentation).
	Delivery string `yaml:"delivery"`
	// OffsetsTable is the table where effectively_once stores the highest
	// source offset written per (group, topic, partition), created at
	// start when missing; default spillway_offsets.
	OffsetsTable string `yaml:"offsets_table"`
	// OffsetsGroup names this job's rows in OffsetsTable; the Kafka
	// source seeks to the offsets stored under its consumer group, so set
	// it to that group when the pipeline's name differs from it. Empty:
	// the pipeline's name (the registry fills it in).
	OffsetsGroup string `yaml:"offsets_group"`
	// PoolSize is the most connections the sink opens. Empty: the writer's
	// max_in_flight_requests (the registry fills it in; a program that
	// leaves it 0 gets pgxpool's default).
	PoolSize int `yaml:"pool_size"`
}

// ApplyDefaults replaces each zero field by its documented default. It is
// idempotent.
func (c *Config) ApplyDefaults() {
	if c.Mode == "" {
		c.Mode = ModeInsert
	}
	if c.Delivery == "" {
		c.Delivery = AtLeastOnce
	}
	if c.OffsetsTable == "" {
		c.OffsetsTable = "spillway_offsets"
	}
}

// Validate reports every invalid setting as a *field.Error with a path
// relative to the sink.postgres section, joined with errors.Join. Zero
// fields count as their defaults. Expressions are compiled and the DSN is
// parsed; it does no I/O: whether the table and its columns exist is found
// out by New.
func (c Config) Validate() error {
	c.ApplyDefaults()
	var l field.List
	if strings.TrimSpace(string(c.DSN)) == "" {
		l.Add("dsn", "required")
	} else if _, err := pgconn.ParseConfig(string(c.DSN)); err != nil {
		l.Add("dsn", "invalid connection string: %s", parseError(err))
	}
	if c.Table == "" {
		l.Add("table", "required")
	} else if msg := checkTable(c.Table); msg != "" {
		l.Add("table", "%s", msg)
	}
	if len(c.Columns) == 0 {
		l.Add("columns", "at least one column required")
	}
	seen := map[string]int{}
	for i, col := range c.Columns {
		p := fmt.Sprintf("columns[%d]", i)
		switch {
		case col.Name == "":
			l.Add(p+".name", "required")
		case len(col.Name) > maxIdent:
			l.Add(p+".name", "longer than %d bytes", maxIdent)
		default:
			if j, dup := seen[col.Name]; dup {
				l.Add(p+".name", "duplicate column %q (also columns[%d])", col.Name, j)
			}
			seen[col.Name] = i
		}
		if col.Expr == "" {
			l.Add(p+".expr", "required")
		} else if _, err := exprop.Compile(col.Expr); err != nil {
			l.Add(p+".expr", "%s", exprop.Explain(err))
		}
		switch {
		case col.Type == "" && c.CreateTable:
			l.Add(p+".type", "required with create_table (one of %s)", strings.Join(columnTypes, ", "))
		case col.Type != "" && !c.CreateTable:
			l.Add(p+".type", "only with create_table: true (an existing table keeps its own types)")
		case col.Type != "":
			l.OneOf(p+".type", col.Type, columnTypes...)
		}
	}
	l.OneOf("mode", c.Mode, ModeInsert, ModeUpsert, ModeCopy)
	switch {
	case c.Mode == ModeUpsert && len(c.KeyColumns) == 0:
		l.Add("key_columns", "required with mode: upsert (the ON CONFLICT target)")
	case c.Mode != ModeUpsert && len(c.KeyColumns) > 0:
		l.Add("key_columns", "only with mode: upsert")
	}
	for i, k := range c.KeyColumns {
		p := fmt.Sprintf("key_columns[%d]", i)
		if _, ok := seen[k]; !ok {
			l.Add(p, "%q is not one of columns", k)
		}
		if slices.Index(c.KeyColumns, k) < i {
			l.Add(p, "duplicate key column %q", k)
		}
	}
	l.OneOf("delivery", c.Delivery, AtLeastOnce, EffectivelyOnce)
	if msg := checkTable(c.OffsetsTable); msg != "" {
		l.Add("offsets_table", "%s", msg)
	} else if c.OffsetsTable == c.Table {
		l.Add("offsets_table", "must differ from table")
	}
	if c.PoolSize < 0 {
		l.Add("pool_size", "must be positive, got %d", c.PoolSize)
	}
	return l.Err()
}

// checkTable returns why name is not a "name" or "schema.name", or "".
func checkTable(name string) string {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return fmt.Sprintf("%q: want name or schema.name", name)
	}
	for _, p := range parts {
		switch {
		case p == "":
			return fmt.Sprintf("%q: want name or schema.name", name)
		case len(p) > maxIdent:
			return fmt.Sprintf("%q: a name is longer than %d bytes", name, maxIdent)
		}
	}
	return ""
}

// parseError words a DSN parse error without the DSN: pgconn quotes it
// with the password masked on a best-effort basis only.
func parseError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		if inner := pe.Unwrap(); inner != nil {
			return inner.Error()
		}
		if _, msg, ok := strings.Cut(pe.Error(), "`: "); ok {
			return msg
		}
		return "cannot parse"
	}
	return err.Error()
}

// RequiredOrdering implements registry.OrderingRequirer: effectively-once
// stores the highest offset of each partition a batch wrote, so a
// partition's rows must reach the table in offset order.
func (c *Config) RequiredOrdering() (ordering, key, why string) {
	if c.Delivery != EffectivelyOnce {
		return "", "", ""
	}
	return sinks.OrderPartition, "delivery", "a partition's records must reach the table in offset order"
}
