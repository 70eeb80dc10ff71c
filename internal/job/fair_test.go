package job

import (
	"math"
	"testing"
)

// TestFairShare: max-min fairness weighted by share, with no opinion
// unless another worker that wants more is held back.
func TestFairShare(t *testing.T) {
	for _, c := range []struct {
		name   string
		self   load
		others []load
		want   float64
	}{
		{"alone", load{1, 900, true}, nil, 0},
		{"greedy beside a starved worker", load{0.5, 900, true}, []load{{0.5, 100, true}}, 500},
		{"starved beside a greedy worker", load{0.5, 100, true}, []load{{0.5, 900, true}}, 500},
		{"equal already", load{0.5, 500, true}, []load{{0.5, 420, true}}, 0},
		{"the other wants no more: no opinion", load{0.5, 900, true}, []load{{0.5, 100, false}}, 0},
		{"self wants no more", load{0.5, 100, false}, []load{{0.5, 900, true}}, 0},
		{"weights by partitions", load{2.0 / 3, 400, true}, []load{{1.0 / 3, 100, true}, {0, 500, false}}, 500.0 * 2 / 3},
		{"three, one quiet", load{0.25, 600, true}, []load{{0.25, 100, true}, {0.5, 200, false}}, 350},
	} {
		got := fairShare(c.self, c.others)
		if math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: fair share %v, want %v", c.name, got, c.want)
		}
	}
}
