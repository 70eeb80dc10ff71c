package kafkaclient

import (
	"errors"
	"fmt"
)

// CheckTopic reports what is wrong with a Kafka topic name, or nil: it must
// be 1 to 249 characters of letters, digits, '.', '_' and '-', and neither
// "." nor "..".
func CheckTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty topic name")
	case t == "." || t == "..":
		return fmt.Errorf("invalid topic name %q", t)
	case len(t) > 249:
		return fmt.Errorf("topic name longer than 249 characters: %d, starting %q", len(t), t[:20])
	}
	for _, c := range t {
		if !(c == '.' || c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return fmt.Errorf("invalid topic name %q: use only letters, digits, '.', '_' and '-'", t)
		}
	}
	return nil
}
