package checkpoint

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Commit metadata: what a partition's commit carries besides its offset.
//
// The committed offset of a partition is the lowest one not done, so
// everything done above it (records completed out of order, or delivered
// since the commit before) would be delivered again by the next owner. The
// metadata names those offsets, so that the next owner can skip them, in
// the style of Confluent's Parallel Consumer. The text form is
//
//	sw1:<checkpoint id>:<runs>
//
// where <runs> is unpadded standard base64 of a sequence of uvarint pairs
// (skip, length-1), one per range of done offsets in increasing order: a
// range starts skip offsets after the first offset not yet covered (the
// committed offset plus one for the first range, since the committed
// offset itself is never done) and holds length offsets. Ranges a few
// offsets apart cost two or three bytes each whatever the offsets' size.

// MetadataVersion prefixes every metadata string this package writes; a
// string without it is foreign (another client, an older Spillway) and
// names no done offsets.
const MetadataVersion = "sw1:"

// MetadataLimit is the default bound on an encoded metadata string, in
// bytes: half of Kafka's offset.metadata.max.bytes default (4096), so a
// broker configured below its default still takes it. Several hundred
// ranges fit.
const MetadataLimit = 2048

// ErrForeignMetadata is returned by ParseMetadata for a string that does not
// start with MetadataVersion.
var ErrForeignMetadata = errors.New("commit metadata not written by this version")

// Metadata is what a commit of one partition records besides its offset.
type Metadata struct {
	// Checkpoint is the id of the checkpoint that made the commit.
	Checkpoint int64
	// Done are offsets above the committed one that are done, as
	// [first, last] ranges, increasing and disjoint (Partition.DoneAbove).
	Done [][2]int64
}

// Encode returns m's text form for a commit at offset committed, at most
// limit bytes long (MetadataLimit when limit <= 0). Only ranges entirely
// above committed are written, from the lowest on, as many as fit whole:
// the result may name fewer done offsets than m, never one m does not. When
// not even the header fits, it returns "".
func (m Metadata) Encode(committed int64, limit int) string {
	if limit <= 0 {
		limit = MetadataLimit
	}
	head := MetadataVersion + strconv.FormatInt(m.Checkpoint, 10) + ":"
	if len(head) > limit || committed < 0 || committed == math.MaxInt64 {
		if len(head) > limit {
			return ""
		}
		return head
	}
	room := base64.RawStdEncoding.DecodedLen(limit - len(head)) // payload bytes that fit
	var buf []byte
	next := committed + 1 // first offset not covered yet
	for _, r := range m.Done {
		first, last := max(r[0], next), r[1]
		if last < first {
			continue // at or below what is covered: nothing new
		}
		n := len(buf)
		buf = binary.AppendUvarint(buf, uint64(first-next))
		buf = binary.AppendUvarint(buf, uint64(last-first))
		if len(buf) > room {
			buf = buf[:n]
			break
		}
		if last == math.MaxInt64 {
			break
		}
		next = last + 1
	}
	return head + base64.RawStdEncoding.EncodeToString(buf)
}

// ParseMetadata reads a string Encode wrote for a commit at offset
// committed. It returns ErrForeignMetadata (wrapped) for a string of another
// origin and another error for a malformed one; the ranges it returns are
// increasing, disjoint and above committed.
func ParseMetadata(s string, committed int64) (Metadata, error) {
	rest, ok := strings.CutPrefix(s, MetadataVersion)
	if !ok {
		return Metadata{}, fmt.Errorf("%w: %.20q", ErrForeignMetadata, s)
	}
	id, runs, ok := strings.Cut(rest, ":")
	if !ok {
		return Metadata{}, errors.New("commit metadata: no checkpoint id")
	}
	var m Metadata
	var err error
	if m.Checkpoint, err = strconv.ParseInt(id, 10, 64); err != nil {
		return Metadata{}, fmt.Errorf("commit metadata: checkpoint id: %w", err)
	}
	buf, err := base64.RawStdEncoding.DecodeString(runs)
	if err != nil {
		return Metadata{}, fmt.Errorf("commit metadata: %w", err)
	}
	if len(buf) > 0 && (committed < 0 || committed == math.MaxInt64) {
		return Metadata{}, fmt.Errorf("commit metadata: ranges above offset %d", committed)
	}
	next := committed + 1
	for len(buf) > 0 {
		skip, n := binary.Uvarint(buf)
		if n <= 0 {
			return Metadata{}, errors.New("commit metadata: truncated range")
		}
		buf = buf[n:]
		span, n := binary.Uvarint(buf)
		if n <= 0 {
			return Metadata{}, errors.New("commit metadata: truncated range")
		}
		buf = buf[n:]
		// first = next+skip and last = first+span must stay below MaxInt64
		// (never an offset), and next must be reachable after the range.
		if skip >= uint64(math.MaxInt64-next) || span >= uint64(math.MaxInt64-next)-skip {
			return Metadata{}, errors.New("commit metadata: range beyond the offset space")
		}
		first := next + int64(skip)
		last := first + int64(span)
		if k := len(m.Done); k > 0 && m.Done[k-1][1]+1 == first {
			m.Done[k-1][1] = last // adjacent: one range
		} else {
			m.Done = append(m.Done, [2]int64{first, last})
		}
		next = last + 1
	}
	return m, nil
}
