package job

import (
	"slices"
	"testing"

	"github.com/spillway-io/spillway/state"
)

// TestSavedStateNames: a savepoint carries every state key the job saves.
func TestSavedStateNames(t *testing.T) {
	for _, k := range []string{keyStrategy, keyLimits, keyBreaker} {
		if !slices.Contains(state.SavedStateNames, k) {
			t.Errorf("the job saves %q, which savepoints leave out (state.SavedStateNames %v)", k, state.SavedStateNames)
		}
	}
}
