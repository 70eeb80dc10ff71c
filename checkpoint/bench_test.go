package checkpoint_test

import (
	"testing"

	"github.com/spillway-io/spillway/checkpoint"
)

// BenchmarkBeginAck is the per-record path: Begin on the poll loop, Ack on
// completion, with a window of records in flight acked slightly out of order.
func BenchmarkBeginAck(b *testing.B) {
	const window = 1024
	p := checkpoint.NewPartition(0)
	var o int64
	ack := make([]int64, 1)
	for b.Loop() {
		p.Begin(o)
		if o >= window {
			// Blocks of 8 acked in reverse: out of order, each offset once.
			d := o - window
			ack[0] = d&^7 + 7 - d&7
			p.Ack(ack)
		}
		o++
	}
	if p.Pending() > window {
		b.Fatalf("%d pending, want at most %d", p.Pending(), window)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkBeginBatchAck500 begins batches of 500 and acks each batch once
// it is two batches old, in two halves, the second first.
func BenchmarkBeginBatchAck500(b *testing.B) {
	const size = 500
	p := checkpoint.NewPartition(0)
	batches := make([][]int64, 3)
	for i := range batches {
		batches[i] = make([]int64, size)
	}
	var o int64
	n := 0
	for b.Loop() {
		cur := batches[n%3]
		for i := range cur {
			cur[i] = o
			o++
		}
		if from, to := p.BeginBatch(cur); from != 0 || to != size {
			b.Fatal("BeginBatch rejected offsets")
		}
		if n >= 2 {
			old := batches[(n-2)%3]
			p.Ack(old[size/2:])
			p.Ack(old[:size/2])
		}
		n++
	}
	b.ReportMetric(float64(b.N)*size/b.Elapsed().Seconds(), "records/s")
}
