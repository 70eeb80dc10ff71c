package pgsink_test

import (
	"strings"
	"testing"

	"github.com/spillway-io/spillway/internal/config"
)

// TestPrintRedactsDSN: spillway validate --print shows the DSN, from
// ${ENV}, with its password redacted, and the printed file reads back.
func TestPrintRedactsDSN(t *testing.T) {
	src := `name: p
source:
  file: {path: in.jsonl}
sink:
  postgres:
    dsn: ${PG_DSN}
    table: t
    columns:
      - {name: id, expr: json.id}
`
	env := func(k string) (string, bool) {
		if k == "PG_DSN" {
			return "postgres://app:s3cr3t@db.internal:5432/orders?sslmode=require", true
		}
		return "", false
	}
	p, err := config.Parse("p.yaml", []byte(src), env)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cr3t") || !strings.Contains(string(out), "dsn: postgres://app:<redacted>@db.internal:5432/orders?sslmode=require") {
		t.Fatalf("printed:\n%s", out)
	}
	if _, err := config.Parse("printed.yaml", out, nil); err != nil {
		t.Fatalf("printed file does not read back: %v", err)
	}
}
