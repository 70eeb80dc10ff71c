package kafka

import "github.com/twmb/franz-go/pkg/kerr"

func kerrForCode(code int16) error { return kerr.ErrorForCode(code) }
