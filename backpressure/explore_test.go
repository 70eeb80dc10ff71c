package backpressure

import (
	"strconv"
	"testing"
	"time"
)

func TestExplore(t *testing.T) {
	for _, room := range []bool{false} {
	simRoom = room
	for _, burst := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, time.Second} {
		for _, batch := range []int{100, 500} {
			for _, variant := range []int{2, 0, 3} {
				line := ""
				for _, c := range []float64{5000, 10000, 20000, 40000, 80000} {
					a, _ := NewAIMD(AIMDConfig{MaxBatchSize: batch, MaxInFlightRequests: 16})
					if batch*8 < int(c*0.05) {
						a, _ = NewAIMD(AIMDConfig{MaxBatchSize: batch, MaxInFlightRequests: 8, MaxLimit: int(c * 0.1)})
					}
					a.variant = variant
					sink := newThrottlingSink(c, burst, 20*time.Millisecond, 10*time.Millisecond)
					st := simulate(a, sink, batch, []simPhase{
						{c, 30 * time.Second, 10 * time.Second},
						{c / 2, 30 * time.Second, 10 * time.Second},
						{c, 30 * time.Second, 10 * time.Second},
					}, nil)
					g, th := 10.0, 0.0
					for i, s := range st {
						cp := c
						if i == 1 {
							cp = c / 2
						}
						g = min(g, s.goodput()/cp)
						th = max(th, s.throttledFraction())
					}
					line += "  " + ftoa(g) + "/" + ftoa(th)
				}
				t.Logf("room %v burst %v batch %3d v%d: %s", room, burst, batch, variant, line)
			}
		}
	}
}

}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) }
