package pgsink

import (
	"errors"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/field"
)

func TestConfigValidate(t *testing.T) {
	dsn := DSN("postgres://u:secret@localhost:5432/db")
	cols := []Column{{Name: "id", Expr: "json.id"}, {Name: "v", Expr: "value"}}
	typed := []Column{{Name: "id", Expr: "json.id", Type: "bigint"}, {Name: "v", Expr: "value", Type: "jsonb"}}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // "path: message fragment", in order
	}{
		{"insert", Config{DSN: dsn, Table: "t", Columns: cols}, nil},
		{"upsert", Config{DSN: dsn, Table: "s.t", Columns: cols, Mode: ModeUpsert, KeyColumns: []string{"id"}, Delivery: EffectivelyOnce}, nil},
		{"create", Config{DSN: dsn, Table: "t", Columns: typed, CreateTable: true, Mode: ModeCopy}, nil},
		{"empty", Config{}, []string{"dsn: required", "table: required", "columns: at least one column required"}},
		{"bad dsn", Config{DSN: "postgres://u:secret@host:notaport/db", Table: "t", Columns: cols}, []string{"dsn: invalid connection string"}},
		{"bad table", Config{DSN: dsn, Table: "a.b.c", Columns: cols}, []string{`table: "a.b.c": want name or schema.name`}},
		{"column", Config{DSN: dsn, Table: "t", Columns: []Column{{}, {Name: "x", Expr: "json.a +"}, {Name: "x", Expr: "key"}}},
			[]string{"columns[0].name: required", "columns[0].expr: required", "columns[1].expr: invalid expression", `columns[2].name: duplicate column "x" (also columns[1])`}},
		{"type without create", Config{DSN: dsn, Table: "t", Columns: typed}, []string{"columns[0].type: only with create_table", "columns[1].type: only with create_table"}},
		{"create without type", Config{DSN: dsn, Table: "t", Columns: []Column{{Name: "id", Expr: "json.id", Type: "int4"}, {Name: "v", Expr: "value"}}, CreateTable: true},
			[]string{`columns[0].type: must be "text", "bigint"`, "columns[1].type: required with create_table"}},
		{"mode", Config{DSN: dsn, Table: "t", Columns: cols, Mode: "merge"}, []string{`mode: must be "insert", "upsert" or "copy", got "merge"`}},
		{"upsert without keys", Config{DSN: dsn, Table: "t", Columns: cols, Mode: ModeUpsert}, []string{"key_columns: required with mode: upsert"}},
		{"keys without upsert", Config{DSN: dsn, Table: "t", Columns: cols, KeyColumns: []string{"id"}}, []string{"key_columns: only with mode: upsert"}},
		{"bad keys", Config{DSN: dsn, Table: "t", Columns: cols, Mode: ModeUpsert, KeyColumns: []string{"nope", "id", "id"}},
			[]string{`key_columns[0]: "nope" is not one of columns`, `key_columns[2]: duplicate key column "id"`}},
		{"delivery", Config{DSN: dsn, Table: "t", Columns: cols, Delivery: "exactly_once"}, []string{`delivery: must be "at_least_once" or "effectively_once", got "exactly_once"`}},
		{"offsets table", Config{DSN: dsn, Table: "spillway_offsets", Columns: cols}, []string{"offsets_table: must differ from table"}},
		{"pool", Config{DSN: dsn, Table: "t", Columns: cols, PoolSize: -1}, []string{"pool_size: must be positive, got -1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := field.Split(tc.cfg.Validate())
			if len(errs) != len(tc.want) {
				t.Fatalf("Validate = %v, want %d errors %v", errs, len(tc.want), tc.want)
			}
			for i, err := range errs {
				var fe *field.Error
				if !errors.As(err, &fe) {
					t.Fatalf("error %d is %T, want *field.Error", i, err)
				}
				if !strings.HasPrefix(err.Error(), tc.want[i]) {
					t.Errorf("error %d = %q, want it to start with %q", i, err, tc.want[i])
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error %d shows the password: %q", i, err)
				}
			}
		})
	}
	var c Config
	c.ApplyDefaults()
	if c.Mode != ModeInsert || c.Delivery != AtLeastOnce || c.OffsetsTable != "spillway_offsets" {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"": "",
		"postgres://u:secret@h:5432/db?sslmode=disable": "postgres://u:<redacted>@h:5432/db?sslmode=disable",
		"postgresql://u@h/db":                           "postgresql://u@h/db",
		"postgres://h/db?password=secret&user=u":        "postgres://h/db?password=%3Credacted%3E&user=u",
		"host=h user=u password=secret dbname=db":       "host=h user=u password=<redacted> dbname=db",
		"host=h password='se cret' dbname=db":           "host=h password=<redacted> dbname=db",
		"postgres://u:p%40ss@h/db":                      "postgres://u:<redacted>@h/db",
		"postgres://u:secret@h:5432,h2:5433/db":         "postgres://u:<redacted>@h:5432,h2:5433/db",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
		if got := DSN(in).String(); got != want {
			t.Errorf("DSN(%q).String() = %q, want %q", in, got, want)
		}
	}
}
