package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
)

// rejected handles a fatal answer to a request carrying batch when the
// sink reads rejections (Config.Rejections): a *sinks.BatchError naming
// the refused records as fatal and every other record as sinks.Resend
// when the body names records of the request and nothing else, the fatal
// error of the whole request otherwise.
func (s *Sink) rejected(resp *http.Response, batch []pipeline.Record) error {
	raw, rerr := io.ReadAll(io.LimitReader(resp.Body, maxPartialBody+1))
	whole := s.excerptError(resp, bound(string(raw[:min(len(raw), s.maxErrBody)]), s.maxErrBody), nil)
	if rerr != nil || len(raw) > maxPartialBody {
		return sinks.AsFatal(whole)
	}
	refused, err := s.rejections.find(raw, batch)
	if err != nil {
		whole.Err = fmt.Errorf("%w (rejections.path %s: %w)", whole.Err, s.rejections.Path, err)
		return sinks.AsFatal(whole)
	}
	excerpt := whole.Details["http.body"]
	resend := sinks.AsResend(fmt.Errorf("%s %s: %s: not delivered: the receiver refused the request for %d other records, sent again without them",
		s.method, s.display, resp.Status, len(refused)))
	be := &sinks.BatchError{Failed: make([]sinks.EntryError, len(batch))}
	for i := range batch {
		be.Failed[i] = sinks.EntryError{Index: i, Err: resend}
		named, ok := refused[i]
		if !ok {
			continue
		}
		msg := fmt.Sprintf("%s %s: %s: refused by the receiver (%s names %s)", s.method, s.display, resp.Status, s.rejections.Path, named)
		if short := oneLine(excerpt, 200); short != "" {
			msg += ": " + short
		}
		be.Failed[i].Err = sinks.AsFatal(&sinks.DetailedError{Err: errors.New(msg), Details: map[string]string{
			"http.status": strconv.Itoa(resp.StatusCode),
			"http.body":   excerpt,
		}})
	}
	return be
}

// find reads the records of batch named by body, a JSON answer: for each,
// how the answer named it ("index 3", `id "17"`, `key "k1"`). It fails when
// the list is missing or empty, or names something that is not a record of
// batch: the answer cannot then be trusted to say which records are bad.
func (r *Rejections) find(body []byte, batch []pipeline.Record) (map[int]string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("body is not JSON: %w", err)
	}
	var vals []string
	if err := collect(doc, strings.Split(r.Path, "."), &vals); err != nil {
		return nil, err
	}
	if len(vals) == 0 {
		return nil, errors.New("no entries")
	}
	refused := make(map[int]string, len(vals))
	switch r.Match {
	case MatchIndex:
		for _, v := range vals {
			i, err := strconv.Atoi(v)
			if err != nil || i < 0 || i >= len(batch) {
				return nil, fmt.Errorf("%q is not an index of the batch of %d", v, len(batch))
			}
			refused[i] = "index " + v
		}
		return refused, nil
	}
	// field or key: each value names every record that has it.
	byName := make(map[string][]int, len(batch))
	for i := range batch {
		var name string
		var ok bool
		if r.Match == MatchKey {
			name, ok = string(batch[i].Key), batch[i].Key != nil
		} else {
			name, ok = topField(batch[i].Value, r.Field)
		}
		if ok {
			byName[name] = append(byName[name], i)
		}
	}
	what := r.Match
	if r.Match == MatchField {
		what = r.Field
	}
	for _, v := range vals {
		idx, ok := byName[v]
		if !ok {
			return nil, fmt.Errorf("no record of the batch has %s %q", what, v)
		}
		for _, i := range idx {
			refused[i] = fmt.Sprintf("%s %q", what, v)
		}
	}
	return refused, nil
}

// collect appends to out the scalars at path in v, as text: a string's
// contents, a number as written. Through an array the rest of the path
// applies to each element; an array at the end contributes its elements.
func collect(v any, path []string, out *[]string) error {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			if err := collect(e, path, out); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		if len(path) == 0 {
			return errors.New("an entry is an object, not a number or a string")
		}
		e, ok := v[path[0]]
		if !ok {
			return fmt.Errorf("no %q in the answer", path[0])
		}
		return collect(e, path[1:], out)
	case string:
		if len(path) > 0 {
			return fmt.Errorf("%q is a string, not an object", path[0])
		}
		*out = append(*out, v)
	case json.Number:
		if len(path) > 0 {
			return fmt.Errorf("%q is a number, not an object", path[0])
		}
		*out = append(*out, v.String())
	default:
		return fmt.Errorf("an entry is %v, not a number or a string", v)
	}
	return nil
}

// topField returns the top-level field name of value, a JSON object, as
// text (a string's contents, a number as written), and whether it has one.
func topField(value []byte, name string) (string, bool) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(value, &obj) != nil {
		return "", false
	}
	raw, ok := obj[name]
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String(), true
	}
	return "", false
}
