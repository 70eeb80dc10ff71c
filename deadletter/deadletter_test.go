package deadletter_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/spillway-io/spillway/deadletter"
	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/pipeline"
)

func TestConfigDefaults(t *testing.T) {
	var c deadletter.Config
	c.ApplyDefaults()
	if c != (deadletter.Config{Tolerance: deadletter.ToleranceNone}) {
		t.Errorf("defaults %+v, want tolerance none and no topic", c)
	}
	c = deadletter.Config{Tolerance: deadletter.ToleranceAll, Topic: "dlq"}
	c.ApplyDefaults()
	if c != (deadletter.Config{Tolerance: deadletter.ToleranceAll, Topic: "dlq"}) {
		t.Errorf("set values changed: %+v", c)
	}
}

// TestConfigValidate checks each message word for word: they are the ones
// the pipeline file's loader reports under errors.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  deadletter.Config
		want []string
	}{
		{"defaults", deadletter.Config{}, nil},
		{"all with a topic", deadletter.Config{Tolerance: deadletter.ToleranceAll, Topic: "orders.dlq"}, nil},
		{"none with a topic", deadletter.Config{Topic: "orders-dlq_1"}, nil},
		{"unknown tolerance", deadletter.Config{Tolerance: "some"}, []string{`tolerance: must be "none" or "all", got "some"`}},
		{"all without a topic", deadletter.Config{Tolerance: deadletter.ToleranceAll}, []string{"dead_letter_topic: required with tolerance all"}},
		{"bad characters", deadletter.Config{Topic: "orders dlq"}, []string{`dead_letter_topic: invalid topic name "orders dlq": use only letters, digits, '.', '_' and '-'`}},
		{"dot", deadletter.Config{Topic: ".."}, []string{`dead_letter_topic: invalid topic name ".."`}},
		{"too long", deadletter.Config{Topic: strings.Repeat("a", 250)}, []string{`dead_letter_topic: topic name longer than 249 characters: 250, starting "aaaaaaaaaaaaaaaaaaaa"`}},
		{"longest", deadletter.Config{Topic: strings.Repeat("a", 249)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, e := range field.Split(tc.cfg.Validate()) {
				var fe *field.Error
				if !errors.As(e, &fe) {
					t.Fatalf("%v is not a *field.Error", e)
				}
				got = append(got, fe.Error())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Validate:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// store is a producer that keeps what it is sent.
type store struct {
	err error

	mu    sync.Mutex
	sends [][]pipeline.Record
	fails []pipeline.Failure
}

func (s *store) Send(_ context.Context, recs []pipeline.Record, f pipeline.Failure) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sends = append(s.sends, recs)
	s.fails = append(s.fails, f)
	return s.err
}

func TestNewQueue(t *testing.T) {
	if _, err := deadletter.NewQueue(deadletter.Config{Tolerance: deadletter.ToleranceAll, Topic: "dlq"}, nil); err == nil || !strings.Contains(err.Error(), "producer") {
		t.Errorf("tolerance all without a producer: %v, want an error", err)
	}
	if _, err := deadletter.NewQueue(deadletter.Config{Tolerance: "x"}, nil); err == nil || !strings.Contains(err.Error(), "tolerance") {
		t.Errorf("invalid config: %v, want an error naming tolerance", err)
	}
	q, err := deadletter.NewQueue(deadletter.Config{}, nil)
	if err != nil {
		t.Fatalf("tolerance none without a producer: %v", err)
	}
	if q.Config().Tolerance != deadletter.ToleranceNone {
		t.Errorf("Config() = %+v, want defaults applied", q.Config())
	}
	var _ pipeline.DeadLetter = q
}

func TestQueueSend(t *testing.T) {
	cause := errors.New("400 rejected")
	recs := []pipeline.Record{{Value: []byte("v"), Origin: pipeline.Origin{Topic: "t", Partition: 1, Offset: 7}}}
	f := pipeline.Failure{Class: "fatal", Err: cause, Attempts: 1, Details: map[string]string{"http.status": "400"}}

	t.Run("tolerance none stores nothing and fails", func(t *testing.T) {
		s := &store{}
		q, err := deadletter.NewQueue(deadletter.Config{Topic: "dlq"}, s)
		if err != nil {
			t.Fatal(err)
		}
		err = q.Send(t.Context(), recs, f)
		if !errors.Is(err, deadletter.ErrNotTolerated) || !errors.Is(err, cause) {
			t.Fatalf("Send = %v, want it to wrap ErrNotTolerated and the cause", err)
		}
		if want := "fatal failure (errors.tolerance none): 400 rejected"; err.Error() != want {
			t.Errorf("Send = %q, want %q", err, want)
		}
		if len(s.sends) != 0 {
			t.Errorf("stored %d sends with tolerance none", len(s.sends))
		}
		if err := q.Send(t.Context(), recs, pipeline.Failure{Class: "operator"}); err == nil || err.Error() != "operator failure (errors.tolerance none)" {
			t.Errorf("Send without an error = %v", err)
		}
	})
	t.Run("tolerance all stores", func(t *testing.T) {
		s := &store{}
		q, err := deadletter.NewQueue(deadletter.Config{Tolerance: deadletter.ToleranceAll, Topic: "dlq"}, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Send(t.Context(), recs, f); err != nil {
			t.Fatalf("Send = %v", err)
		}
		if len(s.sends) != 1 || s.sends[0][0].Origin != recs[0].Origin || s.fails[0].Class != "fatal" || s.fails[0].Details["http.status"] != "400" {
			t.Errorf("stored %+v with %+v", s.sends, s.fails)
		}
	})
	t.Run("tolerance all passes the producer's error", func(t *testing.T) {
		down := errors.New("broker down")
		q, err := deadletter.NewQueue(deadletter.Config{Tolerance: deadletter.ToleranceAll, Topic: "dlq"}, &store{err: down})
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Send(t.Context(), recs, f); !errors.Is(err, down) {
			t.Errorf("Send = %v, want the producer's error", err)
		}
	})
}
