package pgsink

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// TestModes writes the same records in each mode and reads every column
// back as the database stored it.
func TestModes(t *testing.T) {
	d := newDB(t)
	for _, mode := range []string{ModeInsert, ModeUpsert, ModeCopy} {
		for _, delivery := range []string{AtLeastOnce, EffectivelyOnce} {
			t.Run(mode+"/"+delivery, func(t *testing.T) {
				table := d.ordersTable(t)
				cfg := Config{Table: table, Columns: ordersColumns(), Mode: mode, Delivery: delivery,
					OffsetsTable: table + "_offsets", OffsetsGroup: "g"}
				if mode == ModeUpsert {
					cfg.KeyColumns = []string{"id"}
				}
				s := d.sink(t, cfg)
				mustWrite(t, s, recs(0, 10, 0))
				mustWrite(t, s, recs(10, 5, 1))
				all, distinct := d.count(t, table, "id")
				if all != 15 || distinct != 15 {
					t.Fatalf("count(*), count(DISTINCT id) = %d, %d, want 15, 15", all, distinct)
				}
				got := d.strings(t, "SELECT concat_ws('|', id, name, amount, paid, doc->>'name', encode(key, 'escape'), at AT TIME ZONE 'UTC') FROM "+table+" WHERE id IN (3, 12) ORDER BY id")
				want := []string{"3|n3|3.5|f|n3|k3|2023-11-14 22:13:23", "12|n12|12.5|t|n12|k5|2023-11-14 22:13:32"}
				if !slices.Equal(got, want) {
					t.Fatalf("rows 3 and 12 read back as\n%q\nwant\n%q", got, want)
				}
			})
		}
	}
}

// TestExpressionFailsOneRecord: a record whose expression fails (a field
// missing from its value) is fatal alone, naming the column; the rest of
// its batch is written.
func TestExpressionFailsOneRecord(t *testing.T) {
	d := newDB(t)
	for _, mode := range []string{ModeInsert, ModeCopy} {
		t.Run(mode, func(t *testing.T) {
			table := d.ordersTable(t)
			cols := ordersColumns()
			cols[1].Expr = "json.name + json.extra.suffix"
			s := d.sink(t, Config{Table: table, Columns: cols, Mode: mode})
			batch := recs(0, 5, 0)
			batch[2].Value = []byte(`{"id":2,"name":"n2","amount":1,"extra":{"suffix":"!"}}`)
			for i := range batch {
				if i != 2 {
					batch[i].Value = fmt.Appendf(nil, `{"id":%d,"name":"n","amount":1,"extra":{"suffix":"?"}}`, i)
				}
			}
			batch[3].Value = []byte(`{"id":3,"name":"n3","amount":1}`) // no extra
			err := write(t, s, batch)
			var be *sinks.BatchError
			if !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[0].Index != 3 {
				t.Fatalf("WriteBatch = %v, want a BatchError for entry 3 alone", err)
			}
			ferr := be.Failed[0].Err
			if sinks.Classify(ferr) != sinks.Fatal || !contains(ferr.Error(), `column "name"`, "json.extra.suffix") {
				t.Fatalf("entry 3: %v (class %v), want fatal naming the column and expression", ferr, sinks.Classify(ferr))
			}
			if all, _ := d.count(t, table, "id"); all != 4 {
				t.Fatalf("%d rows written, want 4", all)
			}
		})
	}
}

// TestUpsertKeepsLastPerKey: rows of one batch with the same key do not
// fail the statement; the last one wins, within the batch and across
// batches.
func TestUpsertKeepsLastPerKey(t *testing.T) {
	d := newDB(t)
	for _, delivery := range []string{AtLeastOnce, EffectivelyOnce} {
		t.Run(delivery, func(t *testing.T) {
			table := d.table(t, "latest")
			d.exec(t, "CREATE TABLE "+table+" (k text PRIMARY KEY, v bigint, off bigint)")
			s := d.sink(t, Config{Table: table, Mode: ModeUpsert, KeyColumns: []string{"k"}, Delivery: delivery,
				OffsetsTable: table + "_offsets", OffsetsGroup: "g",
				Columns: []Column{{Name: "k", Expr: "key"}, {Name: "v", Expr: "json.v"}, {Name: "off", Expr: "offset"}}})
			var batch []pipeline.Record
			for i := range 30 {
				batch = append(batch, pipeline.Record{Key: fmt.Appendf(nil, "k%d", i%4), Value: fmt.Appendf(nil, `{"v":%d}`, i),
					Origin: pipeline.Origin{Topic: "t", Offset: int64(i)}})
			}
			mustWrite(t, s, batch[:20])
			mustWrite(t, s, batch[20:])
			got := d.strings(t, "SELECT k || '=' || v || '@' || off FROM "+table+" ORDER BY k")
			want := []string{"k0=28@28", "k1=29@29", "k2=26@26", "k3=27@27"}
			if !slices.Equal(got, want) {
				t.Fatalf("table holds %q, want %q", got, want)
			}
		})
	}
}

// TestCreateTable: create_table makes the table from the declared types
// (with a primary key on key_columns for upsert) and writes to it.
func TestCreateTable(t *testing.T) {
	d := newDB(t)
	table := d.table(t, "created")
	cols := []Column{
		{Name: "id", Expr: "json.id", Type: "bigint"},
		{Name: "name", Expr: "json.name", Type: "text"},
		{Name: "amount", Expr: "json.amount", Type: "double precision"},
		{Name: "paid", Expr: "json.paid", Type: "boolean"},
		{Name: "doc", Expr: "json", Type: "jsonb"},
		{Name: "key", Expr: "key", Type: "bytea"},
		{Name: "at", Expr: "timestamp", Type: "timestamptz"},
	}
	s := d.sink(t, Config{Table: table, Columns: cols, CreateTable: true, Mode: ModeUpsert, KeyColumns: []string{"id"}})
	mustWrite(t, s, recs(0, 10, 0))
	mustWrite(t, s, recs(5, 10, 0)) // 5..9 again: updated
	if all, distinct := d.count(t, table, "id"); all != 15 || distinct != 15 {
		t.Fatalf("count(*), count(DISTINCT id) = %d, %d, want 15, 15", all, distinct)
	}
	types := d.strings(t, `SELECT attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 ORDER BY attnum`, table)
	want := []string{"id bigint", "name text", "amount double precision", "paid boolean", "doc jsonb", "key bytea", "at timestamp with time zone"}
	if !slices.Equal(types, want) {
		t.Fatalf("created columns %q, want %q", types, want)
	}
	pk := d.strings(t, `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'`, table)
	if len(pk) != 1 || pk[0] != "PRIMARY KEY (id)" {
		t.Fatalf("primary key %q, want PRIMARY KEY (id)", pk)
	}
	if got := d.strings(t, "SELECT doc->>'name' FROM "+table+" WHERE id = 7"); len(got) != 1 || got[0] != "n7" {
		t.Fatalf("doc of row 7: %q", got)
	}
	// A second sink over the existing table does not create it again.
	d.sink(t, Config{Table: table, Columns: cols, CreateTable: true, Mode: ModeUpsert, KeyColumns: []string{"id"}})
}

func TestStartErrors(t *testing.T) {
	d := newDB(t)
	orders := d.ordersTable(t)
	nopk := d.table(t, "nopk")
	d.exec(t, "CREATE TABLE "+nopk+" (id bigint, v text)")
	readOnly := d.ordersTable(t)
	d.exec(t, "REVOKE INSERT ON "+readOnly+" FROM CURRENT_USER")
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"missing table", Config{Table: "no_such_table", Columns: ordersColumns()},
			[]string{`table "no_such_table" does not exist in spillway@127.0.0.1:`, "/spillway", "create_table: true"}},
		{"missing column", Config{Table: orders, Columns: append(ordersColumns(), Column{Name: "nope", Expr: "key"})},
			[]string{`has no column "nope"`, "(it has amount, at, doc, id, key, name, paid)"}},
		{"no unique index for upsert", Config{Table: nopk, Mode: ModeUpsert, KeyColumns: []string{"id"},
			Columns: []Column{{Name: "id", Expr: "json.id"}, {Name: "v", Expr: "value"}}},
			[]string{"no unique or exclusion constraint matching the ON CONFLICT specification", "42P10"}},
		{"no privilege", Config{Table: readOnly, Columns: ordersColumns()},
			[]string{`user spillway may not INSERT into table "` + readOnly + `" on spillway@127.0.0.1:`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.DSN = DSN(d.dsn)
			_, err := New(t.Context(), cfg)
			if err == nil || !contains(err.Error(), tc.want...) {
				t.Fatalf("New = %v, want an error with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), ":spillway@") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

// TestValuesRoundTrip: text with quotes, backslashes, tabs, newlines,
// braces, commas, the words NULL and \N, an empty string and non-ASCII
// letters, and keys of arbitrary bytes into bytea, come back unchanged in
// every mode; a nil expression result is NULL.
func TestValuesRoundTrip(t *testing.T) {
	d := newDB(t)
	texts := []string{`a"b`, `back\slash`, "tab\there", "new\nline\r\n", `{x,"y"}`, "NULL", `\N`, "", "ünïcödé ✓", `\x41`, "a,b;c"}
	for _, mode := range []string{ModeInsert, ModeUpsert, ModeCopy} {
		t.Run(mode, func(t *testing.T) {
			table := d.table(t, "rt")
			d.exec(t, "CREATE TABLE "+table+" (n bigint PRIMARY KEY, s text, k bytea, j jsonb, z text)")
			cfg := Config{Table: table, Mode: mode, Columns: []Column{
				{Name: "n", Expr: "offset"}, {Name: "s", Expr: "json.s"}, {Name: "k", Expr: "key"}, {Name: "j", Expr: "json"}, {Name: "z", Expr: "json.missing"}}}
			if mode == ModeUpsert {
				cfg.KeyColumns = []string{"n"}
			}
			s := d.sink(t, cfg)
			var batch []pipeline.Record
			for i, txt := range texts {
				v, _ := json.Marshal(map[string]string{"s": txt})
				batch = append(batch, pipeline.Record{Key: []byte{0, byte(i), 0xff, '\\', '"'}, Value: v, Origin: pipeline.Origin{Offset: int64(i)}})
			}
			mustWrite(t, s, batch)
			got := d.strings(t, "SELECT s FROM "+table+" ORDER BY n")
			if !slices.Equal(got, texts) {
				t.Fatalf("texts read back as %q, want %q", got, texts)
			}
			keys := d.strings(t, "SELECT encode(k, 'hex') || ' ' || (j->>'s' = s) || ' ' || (z IS NULL) FROM "+table+" ORDER BY n")
			for i, k := range keys {
				if want := fmt.Sprintf("00%02xff5c22 true true", i); k != want {
					t.Fatalf("row %d: %q, want %q", i, k, want)
				}
			}
		})
	}
}
