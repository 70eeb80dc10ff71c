package generate_test

import (
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sources/generate"
	"github.com/spillway-io/spillway/sources/sourcetest"
)

// TestConformance runs the source suite over a generator of as many
// records as the suite asks for; it makes its own values. A generator has
// no positions: a new one starts again from record 0.
func TestConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T, values [][]byte) sourcetest.Input {
		own := make([][]byte, len(values))
		for i := range own {
			own[i] = generate.Value(int64(i), 100)
		}
		return sourcetest.Input{
			Open: func(t *testing.T) pipeline.Source {
				s, err := generate.New(generate.Config{Count: int64(len(values)), BatchSize: 100})
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			Values: own,
		}
	}, sourcetest.Features{Exhausts: true})
}
