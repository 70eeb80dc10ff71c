package http

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/sinks/internal/jsonenc"
)

// BenchmarkEncode encodes batches of 500 values of 100 bytes (JSON objects
// or text) into a request body, without sending it: the sink's per-record
// CPU cost for each value_encoding.
func BenchmarkEncode(b *testing.B) {
	values := map[string]func(i int) []byte{
		"json": func(i int) []byte {
			v := fmt.Sprintf(`{"id":%d,"name":"customer-%d","pad":"`, i, i%97)
			return []byte(v + strings.Repeat("x", 100-len(v)-2) + `"}`)
		},
		"text": func(i int) []byte {
			v := fmt.Sprintf("id=%d name=customer-%d \"quoted\" pad=", i, i%97)
			return []byte(v + strings.Repeat("x", 100-len(v)))
		},
	}
	for _, kind := range []string{"json", "text"} {
		for _, mode := range []string{EncodingAuto, EncodingJSON, EncodingString, EncodingBase64} {
			if kind == "text" && mode == EncodingJSON {
				continue
			}
			b.Run(kind+"/"+mode, func(b *testing.B) {
				batch := make([]pipeline.Record, 500)
				for i := range batch {
					batch[i] = pipeline.Record{Value: values[kind](i)}
				}
				e := encoder{values: jsonenc.Values{Encoding: mode}}
				b.SetBytes(int64(len(batch) * 100))
				b.ReportAllocs()
				for b.Loop() {
					out := e.encode(batch)
					if out.failed != nil {
						b.Fatal(out.failed)
					}
					out.release()
				}
				b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}
