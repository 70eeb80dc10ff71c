package kafka

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/checkpoint"
)

// Records at hand: fetched, not yet handed to the pipeline.
//
// With sink.writer.ordering partition (or key) the writer keeps its request
// slots busy only while its buffer holds records of many partitions: a
// partition has one batch in flight at a time. On a backlog a fetch brings
// up to fetch_max_partition_bytes of each partition (and always at least
// one whole producer batch: 1 MiB of 100-byte records is ~9,500 of them),
// and franz-go's poll returns them partition after partition, so handed
// over as polled, a writer buffer of 10,000 records held one or two
// partitions at a time and the writer kept 1-2 requests in flight.
//
// Smaller fetches do not fix that when producers wrote big batches (the
// broker returns a whole batch whatever the bound), and cutting a poll and
// fetching the rest again would fetch each batch many times. Pausing the
// partitions that hold more than their share does not either: a resumed
// partition waits for the fetch in flight, which waits up to the broker's
// 5s when the partitions in it have caught up. So the source keeps what it
// polled, per partition (hand), and hands over an interleaved part of it:
// each partition at most its share of the sink's record budget (one and a
// half budgets divided by the partitions that have records at hand or in
// the pipeline, so one busy partition still gets all of it, and ordering
// none loses nothing) minus what it has in the pipeline, the partitions
// with the least in the pipeline first. The poll loop takes what the
// client has buffered without waiting, so the records at hand span as many
// partitions as the fetches brought. What is at hand is bounded by a
// quarter of the sink's byte budget and by its free bytes (what a poll held
// before), and the client buffers one fetch per broker beyond it, as
// before. The exactly-once mode keeps nothing at hand: its transaction
// commits the offsets of everything polled.

// handPart is one partition's records at hand.
type handPart struct {
	k     tp
	tr    *checkpoint.Partition // the tracker they were polled under
	recs  []*kgo.Record         // increasing offsets, contiguous from the tracker's next
	bytes int64
	// pending is what the partition has in the pipeline (begun, not
	// done), as handOver last read it.
	pending int64
}

// hand holds the records at hand, per partition. It belongs to the poll
// loop's goroutine.
type hand struct {
	parts []*handPart // with records; in the order they came
	idx   map[tp]*handPart
	n     int64 // records at hand
	bytes int64
	next  int // the part handed over first next time (rotates)
	// acked is poked (never blocking) when records handed over are done:
	// their partitions' shares have room again.
	acked chan struct{}
}

func newHand() *hand { return &hand{idx: map[tp]*handPart{}, acked: make(chan struct{}, 1)} }

// ackedFunc returns the function the records' ackers call when they are
// done: done, then a poke of h.acked.
func (h *hand) ackedFunc(done func()) func() {
	return func() {
		done()
		select {
		case h.acked <- struct{}{}:
		default:
		}
	}
}

// add appends polled records of k, fetched under tracker tr. Records of an
// older tracker are dropped (the partition was reassigned: the client
// fetches again from the group's offset); so are those at or above the
// first new offset (the client reset its position and fetches them again).
func (h *hand) add(k tp, tr *checkpoint.Partition, recs []*kgo.Record) {
	if len(recs) == 0 {
		return
	}
	p := h.idx[k]
	if p == nil {
		p = &handPart{k: k, tr: tr}
		h.idx[k] = p
		h.parts = append(h.parts, p)
	}
	if p.tr != tr {
		h.truncate(p, 0)
		p.tr = tr
	}
	if n := len(p.recs); n > 0 && p.recs[n-1].Offset >= recs[0].Offset {
		i, _ := slices.BinarySearchFunc(p.recs, recs[0].Offset, func(r *kgo.Record, o int64) int {
			switch {
			case r.Offset < o:
				return -1
			case r.Offset > o:
				return 1
			}
			return 0
		})
		h.truncate(p, i)
	}
	// Clip: the polled slice may share its array with the client's buffer.
	p.recs = append(slices.Clip(p.recs), recs...)
	for _, r := range recs {
		sz := int64(recordSize(r))
		p.bytes += sz
		h.bytes += sz
	}
	h.n += int64(len(recs))
}

// truncate keeps p's first n records.
func (h *hand) truncate(p *handPart, n int) {
	for _, r := range p.recs[n:] {
		sz := int64(recordSize(r))
		p.bytes -= sz
		h.bytes -= sz
	}
	h.n -= int64(len(p.recs) - n)
	clear(p.recs[n:])
	p.recs = p.recs[:n]
}

// take removes p's first n records (of b bytes) and returns them.
func (h *hand) take(p *handPart, n int, b int64) []*kgo.Record {
	out := p.recs[:n:n]
	p.recs = p.recs[n:]
	p.bytes -= b
	h.bytes -= b
	h.n -= int64(n)
	return out
}

// compact forgets the emptied parts.
func (h *hand) compact() {
	h.parts = slices.DeleteFunc(h.parts, func(p *handPart) bool {
		if len(p.recs) > 0 {
			return false
		}
		delete(h.idx, p.k)
		p.recs = nil // the handed-over records' array is the client's
		return true
	})
	if h.next >= len(h.parts) {
		h.next = 0
	}
}

// drop forgets p's records.
func (h *hand) drop(p *handPart) { h.truncate(p, 0) }

// empty reports whether nothing is at hand.
func (h *hand) empty() bool { return h.n == 0 }
