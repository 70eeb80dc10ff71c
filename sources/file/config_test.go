package file

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spillway-io/spillway/field"
)

func TestConfigValidate(t *testing.T) {
	for _, path := range []string{"-", "in.jsonl"} {
		if err := (Config{Path: path}).Validate(); err != nil {
			t.Errorf("Validate(%q) = %v", path, err)
		}
	}
	err := Config{}.Validate()
	var fe *field.Error
	if !errors.As(err, &fe) || *fe != (field.Error{Path: "path", Msg: `required ("-" reads standard input)`}) {
		t.Fatalf("Validate of no path = %#v", err)
	}
	c := Config{Path: "x"}
	c.ApplyDefaults()
	if c.Path != "x" {
		t.Fatalf("ApplyDefaults changed the path to %q", c.Path)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Config{}); !errors.As(err, new(*field.Error)) {
		t.Errorf("New without a path: %v, want a field error", err)
	}
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte("a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if s.name != path || s.closer == nil {
		t.Errorf("New: name %q, closer %v; want the path and the file to close", s.name, s.closer)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}
