package http_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/pipeline"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
)

// BenchmarkWriteBatch sends batches of 500 records of 100 bytes to a server
// that discards the body.
func BenchmarkWriteBatch(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()

	values := map[string]func(i int) []byte{
		// {"id":N,"name":"...","pad":"xx..."} padded to 100 bytes.
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
		for _, format := range []string{"json", "ndjson"} {
			b.Run(kind+"/"+format, func(b *testing.B) {
				batch := make([]pipeline.Record, 500)
				for i := range batch {
					batch[i] = pipeline.Record{
						Key:    fmt.Appendf(nil, "k%d", i%50),
						Value:  values[kind](i),
						Origin: pipeline.Origin{Topic: "bench", Partition: int32(i % 4), Offset: int64(i / 4)},
					}
				}
				s, err := sinkhttp.New(sinkhttp.Config{URL: srv.URL, Format: format})
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(batch) * 100))
				b.ReportAllocs()
				n := 0
				for b.Loop() {
					n++
					if err := s.WriteBatch(b.Context(), batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n*len(batch))/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}
