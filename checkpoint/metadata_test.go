package checkpoint_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/checkpoint"
)

func TestMetadataRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name      string
		committed int64
		done      [][2]int64
	}{
		{"nothing above", 100, nil},
		{"one range", 100, [][2]int64{{101, 150}}},
		{"several", 0, [][2]int64{{5, 5}, {7, 9}, {1000, 1999}}},
		{"large offsets", 1 << 50, [][2]int64{{1<<50 + 2, 1<<50 + 3}, {1 << 51, 1<<51 + 10}}},
		{"up to the last offset", math.MaxInt64 - 10, [][2]int64{{math.MaxInt64 - 5, math.MaxInt64 - 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := checkpoint.Metadata{Checkpoint: 42, Done: tc.done}
			s := in.Encode(tc.committed, 0)
			if !strings.HasPrefix(s, "sw1:42:") || len(s) > checkpoint.MetadataLimit {
				t.Fatalf("Encode = %q", s)
			}
			out, err := checkpoint.ParseMetadata(s, tc.committed)
			if err != nil {
				t.Fatal(err)
			}
			if out.Checkpoint != 42 || !reflect.DeepEqual(out.Done, tc.done) {
				t.Fatalf("round trip of %v = %+v", tc.done, out)
			}
		})
	}
}

// TestMetadataCompact: a partition's usual shape, a few ranges of done
// offsets between batches still in flight, takes a few bytes.
func TestMetadataCompact(t *testing.T) {
	c := int64(123_456_789_000)
	m := checkpoint.Metadata{Checkpoint: 7, Done: [][2]int64{{c + 200, c + 399}, {c + 600, c + 799}, {c + 1000, c + 4999}}}
	if s := m.Encode(c, 0); len(s) > 24 {
		t.Fatalf("Encode = %q (%d bytes)", s, len(s))
	}
}

// TestMetadataBound: when the ranges do not fit, the lowest ones that fit
// whole are written, and the string stays within the limit.
func TestMetadataBound(t *testing.T) {
	var done [][2]int64
	for i := range int64(10_000) {
		done = append(done, [2]int64{10 + 3*i, 10 + 3*i + 1}) // every third offset pending
	}
	for _, limit := range []int{0, 4096, 100, 12, 8} {
		s := checkpoint.Metadata{Checkpoint: 1, Done: done}.Encode(9, limit)
		want := limit
		if limit == 0 {
			want = checkpoint.MetadataLimit
		}
		if len(s) > want {
			t.Fatalf("limit %d: %d bytes", limit, len(s))
		}
		m, err := checkpoint.ParseMetadata(s, 9)
		if err != nil {
			t.Fatalf("limit %d: %v", limit, err)
		}
		if len(m.Done) > 0 && !reflect.DeepEqual(m.Done, done[:len(m.Done)]) {
			t.Fatalf("limit %d: wrote %v, not a prefix of the ranges", limit, m.Done[:min(3, len(m.Done))])
		}
		// Each range costs two bytes here: the bound is used, not wasted.
		if room := (want - len("sw1:1:")) * 3 / 4; len(m.Done) < room/2-1 {
			t.Fatalf("limit %d: only %d ranges", limit, len(m.Done))
		}
	}
	if s := (checkpoint.Metadata{Checkpoint: 123456}).Encode(0, 5); s != "" {
		t.Fatalf("Encode within 5 bytes = %q, want empty", s)
	}
}

// TestMetadataNeverBelowCommitted: ranges at or below the committed offset
// (stale input) are not written: the committed offset is not done.
func TestMetadataNeverBelowCommitted(t *testing.T) {
	s := checkpoint.Metadata{Done: [][2]int64{{1, 5}, {8, 12}, {15, 15}}}.Encode(10, 0)
	m, err := checkpoint.ParseMetadata(s, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := [][2]int64{{11, 12}, {15, 15}}; !reflect.DeepEqual(m.Done, want) {
		t.Fatalf("Done = %v, want %v", m.Done, want)
	}
}

func TestParseMetadataRejects(t *testing.T) {
	uv := func(v ...uint64) string {
		var b []byte
		for _, x := range v {
			b = binary.AppendUvarint(b, x)
		}
		return checkpoint.MetadataVersion + "1:" + b64(b)
	}
	for _, tc := range []struct {
		name, s string
		foreign bool
	}{
		{"empty", "", true},
		{"older spillway", `{"checkpoint":3,"by":"spillway"}`, true},
		{"other version", "sw2:1:AA", true},
		{"no id", "sw1:", false},
		{"bad id", "sw1:x:", false},
		{"bad base64", "sw1:1:!!", false},
		{"odd varints", uv(1), false},
		{"truncated varint", checkpoint.MetadataVersion + "1:" + b64([]byte{0x80}), false},
		{"overflow", uv(math.MaxInt64, 0), false},
		{"span overflow", uv(0, math.MaxInt64-5), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := checkpoint.ParseMetadata(tc.s, 100)
			if err == nil {
				t.Fatalf("ParseMetadata(%q) = %+v, want an error", tc.s, m)
			}
			if errors.Is(err, checkpoint.ErrForeignMetadata) != tc.foreign {
				t.Fatalf("ParseMetadata(%q) = %v, foreign %v", tc.s, err, tc.foreign)
			}
		})
	}
}

func b64(b []byte) string {
	const enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var sb strings.Builder
	for i := 0; i < len(b); i += 3 {
		var v uint32
		n := min(3, len(b)-i)
		for j := range 3 {
			v <<= 8
			if j < n {
				v |= uint32(b[i+j])
			}
		}
		for j := range n + 1 {
			sb.WriteByte(enc[v>>(18-6*j)&63])
		}
	}
	return sb.String()
}

// FuzzMetadata drives a tracker with random begins and acks, encodes what
// it reports done above its committable offset within a random bound, and
// checks the decoded offsets are done in the tracker (the metadata never
// claims an offset that is not), fit the bound, and are all of them when
// the bound allows.
func FuzzMetadata(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, uint16(0))
	f.Add([]byte{9, 200, 3, 17, 255, 0, 0, 40, 41, 42, 43, 1, 2}, uint16(30))
	f.Add([]byte("out of order completion with gaps"), uint16(9))
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		start := int64(1000)
		p := checkpoint.NewPartition(start)
		next := start
		var begun []int64
		for i, b := range data {
			switch {
			case b < 128: // begin, after a gap of b%4
				next += int64(b % 4)
				p.Begin(next)
				begun = append(begun, next)
				next++
			case len(begun) > 0: // ack one begun offset
				p.Ack([]int64{begun[(int(b)*7+i)%len(begun)]})
			}
		}
		committed, _ := p.Committable()
		done := p.DoneAbove()
		s := checkpoint.Metadata{Checkpoint: int64(len(data)), Done: done}.Encode(committed, int(limit))
		want := int(limit)
		if want == 0 {
			want = checkpoint.MetadataLimit
		}
		if len(s) > want {
			t.Fatalf("%d bytes over a bound of %d", len(s), want)
		}
		if s == "" {
			return
		}
		m, err := checkpoint.ParseMetadata(s, committed)
		if err != nil {
			t.Fatalf("ParseMetadata(%q): %v", s, err)
		}
		isDone := map[int64]bool{}
		for _, r := range done {
			for o := r[0]; o <= r[1]; o++ {
				isDone[o] = true
			}
		}
		for _, r := range m.Done {
			for o := r[0]; o <= r[1]; o++ {
				if !isDone[o] || o <= committed {
					t.Fatalf("metadata %q claims offset %d, not done (committed %d, done %v)", s, o, committed, done)
				}
			}
		}
		if limit == 0 && !reflect.DeepEqual(m.Done, done) {
			t.Fatalf("round trip: %v, want %v", m.Done, done)
		}
	})
}

// FuzzParseMetadata: any string parses without panicking, and what parses
// is well formed.
func FuzzParseMetadata(f *testing.F) {
	f.Add("sw1:1:AQID", int64(5))
	f.Add("sw1:99:", int64(0))
	f.Add(`{"checkpoint":1}`, int64(3))
	f.Add("sw1:1:////////////", int64(math.MaxInt64-3))
	f.Fuzz(func(t *testing.T, s string, committed int64) {
		m, err := checkpoint.ParseMetadata(s, committed)
		if err != nil {
			return
		}
		prev := committed
		for _, r := range m.Done {
			if r[0] <= prev || r[1] < r[0] || r[1] == math.MaxInt64 {
				t.Fatalf("ParseMetadata(%q, %d) = %v: not increasing above the committed offset", s, committed, m.Done)
			}
			prev = r[1]
		}
		if back := m.Encode(committed, len(s)+1); len(m.Done) > 0 {
			if m2, err := checkpoint.ParseMetadata(back, committed); err != nil || !reflect.DeepEqual(m2, m) {
				t.Fatalf("re-encoding %q gives %q: %+v, %v", s, back, m2, err)
			}
		}
	})
}

func ExampleMetadata() {
	p := checkpoint.NewPartition(100)
	p.BeginBatch([]int64{100, 101, 102, 103, 104})
	p.Ack([]int64{101, 102, 104}) // 100 and 103 still in flight
	committed, _ := p.Committable()
	s := checkpoint.Metadata{Checkpoint: 1, Done: p.DoneAbove()}.Encode(committed, 0)
	fmt.Println(committed, s)

	// The next owner resumes from the committed offset and skips the rest.
	m, _ := checkpoint.ParseMetadata(s, committed)
	fmt.Println(m.Done)
	// Output:
	// 100 sw1:1:AAEBAA
	// [[101 102] [104 104]]
}
