package pgtest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// ender records how DSN ends a test, standing in for *testing.T.
type ender struct {
	testing.TB
	how, msg string
}

func (e *ender) Helper() {}

func (e *ender) Skip(args ...any) { e.end("skip", fmt.Sprint(args...)) }

func (e *ender) Fatalf(format string, args ...any) { e.end("fail", fmt.Sprintf(format, args...)) }

func (e *ender) end(how, msg string) {
	e.how, e.msg = how, msg
	runtime.Goexit()
}

// dsnOf calls DSN on an ender in a goroutine (Skip and Fatalf end it).
func dsnOf() (dsn string, e *ender) {
	e = &ender{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		dsn = DSN(e)
	}()
	<-done
	return dsn, e
}

func TestDSN(t *testing.T) {
	for _, tc := range []struct {
		dsn, require, want, how string
	}{
		{dsn: "postgres://u:p@127.0.0.1:1/db", want: "postgres://u:p@127.0.0.1:1/db"},
		{dsn: "postgres://u:p@127.0.0.1:1/db", require: "1", want: "postgres://u:p@127.0.0.1:1/db"},
		{how: "skip"},
		{require: "1", how: "fail"},
		{require: "0", how: "skip"},
	} {
		t.Run(fmt.Sprintf("dsn=%q,require=%q", tc.dsn, tc.require), func(t *testing.T) {
			t.Setenv(EnvDSN, tc.dsn)
			t.Setenv(EnvRequire, tc.require)
			got, e := dsnOf()
			if e.how != tc.how || got != tc.want {
				t.Fatalf("DSN = %q and ended with %q (%s), want %q and %q", got, e.how, e.msg, tc.want, tc.how)
			}
			if e.how != "" && !strings.Contains(e.msg, EnvDSN) {
				t.Errorf("message %q does not name %s", e.msg, EnvDSN)
			}
		})
	}
}
