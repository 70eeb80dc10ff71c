package http

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Body formats.
const (
	FormatJSON   = "json"   // a JSON array, one element per record
	FormatNDJSON = "ndjson" // one JSON element per line
)

// Defaults and bounds.
const (
	DefaultMaxErrorBody = 1024            // bytes of an error response kept
	MaxRetryAfter       = 5 * time.Minute // cap on a Retry-After answer
)

// Config configures the sink. Zero values mean the default given on each
// field; the field doc names the config key used in error messages.
type Config struct {
	URL          string            // url: required, http or https with a host
	Method       string            // method: default POST; upper-cased
	Format       string            // format: "json" (default) or "ndjson"
	Headers      map[string]string // headers: sent on every request; may override Content-Type
	BearerToken  string            // bearer_token: Authorization: Bearer <token>
	Username     string            // basic_auth.username
	Password     string            // basic_auth.password; needs a username
	Timeout      time.Duration     // timeout: per request; 0 = only the context's deadline
	MaxErrorBody int               // max_error_body: bytes kept from an error response; default 1024

	// Per-status classification overriding the defaults (as Benthos's
	// successful_on / backoff_on / drop_on): statuses here count as
	// delivered, retryable with backoff, throttled (Retry-After honoured),
	// or fatal (dead-lettered, never retried). A status may be in one list.
	SuccessfulOn []int // successful_on
	BackoffOn    []int // backoff_on
	ThrottleOn   []int // throttle_on
	DropOn       []int // drop_on
}

// headers the sink manages itself.
var reservedHeaders = []string{"Connection", "Content-Length", "Idempotency-Key", "Transfer-Encoding"}

// Validate reports every invalid setting, each message starting with its
// config key. Zero values are valid (they mean the default).
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	seen := map[int]string{}
	for _, l := range []struct {
		key   string
		codes []int
	}{{"successful_on", c.SuccessfulOn}, {"backoff_on", c.BackoffOn}, {"throttle_on", c.ThrottleOn}, {"drop_on", c.DropOn}} {
		for _, code := range l.codes {
			switch {
			case code < 100 || code > 599:
				add("%s: %d is not an HTTP status", l.key, code)
			case seen[code] != "" && seen[code] != l.key:
				add("%s: status %d is also in %s", l.key, code, seen[code])
			default:
				seen[code] = l.key
			}
		}
	}
	if c.URL == "" {
		add("url: required")
	} else if u, err := url.Parse(c.URL); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue.Error() repeats the URL, which may hold a password
		}
		add("url: %w", err)
	} else {
		if u.Scheme != "http" && u.Scheme != "https" {
			add("url: scheme must be http or https, got %q", u.Scheme)
		}
		if u.Hostname() == "" {
			add("url: host is missing in %q", u.Redacted())
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				add("url: port must be from 1 to 65535, got %s", p)
			}
		}
	}
	if c.Method != "" && !validToken(c.Method) {
		add("method: invalid method %q", c.Method)
	}
	switch c.Format {
	case "", FormatJSON, FormatNDJSON:
	default:
		add("format: must be %s or %s, got %q", FormatJSON, FormatNDJSON, c.Format)
	}
	keys := make([]string, 0, len(c.Headers))
	for k := range c.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	auth := c.BearerToken != "" || c.Username != ""
	for _, k := range keys {
		ck := http.CanonicalHeaderKey(k)
		switch {
		case !validToken(k):
			add("headers: invalid header name %q", k)
		case !validHeaderValue(c.Headers[k]):
			add("headers.%s: value contains control characters", k)
		case slices.Contains(reservedHeaders, ck):
			add("headers.%s: set by the sink, cannot be configured", k)
		case ck == "Authorization" && auth:
			add("headers.%s: conflicts with bearer_token or basic_auth", k)
		}
	}
	if !validHeaderValue(c.BearerToken) {
		add("bearer_token: contains control characters")
	}
	if c.BearerToken != "" && (c.Username != "" || c.Password != "") {
		add("bearer_token: conflicts with basic_auth")
	}
	if c.Password != "" && c.Username == "" {
		add("basic_auth.username: required with a password")
	}
	if strings.Contains(c.Username, ":") {
		add("basic_auth.username: must not contain ':'")
	}
	if c.Timeout < 0 {
		add("timeout: must not be negative, got %v", c.Timeout)
	}
	if c.MaxErrorBody < 0 {
		add("max_error_body: must not be negative, got %d", c.MaxErrorBody)
	}
	return errors.Join(errs...)
}

// validToken reports whether s is an RFC 9110 token (method, header name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue rejects control characters other than tab, which would
// make the request invalid or split it.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
