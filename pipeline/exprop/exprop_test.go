package exprop

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pipeline"
)

func rec(key, value string, headers ...string) pipeline.Record {
	r := pipeline.Record{
		Timestamp: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Origin:    pipeline.Origin{Topic: "orders", Partition: 3, Offset: 42},
	}
	if key != "" {
		r.Key = []byte(key)
	}
	if value != "" {
		r.Value = []byte(value)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Headers = append(r.Headers, pipeline.Header{Key: headers[i], Value: []byte(headers[i+1])})
	}
	return r
}

// errKind classifies an operator error for table tests.
type errKind int

const (
	noErr errKind = iota
	jsonErr
	exprErr
)

func checkErr(t *testing.T, err error, want errKind) {
	t.Helper()
	switch want {
	case noErr:
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
	case jsonErr:
		if !errors.Is(err, ErrInvalidJSON) {
			t.Fatalf("error = %v, want ErrInvalidJSON", err)
		}
	case exprErr:
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error = %v (%T), want *Error", err, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error spans several lines: %q", err)
		}
	}
}

func TestFilter(t *testing.T) {
	tests := []struct {
		name string
		src  string
		in   pipeline.Record
		keep bool
		err  errKind
	}{
		{"json field matches", "json.amount != 0", rec("", `{"amount":5}`), true, noErr},
		{"json field does not match", "json.amount != 0", rec("", `{"amount":0}`), false, noErr},
		{"nested json", `json.user.tier == "gold"`, rec("", `{"user":{"tier":"gold"}}`), true, noErr},
		{"json array", "len(json) == 2", rec("", `[1,2]`), true, noErr},
		{"invalid json", "json.amount > 1", rec("", `{"amount":`), false, jsonErr},
		{"not json at all", "json.amount > 1", rec("", `hello`), false, jsonErr},
		{"empty value needs json", "json == nil", rec("k", ""), false, jsonErr},
		{"empty value without json", `key == "k"`, rec("k", ""), true, noErr},
		{"invalid json ignored without json", `value startsWith "{"`, rec("", `{"amount":`), true, noErr},
		{"json null value", "json == nil", rec("", `null`), true, noErr},
		{"member of json null", "json.amount > 1", rec("", `null`), false, exprErr},
		{"optional chaining on null", "(json?.amount ?? 0) > 1", rec("", `null`), false, noErr},
		{"missing field is false", "json.flag", rec("", `{}`), false, noErr},
		{"large integer keeps precision", "json.id == 9007199254740993", rec("", `{"id":9007199254740993}`), true, noErr},
		{"integer modulo", "json.n % 2 == 1", rec("", `{"n":7}`), true, noErr},
		{"float and int compare", "json.x > 1", rec("", `{"x":1.5}`), true, noErr},
		{"trailing data", "json.x > 1", rec("", `{"x":2} {}`), false, jsonErr},
		{"number out of range", "json.x > 1", rec("", `{"x":1e999}`), false, jsonErr},
		{"string field is not bool", "json.flag", rec("", `{"flag":"yes"}`), false, exprErr},
		{"bool field", "json.flag", rec("", `{"flag":true}`), true, noErr},
		{"type mismatch at run time", "json.amount > 3", rec("", `{"amount":"x"}`), false, exprErr},
		{"runtime conversion error", "int(value) > 0", rec("", "abc"), false, exprErr},
		{"invalid utf-8 value", `len(value) == 3 && value != "abc"`, rec("", "a\xffc"), true, noErr},
		{"invalid utf-8 inside json string", `json.s == "a\uFFFDc"`, rec("", "{\"s\":\"a\xffc\"}"), true, noErr},
		{"invalid utf-8 key", `key endsWith "z"`, rec("\xfe\xffz", "v"), true, noErr},
		{"header", `headers["type"] == "order"`, rec("", "", "type", "x", "type", "order"), true, noErr},
		{"missing header", `headers["type"] == ""`, rec("", ""), true, noErr},
		{"origin", `topic == "orders" && partition == 3 && offset == 42`, rec("", ""), true, noErr},
		{"timestamp", `timestamp.Year() == 2025 && timestamp < now()`, rec("", ""), true, noErr},
		{"$env member reads only value", `$env["value"] == "x"`, rec("", "x"), true, noErr},
		{"$env json", `$env.json.a == 1`, rec("", `{"a":1}`), true, noErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, err := Filter(tt.src)
			if err != nil {
				t.Fatalf("Filter(%q): %v", tt.src, err)
			}
			out, err := op(context.Background(), tt.in)
			checkErr(t, err, tt.err)
			if got := len(out) == 1; got != tt.keep {
				t.Errorf("kept = %v, want %v", got, tt.keep)
			}
			if len(out) > 1 {
				t.Errorf("filter returned %d records", len(out))
			}
		})
	}
}

// TestNonObjectValueNamed: a field of a value that is not a JSON object
// fails with a message saying what the value is.
func TestNonObjectValueNamed(t *testing.T) {
	op, err := Filter("json.id >= 0")
	if err != nil {
		t.Fatal(err)
	}
	for in, kind := range map[string]string{`"10009"`: "JSON string", `[{"id":1}]`: "JSON array", `7`: "JSON number", `true`: "JSON boolean"} {
		_, err := op(context.Background(), rec("", in))
		if err == nil || !strings.Contains(err.Error(), "the record's value is a "+kind+", not an object") {
			t.Errorf("value %s: error %v, want it to name a %s", in, err, kind)
		}
	}
	if _, err := op(context.Background(), rec("", `{"id":"x"}`)); err == nil || strings.Contains(err.Error(), "not an object") {
		t.Errorf("object value: error %v, want a type error that does not blame the value's kind", err)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, src string
		filter    bool
		col       int
		msg       string
	}{
		{"syntax", "json.amount >", true, 13, "unexpected token EOF"},
		{"unknown variable", "amount > 1", true, 1, "unknown name amount"},
		{"string filter", `"yes"`, true, 0, "expected bool"},
		{"string plus int", "key + 1", false, 5, "mismatched types string and int"},
		{"unclosed call", "len(", false, 4, "unexpected token EOF"},
		{"empty", "", false, 0, "empty expression"},
		{"no such method", "timestamp.Foo()", false, 0, "Foo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.filter {
				_, err = Filter(tt.src)
			} else {
				err = Check(tt.src)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error = %v, want *Error", err)
			}
			if !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("Msg = %q, want it to contain %q", e.Msg, tt.msg)
			}
			if tt.col != 0 && e.Column != tt.col {
				t.Errorf("Column = %d, want %d", e.Column, tt.col)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
	if err := Check(`json.a + 1`); err != nil {
		t.Errorf("Check of a valid expression: %v", err)
	}
}

func TestMap(t *testing.T) {
	type hdrs = map[string]string
	tests := []struct {
		name       string
		key, value string
		headers    hdrs
		in         pipeline.Record
		wantKey    string
		wantValue  string
		wantHdrs   []string // key, value pairs in order
		err        errKind
	}{
		{name: "value from json string", value: "json.name", in: rec("k", `{"name":"ann"}`),
			wantKey: "k", wantValue: "ann"},
		{name: "float result", value: "json.x / 2", in: rec("", `{"x":3}`), wantValue: "1.5"},
		{name: "large id", key: "json.id", in: rec("", `{"id":9007199254740993}`), wantKey: "9007199254740993", wantValue: `{"id":9007199254740993}`},
		{name: "key from json number", key: "json.id", in: rec("k", `{"id":7}`),
			wantKey: "7", wantValue: `{"id":7}`},
		{name: "map result is JSON", value: `{"id": json.id, "b": key}`, in: rec("k", `{"id":7}`),
			wantKey: "k", wantValue: `{"b":"k","id":7}`},
		{name: "nil result is null", value: "json.missing", in: rec("k", `{}`),
			wantKey: "k", wantValue: "null"},
		{name: "bool result", value: "json.id > 1", in: rec("", `{"id":7}`), wantValue: "true"},
		{name: "array result", value: "map(json, # * 2)", in: rec("", `[1,2]`), wantValue: "[2,4]"},
		{name: "string concatenation", key: `topic + "-" + string(partition)`, in: rec("", "v"),
			wantKey: "orders-3", wantValue: "v"},
		{name: "header added, others kept", headers: hdrs{"x-b": `"2"`, "x-a": `key`},
			in: rec("k", "v", "keep", "1"), wantKey: "k", wantValue: "v",
			wantHdrs: []string{"keep", "1", "x-a", "k", "x-b", "2"}},
		{name: "header replaced", headers: hdrs{"type": `upper(headers.type)`},
			in: rec("", "v", "type", "a", "other", "o", "type", "b"), wantValue: "v",
			wantHdrs: []string{"other", "o", "type", "B"}},
		{name: "expressions read the input", key: "value", value: "key", in: rec("k", "v"),
			wantKey: "v", wantValue: "k"},
		{name: "invalid utf-8 passes through", value: `value + "!"`, in: rec("", "\xff\xfe"),
			wantValue: "\xff\xfe!"},
		{name: "json null value", value: `json ?? "was null"`, in: rec("", "null"), wantValue: "was null"},
		{name: "invalid json", value: "json.name", in: rec("", "{"), err: jsonErr},
		{name: "empty value with json", value: "json.name", in: rec("k", ""), err: jsonErr},
		{name: "invalid json in header expression", headers: hdrs{"n": "json.name"}, in: rec("", "nope"), err: jsonErr},
		{name: "runtime error", key: "json.a.b", in: rec("", `{"a":null}`), err: exprErr},
		{name: "runtime error in header", headers: hdrs{"n": "int(value)"}, in: rec("", "x"), err: exprErr},
		{name: "unencodable result", value: "json.n / 0", in: rec("", `{"n":0}`), err: exprErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, err := Map(tt.key, tt.value, tt.headers)
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			out, err := op(context.Background(), tt.in)
			checkErr(t, err, tt.err)
			if tt.err != noErr {
				if len(out) != 0 {
					t.Errorf("got %d records with an error", len(out))
				}
				return
			}
			if len(out) != 1 {
				t.Fatalf("got %d records, want 1", len(out))
			}
			got := out[0]
			if string(got.Key) != tt.wantKey || string(got.Value) != tt.wantValue {
				t.Errorf("got key %q value %q, want %q %q", got.Key, got.Value, tt.wantKey, tt.wantValue)
			}
			var gotHdrs []string
			for _, h := range got.Headers {
				gotHdrs = append(gotHdrs, h.Key, string(h.Value))
			}
			if strings.Join(gotHdrs, "|") != strings.Join(tt.wantHdrs, "|") {
				t.Errorf("headers = %q, want %q", gotHdrs, tt.wantHdrs)
			}
			if got.Origin != tt.in.Origin || !got.Timestamp.Equal(tt.in.Timestamp) {
				t.Errorf("origin or timestamp changed: %+v %v", got.Origin, got.Timestamp)
			}
		})
	}
}

func TestMapCompileErrors(t *testing.T) {
	tests := []struct {
		name       string
		key, value string
		headers    map[string]string
		want       string
	}{
		{"nothing to do", "", "", nil, "no key, value or header"},
		{"bad key", "json.", "", nil, "map key"},
		{"bad value", "", "nope", nil, "map value"},
		{"bad header", "", "", map[string]string{"h": "1 +"}, `map header "h"`},
		{"empty header name", "", "", map[string]string{"": `"x"`}, "empty header name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Map(tt.key, tt.value, tt.headers)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestMapCopies checks that neither the operator nor a later stage that
// appends to or edits the output can reach the input's arrays.
func TestMapCopies(t *testing.T) {
	for _, tt := range []struct {
		name       string
		key, value string
		headers    map[string]string
	}{
		{"headers only", "", "", map[string]string{"h": `"new"`}},
		{"key and value", `key + "!"`, `value + "!"`, nil},
		{"value only", "", `"v2"`, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := make([]byte, 1, 16)
			key[0] = 'k'
			val := make([]byte, 1, 16)
			val[0] = 'v'
			hs := make([]pipeline.Header, 1, 8)
			hs[0] = pipeline.Header{Key: "a", Value: []byte("1")}
			in := pipeline.Record{Key: key, Value: val, Headers: hs}

			op, err := Map(tt.key, tt.value, tt.headers)
			if err != nil {
				t.Fatal(err)
			}
			out, err := op(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			o := out[0]
			_ = append(o.Key, 'X')
			_ = append(o.Value, 'X')
			_ = append(o.Headers, pipeline.Header{Key: "X"})
			o.Headers[0] = pipeline.Header{Key: "changed"}

			if string(key[:cap(key)][:2]) != "k\x00" || string(val[:cap(val)][:2]) != "v\x00" {
				t.Errorf("input arrays changed: key %q value %q", key[:2], val[:2])
			}
			if hs[:2][1].Key != "" || hs[0].Key != "a" {
				t.Errorf("input headers changed: %+v", hs[:2])
			}
			if string(in.Key) != "k" || string(in.Value) != "v" || len(in.Headers) != 1 {
				t.Errorf("input record changed: %+v", in)
			}
		})
	}
}

func TestScan(t *testing.T) {
	tests := []struct {
		src  string
		want uses
	}{
		{`topic == "a"`, uses{}},
		{`key == "a"`, uses{key: true}},
		{`json.a == 1 && value != ""`, uses{value: true, json: true}},
		{`headers.x == "1"`, uses{headers: true}},
		{`$env.key == "a"`, uses{key: true}},
		{`len($env) > 0`, uses{true, true, true, true}},
		{`false && json.a == 1`, uses{}}, // folded away by the optimizer
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := compile(tt.src)
			if err != nil {
				t.Fatal(err)
			}
			if p.uses != tt.want {
				t.Errorf("uses = %+v, want %+v", p.uses, tt.want)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	filter, err := Filter(`json.n % 2 == 0`)
	if err != nil {
		t.Fatal(err)
	}
	mapper, err := Map("", `json.n * 10`, map[string]string{"n": "string(json.n)"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				n := g*1000 + i
				r := rec("", `{"n":`+itoa(n)+`}`)
				out, err := filter(context.Background(), r)
				if err != nil || (len(out) == 1) != (n%2 == 0) {
					t.Errorf("filter %d: %v %d", n, err, len(out))
					return
				}
				out, err = mapper(context.Background(), r)
				if err != nil || string(out[0].Value) != itoa(n*10) {
					t.Errorf("map %d: %v %v", n, err, out)
					return
				}
			}
		})
	}
	wg.Wait()
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func BenchmarkFilter(b *testing.B) {
	op, err := Filter(`json.amount > 10 && json.currency == "EUR"`)
	if err != nil {
		b.Fatal(err)
	}
	r := rec("order-1", `{"id":"o-1","amount":42.5,"currency":"EUR","items":3}`)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if out, err := op(ctx, r); err != nil || len(out) != 1 {
			b.Fatal(out, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func FuzzOperators(f *testing.F) {
	for _, v := range []string{`{"a":1}`, `null`, `[1,"x",{"a":[]}]`, "{\"a\":\"\xff\"}", `1e999`, ``, `{"a":1}{`} {
		f.Add([]byte(v))
	}
	filter, err := Filter(`json?.a == 1 || len(value) > 3`)
	if err != nil {
		f.Fatal(err)
	}
	mapper, err := Map(`json?.a`, `json`, map[string]string{"v": "value"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		r := pipeline.Record{Value: v}
		for _, op := range []pipeline.Operator{filter, mapper} {
			out, err := op(context.Background(), r)
			if err != nil && len(out) > 0 {
				t.Fatalf("records and an error: %v", err)
			}
		}
	})
}

func TestCompileEval(t *testing.T) {
	e, err := Compile(`"orders." + json.region`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.Eval(pipeline.Record{Value: []byte(`{"region":"eu"}`)})
	if err != nil || got != "orders.eu" {
		t.Fatalf("Eval = %v, %v; want orders.eu", got, err)
	}
	if _, err := e.Eval(pipeline.Record{Value: []byte(`oops`)}); !errors.Is(err, ErrInvalidJSON) {
		t.Fatalf("Eval of invalid JSON = %v, want ErrInvalidJSON", err)
	}
	if e.String() != `"orders." + json.region` {
		t.Fatalf("String = %q", e.String())
	}
	_, err = Compile(`json.a +`)
	if msg := Explain(err); !strings.HasPrefix(msg, "invalid expression: ") {
		t.Fatalf("Explain = %q", msg)
	}
	if _, err := Compile(""); Explain(err) != "expression is empty" {
		t.Fatalf("Explain(empty) = %q", Explain(err))
	}
}
