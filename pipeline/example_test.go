package pipeline_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/spillway-io/spillway/pipeline"
)

// printAcker prints the offsets it is told are done.
type printAcker struct{}

func (printAcker) Ack(offsets []int64) { fmt.Println("done:", offsets) }

func ExampleChain() {
	chain := pipeline.Chain{
		{Name: "non-empty", Op: pipeline.Filter(func(r pipeline.Record) (bool, error) {
			return len(r.Value) > 0, nil
		})},
		{Name: "words", Op: pipeline.FlatMap(func(r pipeline.Record) ([]pipeline.Record, error) {
			var out []pipeline.Record
			for _, w := range strings.Fields(string(r.Value)) {
				c := r
				c.Value = []byte(w)
				out = append(out, c)
			}
			return out, nil
		})},
		{Name: "shout", Op: pipeline.Map(func(r pipeline.Record) (pipeline.Record, error) {
			r.Value = []byte(strings.ToUpper(string(r.Value)))
			return r, nil
		})},
	}
	ctx := context.Background()

	in := pipeline.Record{Value: []byte("hello spillway"), Origin: pipeline.Origin{Offset: 10}}.WithAcker(printAcker{})
	out, _ := chain.Apply(ctx, in)
	for _, r := range out {
		fmt.Println(string(r.Value), r.Origin.Offset)
	}
	pipeline.AckAll(out) // offset 10 is done once both words are

	empty := pipeline.Record{Origin: pipeline.Origin{Offset: 11}}.WithAcker(printAcker{})
	out, _ = chain.Apply(ctx, empty) // filtered: done at once
	fmt.Println(len(out), "records")
	// Output:
	// HELLO 10
	// SPILLWAY 10
	// done: [10]
	// done: [11]
	// 0 records
}

func ExampleFanout() {
	parent := pipeline.Record{Origin: pipeline.Origin{Topic: "orders", Offset: 42}}.WithAcker(printAcker{})
	children := pipeline.Fanout(parent, []pipeline.Record{
		{Value: []byte("line 1")}, {Value: []byte("line 2")}, {Value: []byte("line 3")},
	})
	children[0].Ack()
	children[2].Ack()
	fmt.Println("two of three children done")
	children[1].Ack()
	// Output:
	// two of three children done
	// done: [42]
}

func ExampleOperatorError() {
	chain := pipeline.Chain{{Name: "parse", Op: pipeline.Map(func(r pipeline.Record) (pipeline.Record, error) {
		return r, fmt.Errorf("not json: %q", r.Value)
	})}}
	_, err := chain.Apply(context.Background(), pipeline.Record{Value: []byte("{")})
	fmt.Println(err)
	// Output:
	// operator parse: not json: "{"
}
