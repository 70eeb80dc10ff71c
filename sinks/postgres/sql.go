package pgsink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// quoteName quotes a "name" or "schema.name" for SQL.
func quoteName(name string) string { return pgx.Identifier(strings.Split(name, ".")).Sanitize() }

// tableColumn is a column of the target table as the catalog has it.
type tableColumn struct {
	typ   string // format_type: "bigint", "character varying(20)"
	plain string // without its modifier: "character varying"
	base  string // the base type's name (a domain's underlying type)
}

const columnsSQL = `SELECT a.attname, format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, NULL),
  (SELECT b.typname FROM pg_type b WHERE b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`

// tableColumns returns the columns of table (quoted), and false when it
// does not exist.
func tableColumns(ctx context.Context, conn *pgx.Conn, table string) (map[string]tableColumn, bool, error) {
	var oid *uint32
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1)::oid", table).Scan(&oid); err != nil {
		return nil, false, err
	}
	if oid == nil {
		return nil, false, nil
	}
	rows, err := conn.Query(ctx, columnsSQL, *oid)
	if err != nil {
		return nil, false, err
	}
	out := map[string]tableColumn{}
	for rows.Next() {
		var name string
		var c tableColumn
		if err := rows.Scan(&name, &c.typ, &c.plain, &c.base); err != nil {
			rows.Close()
			return nil, false, err
		}
		out[name] = c
	}
	return out, true, rows.Err()
}

// categoryOf is how values are written to a column of base type base.
func categoryOf(base string) category {
	switch base {
	case "bytea":
		return catBytea
	case "json", "jsonb":
		return catJSON
	}
	return catText
}

// createTableSQL creates the target table from the declared types.
func createTableSQL(cfg Config) string {
	var b strings.Builder
	b.WriteString("CREATE TABLE IF NOT EXISTS " + quoteName(cfg.Table) + " (")
	for i, c := range cfg.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{c.Name}.Sanitize() + " " + c.Type)
	}
	if cfg.Mode == ModeUpsert {
		b.WriteString(", PRIMARY KEY (" + identList(cfg.KeyColumns) + ")")
	}
	b.WriteString(")")
	return b.String()
}

// createOffsetsSQL creates the offsets table of effectively_once.
func createOffsetsSQL(table string) string {
	return "CREATE TABLE IF NOT EXISTS " + quoteName(table) + ` (
  group_id text NOT NULL,
  topic text NOT NULL,
  "partition" integer NOT NULL,
  "offset" bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (group_id, topic, "partition"))`
}

// createIfMissing runs a CREATE TABLE IF NOT EXISTS; two workers creating
// the same table at once may see the other's catalog row, which is not a
// failure.
func createIfMissing(ctx context.Context, conn *pgx.Conn, sql string) error {
	_, err := conn.Exec(ctx, sql)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "23505" || pe.Code == "42P07") {
		return nil
	}
	return err
}

func identList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pgx.Identifier{n}.Sanitize()
	}
	return strings.Join(q, ", ")
}

// statements are the SQL texts the sink builds once.
type statements struct {
	table   string // the target table, quoted
	insert  string // INSERT INTO t (cols) SELECT * FROM unnest($1::type[], ...) [ON CONFLICT ...]
	copy    string // COPY t (cols) FROM STDIN
	offsets string // the offsets table, quoted
}

// newStatements builds the statements for cols, the configured columns
// with their types in the table.
func newStatements(cfg Config, cols []column) statements {
	var names, arrays []string
	for i, c := range cols {
		names = append(names, c.name)
		arrays = append(arrays, fmt.Sprintf("$%d::%s[]", i+1, c.plain))
	}
	table := quoteName(cfg.Table)
	s := statements{
		table:   table,
		insert:  "INSERT INTO " + table + " (" + identList(names) + ") SELECT * FROM unnest(" + strings.Join(arrays, ", ") + ")",
		copy:    "COPY " + table + " (" + identList(names) + ") FROM STDIN",
		offsets: quoteName(cfg.OffsetsTable),
	}
	if cfg.Mode == ModeUpsert {
		var set []string
		for _, c := range names {
			if !slices.Contains(cfg.KeyColumns, c) {
				q := pgx.Identifier{c}.Sanitize()
				set = append(set, q+" = EXCLUDED."+q)
			}
		}
		s.insert += " ON CONFLICT (" + identList(cfg.KeyColumns) + ") DO NOTHING"
		if len(set) > 0 {
			s.insert = strings.TrimSuffix(s.insert, " DO NOTHING") + " DO UPDATE SET " + strings.Join(set, ", ")
		}
	}
	return s
}

// partKey is a source partition.
type partKey struct {
	topic     string
	partition int32
}

// ensureOffsetsSQL inserts a row (offset -1) for each of n partitions that
// has none: $1 is the group, then (topic, partition) pairs.
func (s *statements) ensureOffsetsSQL(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + s.offsets + ` (group_id, topic, "partition", "offset") VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "($1, $%d::text, $%d::integer, -1)", 2+2*i, 3+2*i)
	}
	b.WriteString(" ON CONFLICT DO NOTHING")
	return b.String()
}

// lockOffsetsSQL reads and locks the rows of n partitions, in (topic,
// partition) order.
func (s *statements) lockOffsetsSQL(n int) string {
	var b strings.Builder
	b.WriteString(`SELECT topic, "partition", "offset" FROM ` + s.offsets + ` WHERE group_id = $1 AND (topic, "partition") IN (`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "($%d::text, $%d::integer)", 2+2*i, 3+2*i)
	}
	b.WriteString(`) ORDER BY topic, "partition" FOR UPDATE`)
	return b.String()
}

// updateOffsetsSQL moves the offsets of n partitions forward: $1 is the
// group, then (topic, partition, offset) triples.
func (s *statements) updateOffsetsSQL(n int) string {
	var b strings.Builder
	b.WriteString("UPDATE " + s.offsets + ` AS o SET "offset" = GREATEST(o."offset", v.off), updated_at = now() FROM (VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "($%d::text, $%d::integer, $%d::bigint)", 2+3*i, 3+3*i, 4+3*i)
	}
	b.WriteString(`) AS v(topic, part, off) WHERE o.group_id = $1 AND o.topic = v.topic AND o."partition" = v.part`)
	return b.String()
}
