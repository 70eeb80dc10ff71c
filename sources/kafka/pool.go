package kafka

import (
	"sync"
	"sync/atomic"

	"github.com/spillway-io/spillway/checkpoint"
	"github.com/spillway-io/spillway/pipeline"
)

// batchPool recycles a source's poll batches: allocating and zeroing a
// fresh multi-megabyte slice per poll, then filling it with pointers while
// the GC runs, was the largest cost of the source. A lease counts a batch's
// records that are not yet done; when it reaches zero nothing references
// the slice any more (acks come after the sink returned, and no stage may
// keep a batch), so it goes back to its source's pool. Records never
// acknowledged (abandoned at shutdown) just leave their slice to the GC.
// Each Source has its own pool. The zero value is ready; it is safe for
// concurrent use.
type batchPool struct{ p sync.Pool }

// get returns an empty batch with room for n records.
func (bp *batchPool) get(n int) []pipeline.Record {
	if v, ok := bp.p.Get().(*[]pipeline.Record); ok && cap(*v) >= n {
		return (*v)[:0]
	}
	return make([]pipeline.Record, 0, max(n, 1024))
}

// put returns b to the pool.
func (bp *batchPool) put(b []pipeline.Record) {
	b = b[:0]
	bp.p.Put(&b)
}

// lease holds one poll batch until all its records are done.
type lease struct {
	pool  *batchPool
	left  atomic.Int64
	batch []pipeline.Record
}

func (l *lease) arm(batch []pipeline.Record) {
	l.batch = batch
	l.left.Store(int64(len(batch)))
}

func (l *lease) done(n int) {
	if l.left.Add(-int64(n)) == 0 {
		b := l.batch
		l.batch = nil
		l.pool.put(b)
	}
}

// leaseAcker acks offsets on the partition tracker, then releases them
// from the poll batch's lease and tells the source's commit loop (done).
type leaseAcker struct {
	tr    *checkpoint.Partition
	lease *lease
	done  func()
}

func (a *leaseAcker) Ack(offsets []int64) {
	a.tr.Ack(offsets)
	a.lease.done(len(offsets))
	a.done()
}

// Release implements pipeline.Releaser: records of a partition being
// revoked that the sink never sent are given back undone (the tracker's
// commit stops below them), then released from the lease like acked ones.
func (a *leaseAcker) Release(offsets []int64) {
	a.tr.Release(offsets)
	a.lease.done(len(offsets))
	a.done()
}

// Abandoned implements pipeline.Abandoner: the records of a partition
// being revoked, revoked or lost are re-read by its next owner from the
// last commit.
func (a *leaseAcker) Abandoned() bool { return a.tr.Revoked() }
