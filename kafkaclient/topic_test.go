package kafkaclient

import (
	"strings"
	"testing"
)

func TestCheckTopic(t *testing.T) {
	for _, ok := range []string{"a", "orders.v1", "A-b_c", strings.Repeat("x", 249)} {
		if err := CheckTopic(ok); err != nil {
			t.Errorf("CheckTopic(%q) = %v", ok, err)
		}
	}
	for bad, msg := range map[string]string{
		"":                       "empty topic name",
		".":                      `invalid topic name "."`,
		"a b":                    `invalid topic name "a b": use only`,
		"é":                      `invalid topic name "é"`,
		strings.Repeat("x", 250): "topic name longer than 249 characters",
	} {
		if err := CheckTopic(bad); err == nil || !strings.HasPrefix(err.Error(), msg) {
			t.Errorf("CheckTopic(%.20q) = %v, want %q", bad, err, msg)
		}
	}
}
