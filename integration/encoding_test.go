package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/deadletter"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
)

// elementReceiver keeps every element of every request body as sent, and
// the bodies that were not valid UTF-8 JSON arrays.
type elementReceiver struct {
	srv *httptest.Server

	mu    sync.Mutex
	elems []json.RawMessage
	bad   []string
}

func newElementReceiver(t *testing.T) *elementReceiver {
	rc := &elementReceiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		var elems []json.RawMessage
		err = json.Unmarshal(body, &elems)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		switch {
		case err != nil:
			rc.bad = append(rc.bad, fmt.Sprintf("%v: %.200q", err, body))
		case !utf8.Valid(body):
			rc.bad = append(rc.bad, fmt.Sprintf("not UTF-8: %.200q", body))
		default:
			for _, e := range elems {
				rc.elems = append(rc.elems, bytes.Clone(e))
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// endToEnd produces recs (in this order, one partition) into a new topic,
// runs Kafka → HTTP (errors.tolerance all, a dead-letter topic) with the
// sink config changed by mod until every offset is committed, and returns
// the elements the receiver got and the dead letters.
func endToEnd(t *testing.T, c *cluster, recs []*kgo.Record, mod func(*sinkhttp.Config)) ([]json.RawMessage, []*kgo.Record) {
	t.Helper()
	topic, group, dlq := name(t, "topic"), name(t, "group"), name(t, "dlq")
	c.createTopic(t, topic, 1)
	c.createTopic(t, dlq, 1)
	for _, r := range recs {
		r.Topic = topic
	}
	pcl, err := kgo.NewClient(c.clientOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
	err = pcl.ProduceSync(pctx, recs...).FirstErr()
	pcancel()
	pcl.Close()
	if err != nil {
		t.Fatalf("produce: %v", err)
	}

	rc := newElementReceiver(t)
	cfg := kafkaToHTTP(c, topic, group, rc.srv.URL+"/ingest")
	mod(httpSink(cfg))
	cfg.Sink.Writer.MaxBatchSize = 7 // several batches, each mixing bad records with good ones
	cfg.Errors.Tolerance = "all"
	cfg.Errors.Topic = dlq
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the test's own config is invalid: %v", err)
	}
	j, stop := startJob(t, cfg)
	waitFor(t, "every offset committed", 2*time.Minute, func() bool {
		if j.Health().Status == "stopped" {
			t.Fatalf("job stopped on its own: %v", stop())
		}
		ok, _ := c.committedEqualsEnd(t, group, topic)
		return ok
	})
	if err := stop(); err != nil {
		t.Fatalf("job: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ends, err := c.admin(t).ListEndOffsets(ctx, dlq)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	var dead []*kgo.Record
	if n > 0 {
		dead = c.readTopic(t, dlq, int(n))
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, b := range rc.bad {
		t.Errorf("receiver got a body that is not a UTF-8 JSON array: %s", b)
	}
	return rc.elems, dead
}

// TestValueEncodingEndToEnd (issue 10, finding 2): binary values, JSON
// with a raw 0xff inside a string, an empty value and a tombstone go
// through a pipeline to an HTTP receiver among valid records. Checked from
// outside: what the receiver got, decoded, equals the produced bytes (no
// byte replaced); the empty value and the tombstone arrive distinguishable;
// what cannot be encoded is in the dead-letter topic, alone, with the
// reason and its bytes intact; every offset is committed.
func TestValueEncodingEndToEnd(t *testing.T) {
	var (
		binary = []byte{0xff, 0xfe, 0x00, 0x01, 0xc3}
		rawFF  = []byte("{\"id\":\"x\",\"name\":\"caf\xff\"}")
		text   = []byte("plain text, é and \"quotes\"")
		obj    = []byte(`{"id":"obj","n":[1,2]}`)
		empty  = []byte{}
	)
	// The special records, by key; mkRecs spreads them among 30 good ones.
	special := []struct {
		key   string
		value []byte
	}{{"binary", binary}, {"raw-ff", rawFF}, {"text", text}, {"json", obj}, {"empty", empty}, {"tombstone", nil}}
	mkRecs := func() []*kgo.Record {
		var out []*kgo.Record
		for i := range 30 {
			out = append(out, &kgo.Record{Key: fmt.Appendf(nil, "good-%d", i), Value: fmt.Appendf(nil, `{"id":%d}`, i)})
			if i%5 == 2 {
				s := special[(i/5)%len(special)]
				out = append(out, &kgo.Record{Key: []byte(s.key), Value: s.value})
			}
		}
		return out
	}
	c := newCluster(t, 1)

	// outcome is what the receiver got, as decode turns elements back
	// into record values, and the dead letters by key.
	type outcome struct {
		delivered map[string]int // string(value) → times; "\x00nil" for a tombstone
		dead      map[string]*kgo.Record
	}
	const nilMark = "\x00nil"
	check := func(t *testing.T, elems []json.RawMessage, dead []*kgo.Record, decode func(json.RawMessage) ([]byte, bool)) outcome {
		t.Helper()
		o := outcome{delivered: map[string]int{}, dead: map[string]*kgo.Record{}}
		for _, e := range elems {
			if bytes.Contains(e, []byte(`\ufffd`)) || bytes.Contains(e, []byte("\uFFFD")) {
				t.Errorf("element %q holds a replacement character", e)
			}
			v, isNil := decode(e)
			if isNil {
				o.delivered[nilMark]++
				continue
			}
			o.delivered[string(v)]++
		}
		for _, d := range dead {
			o.dead[string(d.Key)] = d
		}
		for i := range 30 {
			if n := o.delivered[fmt.Sprintf(`{"id":%d}`, i)]; n != 1 {
				t.Errorf("good record %d delivered %d times", i, n)
			}
		}
		return o
	}
	rawOrString := func(e json.RawMessage) ([]byte, bool) {
		switch {
		case string(e) == "null":
			return nil, true
		case e[0] == '"':
			var s string
			if err := json.Unmarshal(e, &s); err != nil {
				t.Fatal(err)
			}
			return []byte(s), false
		}
		var wrapped struct {
			B64 *string `json:"$base64"`
		}
		if json.Unmarshal(e, &wrapped) == nil && wrapped.B64 != nil {
			v, err := base64.StdEncoding.DecodeString(*wrapped.B64)
			if err != nil {
				t.Fatalf("element %s: %v", e, err)
			}
			return v, false
		}
		return e, false
	}

	t.Run("auto-binary-dead-lettered", func(t *testing.T) {
		elems, dead := endToEnd(t, c, mkRecs(), func(*sinkhttp.Config) {})
		o := check(t, elems, dead, rawOrString)
		for _, v := range [][]byte{text, obj, empty} {
			if n := o.delivered[string(v)]; n != 1 {
				t.Errorf("value %q delivered %d times, want once, byte for byte", v, n)
			}
		}
		if n := o.delivered[nilMark]; n != 1 {
			t.Errorf("tombstone delivered as null %d times, want 1", n)
		}
		if len(dead) != 2 {
			t.Fatalf("%d dead letters, want 2 (binary, raw-ff): %v", len(dead), keysOf(dead))
		}
		for key, want := range map[string]struct {
			value []byte
			msg   string
		}{
			"binary": {binary, "value is not valid UTF-8: byte 0xff at offset 0; set sink.http.value_encoding: base64, or sink.http.binary_values: base64"},
			"raw-ff": {rawFF, "JSON value is not valid UTF-8: byte 0xff at offset 21"},
		} {
			d := o.dead[key]
			if d == nil {
				t.Errorf("%s not dead-lettered", key)
				continue
			}
			if !bytes.Equal(d.Value, want.value) {
				t.Errorf("%s dead-lettered as %q, want the bytes intact %q", key, d.Value, want.value)
			}
			if cl := header(d, deadletter.HeaderClass); cl != "fatal" {
				t.Errorf("%s: class %q, want fatal", key, cl)
			}
			if m := header(d, deadletter.HeaderMessage); !strings.Contains(m, want.msg) {
				t.Errorf("%s: message %q, want it to contain %q", key, m, want.msg)
			}
			if h := header(d, "spillway.http.error"); h != "value_encoding" {
				t.Errorf("%s: spillway.http.error %q, want value_encoding", key, h)
			}
			if a := header(d, deadletter.HeaderAttempts); a != "1" {
				t.Errorf("%s: attempts %q, want 1", key, a)
			}
		}
	})

	t.Run("auto-binary-base64", func(t *testing.T) {
		elems, dead := endToEnd(t, c, mkRecs(), func(h *sinkhttp.Config) { h.BinaryValues = "base64" })
		o := check(t, elems, dead, rawOrString)
		for _, v := range [][]byte{binary, rawFF, text, obj, empty} {
			if n := o.delivered[string(v)]; n != 1 {
				t.Errorf("value %q delivered %d times, want once, byte for byte", v, n)
			}
		}
		if n := o.delivered[nilMark]; n != 1 {
			t.Errorf("tombstone delivered as null %d times, want 1", n)
		}
		if len(dead) != 0 {
			t.Errorf("dead letters %v, want none", keysOf(dead))
		}
	})

	t.Run("base64-tombstones-dropped", func(t *testing.T) {
		elems, dead := endToEnd(t, c, mkRecs(), func(h *sinkhttp.Config) {
			h.ValueEncoding, h.Tombstones = "base64", "drop"
		})
		o := check(t, elems, dead, func(e json.RawMessage) ([]byte, bool) {
			var s *string
			if err := json.Unmarshal(e, &s); err != nil || s == nil {
				t.Fatalf("element %s is not a base64 string", e)
			}
			v, err := base64.StdEncoding.DecodeString(*s)
			if err != nil {
				t.Fatalf("element %s: %v", e, err)
			}
			return v, false
		})
		for _, v := range [][]byte{binary, rawFF, text, obj, empty} {
			if n := o.delivered[string(v)]; n != 1 {
				t.Errorf("value %q delivered %d times, want once, byte for byte", v, n)
			}
		}
		if len(elems) != 35 {
			t.Errorf("%d elements, want 35 (the tombstone dropped)", len(elems))
		}
		if len(dead) != 0 {
			t.Errorf("dead letters %v, want none", keysOf(dead))
		}
	})
}

func keysOf(recs []*kgo.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, string(r.Key))
	}
	return out
}
