package pgsink

import (
	"context"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks"
	"github.com/spillway-io/spillway/sinks/sinktest"
)

// TestConformance runs the sink conformance suite in each mode, on a
// table of its own per subtest whose identity column gives the order in
// which rows were written. A batch is one transaction: the destination
// never takes part of a batch with a retryable refusal of the rest, so the
// partial-failure check does not apply.
//
// With effectively_once the suite's retry check applies too (a batch
// written twice is stored once). The sink skips a record at or below the
// highest offset it stored for the record's source partition, which is
// right when each partition's records arrive in offset order, as the
// writer's ordering: partition guarantees. The suite's writers share
// source partitions with interleaved offsets, so here each key stands for
// a partition of its own (its records' offsets increase).
func TestConformance(t *testing.T) {
	d := newDB(t)
	for _, tc := range []struct {
		name     string
		mode     string
		delivery string
	}{
		{"insert", ModeInsert, AtLeastOnce},
		{"upsert", ModeUpsert, AtLeastOnce},
		{"copy", ModeCopy, AtLeastOnce},
		{"insert-effectively-once", ModeInsert, EffectivelyOnce},
		{"copy-effectively-once", ModeCopy, EffectivelyOnce},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := sinktest.Features{Ordering: sinktest.OrderTotal, Restartable: true, ExactlyOnce: tc.delivery == EffectivelyOnce}
			sinktest.Run(t, f, func(t *testing.T) sinktest.Target {
				table := d.table(t, "sinktest")
				d.exec(t, "CREATE TABLE "+table+" (seq bigint GENERATED ALWAYS AS IDENTITY, id text UNIQUE, payload text)")
				cfg := Config{DSN: DSN(d.dsn), Table: table, Mode: tc.mode, Delivery: tc.delivery,
					OffsetsTable: table + "_offsets", OffsetsGroup: "sinktest",
					Columns: []Column{{Name: "id", Expr: `key + "@" + string(offset)`}, {Name: "payload", Expr: "value"}}}
				if tc.mode == ModeUpsert {
					cfg.KeyColumns = []string{"id"}
				}
				wrap := func(s *Sink) sinks.Sink {
					if tc.delivery == EffectivelyOnce {
						return perKey{s}
					}
					return s
				}
				s := d.sink(t, cfg)
				return sinktest.Target{
					Sink: wrap(s),
					Received: func() [][]byte {
						var out [][]byte
						for _, v := range d.strings(t, "SELECT payload FROM "+table+" ORDER BY seq") {
							out = append(out, []byte(v))
						}
						return out
					},
					Reopen: func() (sinks.Sink, error) {
						s, err := New(t.Context(), cfg)
						if err != nil {
							return nil, err
						}
						return wrap(s), nil
					},
				}
			})
		})
	}
}

// perKey gives each key its own source partition (see TestConformance).
type perKey struct{ *Sink }

func (p perKey) WriteBatch(ctx context.Context, batch []pipeline.Record) error {
	out := make([]pipeline.Record, len(batch))
	for i, r := range batch {
		r.Origin.Topic += "/" + string(r.Key)
		out[i] = r
	}
	return p.Sink.WriteBatch(ctx, out)
}
