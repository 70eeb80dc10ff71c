package state

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// SavepointVersion is the version of Savepoint records this build writes
// and reads.
const SavepointVersion = 1

// SavedStateNames are the names of a job's state (keys "<job>/<name>" of
// the state topic) a savepoint carries: the strategy's learnt state, the
// live limit applied last and the breaker record.
var SavedStateNames = []string{"strategy", "limits", "breaker"}

// ErrSavepointNotFound is returned for a savepoint id a job does not have.
var ErrSavepointNotFound = errors.New("savepoint not found")

// Savepoint is what a job's consumer group had committed and the job's
// state at one moment, under an id (spillway savepoint create): restoring
// it (spillway run --from-savepoint) makes the group consume again from
// those offsets with that state. Stored as the value of the key
// "<job>/savepoints/<id>" of the state topic, or in a file, as JSON:
//
//	{"version":1,"id":"sp-20261127T190000Z-3f2a","job":"orders","group":"orders-group",
//	 "created_at":"2026-11-27T19:00:00Z","stopped":true,"partitions":{"orders":4},
//	 "offsets":[{"topic":"orders","partition":0,"offset":1200}, ...],
//	 "state":{"strategy":{"kind":"aimd","version":1,"limit":40}}}
type Savepoint struct {
	Version   int       `json:"version"`
	ID        string    `json:"id"`
	Job       string    `json:"job"`
	Group     string    `json:"group"`
	CreatedAt time.Time `json:"created_at"`
	// Stopped says the job's workers drained and left the group before
	// the offsets were read (savepoint create --stop): nothing was in
	// flight, the offsets are exact.
	Stopped bool `json:"stopped,omitempty"`
	// Partitions is the partition count of each topic of Offsets (and of
	// the job's source topics) when the savepoint was taken.
	Partitions map[string]int32 `json:"partitions"`
	// Offsets are the group's committed offsets, sorted by topic and
	// partition; a partition without a commit has none.
	Offsets []SavepointOffset `json:"offsets"`
	// State holds the job's state values by name (SavedStateNames) as the
	// job saved them; a name the job had not saved is absent.
	State map[string]json.RawMessage `json:"state,omitempty"`
}

// SavepointOffset is one committed offset: the next record to consume,
// with the commit's metadata (the done ranges above it, see
// checkpoint.Metadata).
type SavepointOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Metadata  string `json:"metadata,omitempty"`
}

// SavepointKey returns the state topic key of savepoint id of job.
func SavepointKey(job, id string) string { return Key(job, "savepoints/"+id) }

// savepointPrefix is the state topic key prefix of job's savepoints.
func savepointPrefix(job string) string { return Key(job, "savepoints/") }

// NewSavepointID returns a readable id for a savepoint taken at now:
// "sp-" and the UTC time to the second, then four random hex digits so
// that two savepoints of one second differ (sp-20261127T190000Z-3f2a).
func NewSavepointID(now time.Time) string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return "sp-" + now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// ValidateSavepointID reports what is wrong with id: empty, longer than
// 100 bytes, or other characters than letters, digits, '.', '_' and '-'.
func ValidateSavepointID(id string) error {
	switch {
	case id == "":
		return errors.New("empty savepoint id")
	case len(id) > 100:
		return fmt.Errorf("savepoint id %.20q...: longer than 100 characters", id)
	case strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "":
		return fmt.Errorf("savepoint id %q: only letters, digits, '.', '_' and '-'", id)
	}
	return nil
}

// Validate reports everything wrong with sp: an unknown version, a bad id,
// no job or group, no time, an offset that is negative, repeated or of a
// partition the partition counts do not have, or a state value that is
// not a saved name or not JSON.
func (sp Savepoint) Validate() error {
	var errs []error
	if sp.Version != SavepointVersion {
		errs = append(errs, fmt.Errorf("unsupported version %d (this build reads version %d)", sp.Version, SavepointVersion))
	}
	if err := ValidateSavepointID(sp.ID); err != nil {
		errs = append(errs, fmt.Errorf("id: %w", err))
	}
	if sp.Job == "" {
		errs = append(errs, errors.New("job: required"))
	}
	if sp.Group == "" {
		errs = append(errs, errors.New("group: required"))
	}
	if sp.CreatedAt.IsZero() {
		errs = append(errs, errors.New("created_at: required"))
	}
	for t, n := range sp.Partitions {
		if t == "" || n < 0 {
			errs = append(errs, fmt.Errorf("partitions: %q: %d", t, n))
		}
	}
	seen := map[SavepointOffset]bool{}
	for i, o := range sp.Offsets {
		n, ok := sp.Partitions[o.Topic]
		switch {
		case o.Topic == "":
			errs = append(errs, fmt.Errorf("offsets[%d]: no topic", i))
		case o.Partition < 0 || o.Offset < 0:
			errs = append(errs, fmt.Errorf("offsets[%d]: %s/%d at %d: negative", i, o.Topic, o.Partition, o.Offset))
		case !ok || o.Partition >= n:
			errs = append(errs, fmt.Errorf("offsets[%d]: %s/%d: not a partition of the partition counts %v", i, o.Topic, o.Partition, sp.Partitions))
		}
		k := SavepointOffset{Topic: o.Topic, Partition: o.Partition}
		if seen[k] {
			errs = append(errs, fmt.Errorf("offsets[%d]: %s/%d repeated", i, o.Topic, o.Partition))
		}
		seen[k] = true
	}
	for name, v := range sp.State {
		if !slices.Contains(SavedStateNames, name) {
			errs = append(errs, fmt.Errorf("state: unknown name %q (want %s)", name, strings.Join(SavedStateNames, ", ")))
		} else if !json.Valid(v) {
			errs = append(errs, fmt.Errorf("state.%s: not JSON", name))
		}
	}
	return errors.Join(errs...)
}

// Encode validates sp, sorts its offsets and encodes it as JSON; indent
// makes it readable (for a file).
func (sp Savepoint) Encode(indent bool) ([]byte, error) {
	if err := sp.Validate(); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	sp.Offsets = slices.Clone(sp.Offsets)
	slices.SortFunc(sp.Offsets, func(a, b SavepointOffset) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	if indent {
		b, err := json.MarshalIndent(sp, "", "  ")
		return append(b, '\n'), err
	}
	return json.Marshal(sp)
}

// ParseSavepoint decodes and validates a savepoint: strict JSON, no
// unknown field. A non-empty key (the state topic's) must be the
// savepoint's own key.
func ParseSavepoint(key string, value []byte) (Savepoint, error) {
	var sp Savepoint
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sp); err != nil {
		var v struct {
			Version int `json:"version"`
		}
		if json.Unmarshal(value, &v) == nil && v.Version > SavepointVersion {
			return Savepoint{}, fmt.Errorf("savepoint: unsupported version %d (this build reads version %d)", v.Version, SavepointVersion)
		}
		return Savepoint{}, fmt.Errorf("savepoint: decode: %w", err)
	}
	if dec.More() {
		return Savepoint{}, errors.New("savepoint: decode: data after the JSON object")
	}
	if err := sp.Validate(); err != nil {
		return Savepoint{}, fmt.Errorf("savepoint: %w", err)
	}
	// A file is indented: the values go back as the job wrote them.
	for name, v := range sp.State {
		var b bytes.Buffer
		if json.Compact(&b, v) == nil {
			sp.State[name] = b.Bytes()
		}
	}
	if key != "" && key != SavepointKey(sp.Job, sp.ID) {
		return Savepoint{}, fmt.Errorf("savepoint: job %q and id %q do not match the record key %q", sp.Job, sp.ID, key)
	}
	return sp, nil
}

// Total is the sum of the offsets: how many records of the group's
// partitions came before the savepoint.
func (sp Savepoint) Total() int64 {
	var n int64
	for _, o := range sp.Offsets {
		n += o.Offset
	}
	return n
}
