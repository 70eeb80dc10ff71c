package exprop_test

import (
	"context"
	"fmt"

	"github.com/spillway-io/spillway/pipeline"
	"github.com/spillway-io/spillway/pipeline/exprop"
)

func Example() {
	keep, err := exprop.Filter(`json.amount > 0`)
	if err != nil {
		panic(err)
	}
	tag, err := exprop.Map(`json.customer`, "", map[string]string{"x-amount": `json.amount * 100`})
	if err != nil {
		panic(err)
	}
	chain := pipeline.Chain{{Name: "positive", Op: keep}, {Name: "tag", Op: tag}}

	for _, v := range []string{`{"customer":"ann","amount":1.25}`, `{"customer":"bob","amount":0}`, `oops`} {
		out, err := chain.Apply(context.Background(), pipeline.Record{Value: []byte(v)})
		switch {
		case err != nil:
			fmt.Println("error:", err)
		case len(out) == 0:
			fmt.Println("dropped")
		default:
			r := out[0]
			fmt.Printf("key=%s %s=%s value=%s\n", r.Key, r.Headers[0].Key, r.Headers[0].Value, r.Value)
		}
	}
	// Output:
	// key=ann x-amount=125 value={"customer":"ann","amount":1.25}
	// dropped
	// error: operator positive: record value is not valid JSON: invalid character 'o' looking for beginning of value
}
