package http

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/sinks/internal/jsonenc"
)

// maxPooledBody bounds the buffers kept for reuse; larger ones are dropped.
const maxPooledBody = 16 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// body is a request body in a pooled buffer. The transport may still read
// or close a request body after Client.Do returned, and may ask for fresh
// copies (GetBody) for redirects and retries, so the buffer goes back to the
// pool only when the request is over and every reader handed out was closed.
type body struct {
	buf  *[]byte
	refs atomic.Int32 // the owner plus open readers
}

// encoder turns record values into body elements per value_encoding,
// binary_values and tombstones. It is read-only after New.
type encoder struct {
	values    jsonenc.Values
	dropTombs bool
	ndjson    bool
}

// encoded is a request body and what became of each record of its batch.
type encoded struct {
	*body
	// failed are the records that could not be encoded, by batch index,
	// each with a fatal error; they are not in the body.
	failed []sinks.EntryError
	// sent maps each element of the body to its batch index; nil when the
	// body holds every record of the batch, in order.
	sent []int
	// dropped counts the tombstones left out (tombstones: drop).
	dropped int
}

// encode writes the body for batch. Records that cannot be encoded and
// dropped tombstones are left out (see encoded); the body then holds the
// others, in batch order.
func (e *encoder) encode(batch []pipeline.Record) encoded {
	bp := bufPool.Get().(*[]byte)
	size := 2
	for i := range batch {
		size += len(batch[i].Value) + 2
	}
	if e.values.Encoding == EncodingBase64 {
		size += size / 3
	}
	b := slices.Grow((*bp)[:0], size)
	if !e.ndjson {
		b = append(b, '[')
	}
	var out encoded
	elems := 0
	for i := range batch {
		v := batch[i].Value
		if v == nil && e.dropTombs {
			out.dropped++
			out.skip(i)
			continue
		}
		start := len(b)
		if !e.ndjson && elems > 0 {
			b = append(b, ',')
		}
		var err error
		b, err = e.values.Append(b, v)
		if err != nil {
			b = b[:start]
			out.failed = append(out.failed, sinks.EntryError{Index: i, Err: sinks.AsFatal(&sinks.DetailedError{
				Err:     err,
				Details: map[string]string{"http.error": "value_encoding"},
			})})
			out.skip(i)
			continue
		}
		if e.ndjson {
			b = append(b, '\n')
		}
		elems++
		if out.sent != nil {
			out.sent = append(out.sent, i)
		}
	}
	if !e.ndjson {
		b = append(b, ']')
	}
	*bp = b
	out.body = &body{buf: bp}
	out.body.refs.Store(1)
	return out
}

// skip notes that record i of the batch is not in the body: from now on
// the body's elements are mapped to batch indexes.
func (out *encoded) skip(i int) {
	if out.sent == nil { // every record before i is in the body
		out.sent = make([]int, i, i+16) // not nil, even for i == 0
		for j := range i {
			out.sent[j] = j
		}
	}
}

// records returns the records of batch that are in the body.
func (out *encoded) records(batch []pipeline.Record) []pipeline.Record {
	if out.sent == nil {
		return batch
	}
	recs := make([]pipeline.Record, len(out.sent))
	for j, i := range out.sent {
		recs[j] = batch[i]
	}
	return recs
}

// result combines the outcome of the request that carried the body (err,
// about its elements) with the records left out of it into the outcome of
// the batch.
func (out *encoded) result(err error) error {
	if out.sent == nil {
		return err
	}
	if err == nil && len(out.failed) == 0 {
		return nil
	}
	failed := slices.Clip(out.failed)
	var be *sinks.BatchError
	switch {
	case err == nil:
	case errors.As(err, &be):
		for _, f := range be.Failed {
			failed = append(failed, sinks.EntryError{Index: out.sent[f.Index], Err: f.Err})
		}
	default:
		// The whole request failed: each of its records with the same error,
		// marked as the request's (a fatal one is bisected).
		rerr := sinks.AsRequestError(err)
		for _, i := range out.sent {
			failed = append(failed, sinks.EntryError{Index: i, Err: rerr})
		}
	}
	slices.SortFunc(failed, func(a, b sinks.EntryError) int { return a.Index - b.Index })
	return &sinks.BatchError{Failed: failed}
}

func (b *body) bytes() []byte { return *b.buf }

// open returns a new reader over the body.
func (b *body) open() io.ReadCloser {
	b.refs.Add(1)
	return &bodyReader{b: b, r: bytes.NewReader(*b.buf)}
}

// release drops one reference and recycles the buffer after the last.
func (b *body) release() {
	if b.refs.Add(-1) != 0 {
		return
	}
	if cap(*b.buf) <= maxPooledBody {
		*b.buf = (*b.buf)[:0]
		bufPool.Put(b.buf)
	}
	b.buf = nil
}

// bodyReader is one reader of a body. Read and Close may be called from
// different transport goroutines; after Close, Read reports EOF and never
// touches the (possibly recycled) buffer. It deliberately has no WriteTo.
type bodyReader struct {
	mu     sync.Mutex
	b      *body
	r      *bytes.Reader
	closed bool
}

func (r *bodyReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, io.EOF
	}
	return r.r.Read(p)
}

func (r *bodyReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.r = nil
		r.b.release()
	}
	return nil
}

// IdempotencyKey identifies batch by the origins of its records, so a retry
// of the same records carries the same key, in this process or after a
// restart, and a receiver can drop duplicates.
//
// When the batch is one partition's consecutive offsets first..last (each
// once, in order) the key is readable: "<topic>-<partition>-<first>-<last>",
// for example "orders-3-1200-1699", with bytes of the topic outside
// [A-Za-z0-9._-] percent-encoded. Any other batch (several partitions, gaps
// left by a filter, a retried subset) gets "<records>-<sha256 hex>", the
// hash taken over the sorted (topic, partition) groups and, for each, its
// runs of consecutive offsets in batch order. Operators that turn one record
// into several give the children their parent's origin; when a partition's
// offsets are not strictly increasing the keys and values are hashed too,
// so batches holding different children of one parent get different keys.
// An empty batch has the empty key.
func IdempotencyKey(batch []pipeline.Record) string {
	if len(batch) == 0 {
		return ""
	}
	first := batch[0].Origin
	contiguous := true
	for i := 1; i < len(batch); i++ {
		o := batch[i].Origin
		if o.Topic != first.Topic || o.Partition != first.Partition || o.Offset != first.Offset+int64(i) {
			contiguous = false
			break
		}
	}
	if contiguous {
		b := make([]byte, 0, len(first.Topic)+48)
		b = appendTopic(b, first.Topic)
		b = append(b, '-')
		b = strconv.AppendInt(b, int64(first.Partition), 10)
		b = append(b, '-')
		b = strconv.AppendInt(b, first.Offset, 10)
		b = append(b, '-')
		b = strconv.AppendInt(b, batch[len(batch)-1].Origin.Offset, 10)
		return string(b)
	}
	return hashKey(batch)
}

type offsetRun struct{ first, last int64 }

type partitionRuns struct {
	topic      string
	partition  int32
	runs       []offsetRun
	increasing bool
}

func hashKey(batch []pipeline.Record) string {
	var groups []partitionRuns
	cur := -1
	for i := range batch {
		o := batch[i].Origin
		if cur < 0 || groups[cur].topic != o.Topic || groups[cur].partition != o.Partition {
			cur = slices.IndexFunc(groups, func(g partitionRuns) bool {
				return g.topic == o.Topic && g.partition == o.Partition
			})
			if cur < 0 {
				groups = append(groups, partitionRuns{topic: o.Topic, partition: o.Partition, increasing: true})
				cur = len(groups) - 1
			}
		}
		g := &groups[cur]
		if n := len(g.runs); n > 0 && o.Offset == g.runs[n-1].last+1 {
			g.runs[n-1].last = o.Offset
			continue
		} else if n > 0 && o.Offset <= g.runs[n-1].last {
			g.increasing = false
		}
		g.runs = append(g.runs, offsetRun{o.Offset, o.Offset})
	}
	slices.SortFunc(groups, func(a, b partitionRuns) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})

	h := sha256.New()
	var scratch [binary.MaxVarintLen64]byte
	putInt := func(v int64) { h.Write(binary.AppendVarint(scratch[:0], v)) }
	putBytes := func(b []byte) { putInt(int64(len(b))); h.Write(b) }
	content := false
	putInt(int64(len(groups)))
	for _, g := range groups {
		putBytes([]byte(g.topic))
		putInt(int64(g.partition))
		putInt(int64(len(g.runs)))
		for _, r := range g.runs {
			putInt(r.first)
			putInt(r.last)
		}
		content = content || !g.increasing
	}
	if content {
		for i := range batch {
			putBytes(batch[i].Key)
			putBytes(batch[i].Value)
		}
	}
	var sum [sha256.Size]byte
	b := strconv.AppendInt(make([]byte, 0, 24+2*sha256.Size), int64(len(batch)), 10)
	b = append(b, '-')
	b = hex.AppendEncode(b, h.Sum(sum[:0]))
	return string(b)
}

func appendTopic(dst []byte, topic string) []byte {
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
			dst = append(dst, c)
		default:
			dst = append(dst, '%', "0123456789ABCDEF"[c>>4], "0123456789ABCDEF"[c&0xf])
		}
	}
	return dst
}

// validTraceparent checks the W3C trace-context layout
// version-traceid-parentid-flags (lower-case hex; later versions may append
// fields) and that the value is printable ASCII.
func validTraceparent(v []byte) bool {
	if len(v) < 55 || len(v) > 512 || (len(v) > 55 && v[55] != '-') {
		return false
	}
	for i, c := range v {
		if c < ' ' || c > '~' {
			return false
		}
		if i >= 55 {
			continue
		}
		switch i {
		case 2, 35, 52:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return string(v[:2]) != "ff" && string(v[3:35]) != "00000000000000000000000000000000" &&
		string(v[36:52]) != "0000000000000000"
}

// validTracestate accepts printable ASCII up to the W3C size limit.
func validTracestate(v []byte) bool {
	if len(v) == 0 || len(v) > 512 {
		return false
	}
	for _, c := range v {
		if c < ' ' || c > '~' {
			return false
		}
	}
	return true
}
