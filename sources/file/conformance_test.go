package file_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sources/file"
	"github.com/spillway-io/spillway/sources/sourcetest"
)

// TestConformance runs the source suite over a file of one line per value.
// A file has no positions: a new source reads it from its start.
func TestConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T, values [][]byte) sourcetest.Input {
		path := filepath.Join(t.TempDir(), "in.jsonl")
		if err := os.WriteFile(path, append(bytes.Join(values, []byte("\n")), '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
		return sourcetest.Input{Open: func(t *testing.T) pipeline.Source {
			s, err := file.New(file.Config{Path: path})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}}
	}, sourcetest.Features{Exhausts: true})
}
