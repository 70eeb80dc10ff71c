// Package field is how a component's Config reports what is wrong with it:
// each problem is an *Error naming the setting by its key path relative to
// the component ("max_batch_size", "tls.ca_file"), and the config loader
// re-roots the path under the component's place in the pipeline file
// ("sink.writer.max_batch_size") and adds the file and line.
//
// Every component Config follows the same convention: zero values mean the
// default documented on the field; ApplyDefaults (pointer receiver,
// idempotent) fills them in; Validate (value receiver) works on a defaulted
// copy and returns every problem joined with errors.Join, each an *Error.
package field

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Error is one invalid setting.
type Error struct {
	Path string // key path relative to the component; empty for the component itself
	Msg  string // lower case, no trailing punctuation
}

// Error reads "path: msg", or msg when Path is empty.
func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errorf returns an *Error at path.
func Errorf(path, format string, args ...any) *Error {
	return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Join returns the path of key inside p ("" + "a" = "a", "a" + "b" = "a.b").
func Join(p, key string) string {
	if p == "" {
		return key
	}
	if key == "" {
		return p
	}
	if strings.HasPrefix(key, "[") {
		return p + key
	}
	return p + "." + key
}

// List collects errors for Validate. The zero value is empty and ready.
// Not safe for concurrent use.
type List struct {
	errs []error
}

// Add records an *Error at path.
func (l *List) Add(path, format string, args ...any) {
	l.errs = append(l.errs, Errorf(path, format, args...))
}

// Merge records every error of err (a join of *Error, as Validate returns)
// under prefix. Errors that are not *Error are recorded at prefix.
func (l *List) Merge(prefix string, err error) {
	for _, e := range Split(err) {
		var fe *Error
		if errors.As(e, &fe) {
			l.errs = append(l.errs, &Error{Path: Join(prefix, fe.Path), Msg: fe.Msg})
		} else {
			l.errs = append(l.errs, &Error{Path: prefix, Msg: e.Error()})
		}
	}
}

// Err returns the recorded errors joined with errors.Join, or nil.
func (l *List) Err() error { return errors.Join(l.errs...) }

// Len is the number of recorded errors.
func (l *List) Len() int { return len(l.errs) }

// Positive records "must be positive" when n <= 0.
func (l *List) Positive(path string, n int) {
	if n <= 0 {
		l.Add(path, "must be positive, got %d", n)
	}
}

// PositiveDur records "must be positive" when d <= 0.
func (l *List) PositiveDur(path string, d time.Duration) {
	if d <= 0 {
		l.Add(path, "must be positive, got %s", d)
	}
}

// OneOf records an error when got is none of allowed.
func (l *List) OneOf(path, got string, allowed ...string) {
	for _, a := range allowed {
		if got == a {
			return
		}
	}
	l.Add(path, "must be %s, got %q", OrList(allowed), got)
}

// Required records "required" when s is empty or blank.
func (l *List) Required(path, s string) {
	if strings.TrimSpace(s) == "" {
		l.Add(path, "required")
	}
}

// Split returns the errors joined in err (errors.Join), or err alone.
func Split(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Split(e)...)
		}
		return out
	}
	return []error{err}
}

// OrList quotes s and joins it as `"a", "b" or "c"`.
func OrList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
