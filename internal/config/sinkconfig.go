package config

import (
	"strings"

	sinkhttp "github.com/spillway-io/spillway/sinks/http"
)

// SinkConfig is the HTTP sink's own configuration for h.
func (h *HTTPSink) SinkConfig() sinkhttp.Config {
	c := sinkhttp.Config{
		URL: h.URL, Method: h.Method, Format: h.Format, Headers: h.Headers,
		BearerToken: h.BearerToken, Timeout: h.Timeout,
		SuccessfulOn: h.SuccessfulOn, BackoffOn: h.BackoffOn, ThrottleOn: h.ThrottleOn, DropOn: h.DropOn,
	}
	if h.BasicAuth != nil {
		c.Username, c.Password = h.BasicAuth.Username, h.BasicAuth.Password
	}
	return c
}

// sinkErrors reports err, a join of "key: message" errors from a sink's own
// Validate, at base+"."+key, except where the validator already reported
// that key or one below it: the sink package is the authority on what it
// accepts, the validator adds positions and the config's own wording.
func (v *validator) sinkErrors(base string, err error) {
	if err == nil {
		return
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		key, msg, ok := strings.Cut(e.Error(), ": ")
		if !ok {
			key, msg = "", e.Error()
		}
		path := base
		if key != "" {
			path += "." + key
		}
		if v.reported(path) {
			continue
		}
		v.errorf(path, "%s", msg)
	}
}

// reported reports whether an error was recorded at path or below it.
func (v *validator) reported(path string) bool {
	for _, e := range v.errs {
		if e.Path == path || within(e.Path, path) {
			return true
		}
	}
	return false
}
