package checkpoint

import "testing"

// TestPartitionMemoryBounded checks the tracker's memory follows what is
// outstanding, not how many offsets went through: a stream where one record
// is always pending must not grow the tracker.
func TestPartitionMemoryBounded(t *testing.T) {
	p := NewPartition(0)
	p.Begin(0)
	for o := int64(1); o < 1_000_000; o++ {
		p.Begin(o)
		p.Ack([]int64{o - 1})
	}
	if p.Pending() != 1 {
		t.Fatalf("Pending = %d, want 1", p.Pending())
	}
	if n := cap(p.offs); n > 1024 {
		t.Fatalf("tracker holds %d slots for 1 pending offset", n)
	}
}
