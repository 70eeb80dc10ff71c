package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
)

var errBoom = errors.New("boom")

func values(rs []pipeline.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r.Value)
	}
	return out
}

func upper() pipeline.Operator {
	return pipeline.Map(func(r pipeline.Record) (pipeline.Record, error) {
		r.Value = []byte(strings.ToUpper(string(r.Value)))
		return r, nil
	})
}

// split emits one record per comma-separated part of the value.
func split() pipeline.Operator {
	return pipeline.FlatMap(func(r pipeline.Record) ([]pipeline.Record, error) {
		var out []pipeline.Record
		for _, part := range strings.Split(string(r.Value), ",") {
			if part == "" {
				continue
			}
			c := r
			c.Value = []byte(part)
			out = append(out, c)
		}
		return out, nil
	})
}

func keep(prefix string) pipeline.Operator {
	return pipeline.Filter(func(r pipeline.Record) (bool, error) {
		return strings.HasPrefix(string(r.Value), prefix), nil
	})
}

func failOn(value string) pipeline.Operator {
	return pipeline.Map(func(r pipeline.Record) (pipeline.Record, error) {
		if string(r.Value) == value {
			return r, errBoom
		}
		return r, nil
	})
}

func TestChainApply(t *testing.T) {
	cases := []struct {
		name     string
		chain    pipeline.Chain
		in       string
		want     []string
		wantAck  bool // parent acknowledged by Apply itself (dropped)
		wantErr  string
		wantName string
	}{
		{name: "zero chain passes through", in: "a", want: []string{"a"}},
		{name: "map", chain: pipeline.Chain{{"upper", upper()}}, in: "a", want: []string{"A"}},
		{name: "filter keeps", chain: pipeline.Chain{{"keep", keep("a")}}, in: "ab", want: []string{"ab"}},
		{name: "filter drops and acks", chain: pipeline.Chain{{"keep", keep("x")}}, in: "ab", want: []string{}, wantAck: true},
		{name: "flat map fans out", chain: pipeline.Chain{{"split", split()}}, in: "a,b,c", want: []string{"a", "b", "c"}},
		{name: "flat map to nothing acks", chain: pipeline.Chain{{"split", split()}}, in: ",,", want: []string{}, wantAck: true},
		{
			name:  "fan out then filter then map",
			chain: pipeline.Chain{{"split", split()}, {"keep", keep("x")}, {"upper", upper()}},
			in:    "xa,yb,xc", want: []string{"XA", "XC"},
		},
		{
			name:  "fan out twice",
			chain: pipeline.Chain{{"split", split()}, {"", split()}},
			in:    "a,b", want: []string{"a", "b"},
		},
		{
			name:  "filter after fan out drops all",
			chain: pipeline.Chain{{"split", split()}, {"keep", keep("z")}, {"upper", upper()}},
			in:    "a,b", want: []string{}, wantAck: true,
		},
		{
			name:    "error names the operator",
			chain:   pipeline.Chain{{"upper", upper()}, {"check", failOn("A")}},
			in:      "a",
			wantErr: "operator check: boom", wantName: "check",
		},
		{
			name:    "error in unnamed operator",
			chain:   pipeline.Chain{{"split", split()}, {"", failOn("b")}},
			in:      "a,b,c",
			wantErr: "operator op[1]: boom", wantName: "op[1]",
		},
		{
			name: "filter error",
			chain: pipeline.Chain{{"f", pipeline.Filter(func(pipeline.Record) (bool, error) {
				return false, errBoom
			})}},
			in:      "a",
			wantErr: "operator f: boom", wantName: "f",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCounter()
			out, err := tc.chain.Apply(context.Background(), rec(c, 42, tc.in))
			if tc.wantErr != "" {
				var oe *pipeline.OperatorError
				if !errors.As(err, &oe) {
					t.Fatalf("error %v is not an *OperatorError", err)
				}
				if oe.Operator != tc.wantName || err.Error() != tc.wantErr || !errors.Is(err, errBoom) {
					t.Fatalf("error = %q (operator %q), want %q", err, oe.Operator, tc.wantErr)
				}
				if out != nil {
					t.Fatalf("output %v returned with an error", values(out))
				}
				c.exactlyOnce(t) // the caller owns the input's acknowledgement
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := values(out); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("output = %q, want %q", got, tc.want)
			}
			if tc.wantAck {
				c.exactlyOnce(t, 42)
				return
			}
			for i, r := range out {
				if c.count(42) != 0 {
					t.Fatalf("parent acknowledged after %d of %d children", i, len(out))
				}
				if r.Origin.Offset != 42 {
					t.Errorf("child %d has origin offset %d", i, r.Origin.Offset)
				}
				r.Ack()
			}
			c.exactlyOnce(t, 42)
		})
	}
}
