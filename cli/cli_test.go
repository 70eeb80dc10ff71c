package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestLogDurationsAsText: a duration in a JSON log line reads "100ms", not
// 100000000 nanoseconds.
func TestLogDurationsAsText(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		newLogger(&b, "info", format).Info("retrying", "after", 100*time.Millisecond)
		if !strings.Contains(b.String(), "100ms") || strings.Contains(b.String(), "100000000") {
			t.Errorf("%s: %q; want the duration as 100ms", format, b.String())
		}
	}
}
