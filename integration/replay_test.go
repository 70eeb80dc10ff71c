package integration

import (
	"testing"
	"time"
)

// Helpers of the crash-replay measurements (TestKillAndRestart).

// received returns how many ids the receiver counted, duplicates included.
func (rc *receiver) received() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.total
}

// settle waits until the receiver's count has not moved for quiet (the
// requests it was still answering are done) and returns it.
func (rc *receiver) settle(t *testing.T, quiet, limit time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(limit)
	last, since := rc.received(), time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			t.Fatalf("receiver still counting after %v", limit)
		}
		time.Sleep(quiet / 10)
		if n := rc.received(); n != last {
			last, since = n, time.Now()
		}
	}
	return last
}
