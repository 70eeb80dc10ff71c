package http

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/sinks/internal/jsonenc"
)

// Body formats.
const (
	FormatJSON   = "json"   // a JSON array, one element per record
	FormatNDJSON = "ndjson" // one JSON element per line
)

// Value encodings (value_encoding): how a record value becomes one element
// of the body.
const (
	// EncodingAuto embeds a value that is valid JSON as is and sends other
	// UTF-8 text as a JSON string; a value that is not valid UTF-8 is
	// handled per binary_values.
	EncodingAuto = jsonenc.EncodingAuto
	// EncodingJSON embeds every value as is; one that is not valid JSON
	// (in UTF-8) fails, alone.
	EncodingJSON = jsonenc.EncodingJSON
	// EncodingString sends every value as a JSON string; one that is not
	// valid UTF-8 fails, alone.
	EncodingString = jsonenc.EncodingString
	// EncodingBase64 sends every value as a JSON string holding its
	// standard base64 encoding (RFC 4648, with padding).
	EncodingBase64 = jsonenc.EncodingBase64
)

// What value_encoding auto does with a value that is not valid UTF-8
// (binary_values).
const (
	BinaryDeadLetter = jsonenc.BinaryDeadLetter // fail the record alone: dead-lettered (or the job stops, per errors.tolerance)
	BinaryBase64     = jsonenc.BinaryBase64     // send {"$base64":"<standard base64>"}
)

// What becomes of a tombstone, a record with a nil value (tombstones).
const (
	TombstonesSend = jsonenc.TombstonesSend // a JSON null
	TombstonesDrop = jsonenc.TombstonesDrop // not sent; it counts as delivered (see Sink.DroppedTombstones)
)

// How the entries named by a rejection answer are matched to records
// (rejections.match).
const (
	MatchIndex = "index" // zero-based positions in the request body
	MatchField = "field" // a top-level field of the record's JSON value
	MatchKey   = "key"   // the record key
)

// Defaults and bounds.
const (
	DefaultMaxErrorBody = 1024            // bytes of an error response kept
	MaxRetryAfter       = 5 * time.Minute // cap on a Retry-After answer
)

// Config configures the sink; its yaml keys are those of a pipeline
// file's sink.http section. Zero values mean the default given on each
// field, which ApplyDefaults fills in. It is plain data.
type Config struct {
	URL         string            `yaml:"url"`          // required: http or https, with a host
	Method      string            `yaml:"method"`       // POST (default), PUT or PATCH, in any case: ApplyDefaults upper-cases it
	Format      string            `yaml:"format"`       // "json" (default, an array) or "ndjson"
	Headers     map[string]string `yaml:"headers"`      // sent on every request; may override Content-Type and Host
	BearerToken string            `yaml:"bearer_token"` // sends Authorization: Bearer <token>
	BasicAuth   *BasicAuth        `yaml:"basic_auth"`   // sends Authorization: Basic; not with bearer_token
	// Timeout bounds each request; 0 = no bound of the sink's own, only
	// the context's deadline. In a pipeline, 0 means the writer's
	// request_timeout: the pipeline loader sets it.
	Timeout time.Duration `yaml:"timeout"`
	// MaxErrorBody is how many bytes of an error response are kept for the
	// error and its dead-letter header; default DefaultMaxErrorBody. Not a
	// pipeline file setting.
	MaxErrorBody int `yaml:"-"`

	// Per-status classification overriding the defaults (2xx delivered,
	// 429 and 503 throttled, other 5xx retried, other 4xx dead-lettered),
	// as Benthos's successful_on / backoff_on / drop_on: statuses here
	// count as delivered, retryable with backoff, throttled (Retry-After
	// honoured), or fatal (dead-lettered, never retried). A status may be
	// in one list only.
	SuccessfulOn []int `yaml:"successful_on"`
	BackoffOn    []int `yaml:"backoff_on"`
	ThrottleOn   []int `yaml:"throttle_on"`
	DropOn       []int `yaml:"drop_on"`

	// ValueEncoding is how each record value becomes one element of the
	// body: auto (default), json, string or base64 (see the Encoding
	// constants). Bytes are never replaced: a value the encoding cannot
	// carry fails alone, with the reason, and the rest of the batch is
	// sent.
	ValueEncoding string `yaml:"value_encoding"`
	// BinaryValues says what value_encoding auto does with a value that is
	// not valid UTF-8: dead_letter (default) or base64. Only with auto.
	BinaryValues string `yaml:"binary_values"`
	// Tombstones says what becomes of a record with a nil value: send
	// (default, a JSON null; an empty value is "") or drop.
	Tombstones string `yaml:"tombstones"`
	// Rejections reads which records a receiver refused from the body of a
	// fatal answer to the whole batch; nil: such an answer fails every
	// record of the request.
	Rejections *Rejections `yaml:"rejections"`
}

// Rejections says where a receiver that refuses a whole request (a 4xx
// classified fatal, such as 400 or 422) lists the records it refused,
// for example {"error":"schema","bad_ids":[17,42]} with path "bad_ids",
// match "field" and field "id". When the body names at least one record
// of the request, and every entry it names is one, only those records
// fail (fatal); the others were not delivered either, and are sent again
// without them (sinks.Resend). Otherwise the whole request fails, as
// without this section.
type Rejections struct {
	// Path is a dotted path to the list in the answer's JSON body
	// ("bad_ids", "error.failed"). Through an array it applies to each
	// element: "errors.id" collects the id of each object of "errors".
	// Required.
	Path string `yaml:"path"`
	// Match is what the listed values are: index (default; zero-based
	// positions in the request body), field (the value of Field in the
	// record's JSON value) or key (the record key). Values are compared
	// as text: the string's contents, or a number as written.
	Match string `yaml:"match"`
	// Field is the top-level field of each record's JSON value that
	// match: field compares; required with it, only with it.
	Field string `yaml:"field"`
}

// BasicAuth is HTTP basic authentication.
type BasicAuth struct {
	Username string `yaml:"username"` // required; no ':'
	Password string `yaml:"password"`
}

// Header size bounds checked by Validate: one value, and all configured
// headers together (most servers answer 431 above these).
const (
	maxHeaderValue = 8 << 10
	maxHeaderTotal = 32 << 10
)

// headers the sink manages itself.
var reservedHeaders = []string{"Connection", "Content-Length", "Idempotency-Key", "Transfer-Encoding"}

// ApplyDefaults upper-cases Method and fills in Method (POST), Format
// (json), MaxErrorBody (DefaultMaxErrorBody), ValueEncoding (auto),
// BinaryValues (dead_letter), Tombstones (send) and, with Rejections,
// its Match (index), replacing Rejections by a defaulted copy rather than
// changing what it points to. Timeout has no default of its own (see
// Timeout). Idempotent.
func (c *Config) ApplyDefaults() {
	c.Method = strings.ToUpper(c.Method)
	if c.Method == "" {
		c.Method = http.MethodPost
	}
	if c.Format == "" {
		c.Format = FormatJSON
	}
	if c.MaxErrorBody == 0 {
		c.MaxErrorBody = DefaultMaxErrorBody
	}
	jsonenc.DefaultSettings(&c.ValueEncoding, &c.BinaryValues, &c.Tombstones)
	if c.Rejections != nil && c.Rejections.Match == "" {
		r := *c.Rejections
		r.Match = MatchIndex
		c.Rejections = &r
	}
}

// Validate reports every invalid setting of a defaulted copy of c as a
// *field.Error with a path relative to the sink.http section ("url",
// "headers.X-Foo", "basic_auth.username"), joined with errors.Join.
// Messages never contain the password or token.
func (c Config) Validate() error {
	c.ApplyDefaults() // c is a copy; ApplyDefaults changes no map, slice or pointee
	var l field.List
	if c.URL == "" {
		l.Add("url", "required")
	} else if msg := badURL(c.URL); msg != "" {
		l.Add("url", "malformed sink URL %q: %s", redactURL(c.URL), msg)
	} else if u, _ := url.Parse(c.URL); u.Port() != "" {
		if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
			l.Add("url", "port must be from 1 to 65535, got %s", u.Port())
		}
	}
	l.OneOf("method", c.Method, http.MethodPost, http.MethodPut, http.MethodPatch)
	seen := map[int]string{}
	for _, list := range []struct {
		key   string
		codes []int
	}{{"successful_on", c.SuccessfulOn}, {"backoff_on", c.BackoffOn}, {"throttle_on", c.ThrottleOn}, {"drop_on", c.DropOn}} {
		for _, code := range list.codes {
			switch {
			case code < 100 || code > 599:
				l.Add(list.key, "%d is not an HTTP status", code)
			case seen[code] != "" && seen[code] != list.key:
				l.Add(list.key, "status %d is also in %s", code, seen[code])
			default:
				seen[code] = list.key
			}
		}
	}
	l.OneOf("format", c.Format, FormatJSON, FormatNDJSON)
	if a := c.BasicAuth; a != nil {
		switch {
		case a.Username == "":
			l.Add("basic_auth.username", "required")
		case strings.Contains(a.Username, ":"):
			l.Add("basic_auth.username", "must not contain ':'")
		}
	}
	auth := c.BasicAuth != nil || c.BearerToken != ""
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		path := field.Join("headers", name)
		ck := http.CanonicalHeaderKey(name)
		switch {
		case !validToken(name):
			l.Add(path, "invalid header name %q", name)
		case ck == "Authorization" && auth:
			l.Add(path, "conflicts with basic_auth or bearer_token")
		case !validHeaderValue(c.Headers[name]):
			l.Add(path, "value contains control characters")
		case slices.Contains(reservedHeaders, ck):
			l.Add(path, "set by the sink, cannot be configured")
		}
	}
	// Servers refuse large headers (nginx: 8 KiB a line, about 32 KiB in
	// all; others less) with 431 for every request, so say it here.
	total := len(c.BearerToken)
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		v := c.Headers[name]
		total += len(name) + len(v)
		if len(v) > maxHeaderValue {
			l.Add(field.Join("headers", name), "value of %d bytes; destinations refuse headers over %d bytes (431)", len(v), maxHeaderValue)
		}
	}
	if len(c.BearerToken) > maxHeaderValue {
		l.Add("bearer_token", "%d bytes; destinations refuse headers over %d bytes (431)", len(c.BearerToken), maxHeaderValue)
	}
	if total > maxHeaderTotal {
		l.Add("headers", "%d bytes of headers in all; destinations refuse more than %d (431)", total, maxHeaderTotal)
	}
	if !validHeaderValue(c.BearerToken) {
		l.Add("bearer_token", "contains control characters")
	}
	if c.BearerToken != "" && c.BasicAuth != nil && (c.BasicAuth.Username != "" || c.BasicAuth.Password != "") {
		l.Add("bearer_token", "conflicts with basic_auth")
	}
	if c.Timeout < 0 {
		l.Add("timeout", "must be positive, got %s", c.Timeout)
	}
	if c.MaxErrorBody < 0 {
		l.Add("max_error_body", "must not be negative, got %d", c.MaxErrorBody)
	}
	jsonenc.ValidateSettings(&l, c.ValueEncoding, c.BinaryValues, c.Tombstones)
	if r := c.Rejections; r != nil {
		switch {
		case r.Path == "":
			l.Add("rejections.path", "required")
		case slices.Contains(strings.Split(r.Path, "."), ""):
			l.Add("rejections.path", "%q has an empty segment; write names separated by single dots (\"errors.id\")", r.Path)
		}
		l.OneOf("rejections.match", r.Match, MatchIndex, MatchField, MatchKey)
		switch {
		case r.Match == MatchField && r.Field == "":
			l.Add("rejections.field", "required with match %s", MatchField)
		case r.Match != MatchField && r.Field != "":
			l.Add("rejections.field", "only with match %s", MatchField)
		}
	}
	return l.Err()
}

// badURL says what is wrong with a sink URL, or "". Its messages do not
// repeat the URL.
func badURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue.Error() repeats the URL, which may hold a password
		}
		return err.Error()
	}
	switch {
	case !strings.Contains(s, "://"):
		// "localhost:8080/ingest" parses with scheme "localhost".
		return fmt.Sprintf("scheme must be http or https, got none; did you mean %q?", redactURL("http://"+s))
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("scheme must be http or https, got %q", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return "missing host"
	}
	return ""
}

// redactURL is s with the password of its user information, if any,
// replaced by "xxxxx", as url.URL.Redacted does, also for a URL that does
// not parse.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		if _, has := u.User.Password(); has {
			return u.Redacted()
		}
		return s
	}
	_, rest, ok := strings.Cut(s, "://")
	if !ok {
		rest = s
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return s
	}
	colon := strings.Index(authority[:at], ":")
	if colon < 0 {
		return s
	}
	start := len(s) - len(rest) + colon + 1 // the password's offset in s
	return s[:start] + "xxxxx" + s[len(s)-len(rest)+at:]
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
