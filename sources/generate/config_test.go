package generate_test

import (
	"errors"
	"math"
	"testing"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/sources/generate"
)

func TestConfigDefaults(t *testing.T) {
	var c generate.Config
	c.ApplyDefaults()
	want := generate.Config{ValueBytes: 100, Keys: 1000, BatchSize: 500, Topic: "generate"}
	if c != want {
		t.Fatalf("defaults %+v, want %+v", c, want)
	}
	c.ApplyDefaults()
	if c != want {
		t.Fatalf("ApplyDefaults is not idempotent: %+v", c)
	}
}

// TestConfigValidate checks the messages and relative paths, worded as the
// pipeline file's validation words them.
func TestConfigValidate(t *testing.T) {
	c := generate.Config{Count: -1, ValueBytes: -2, Keys: -3, Rate: math.NaN(), BatchSize: -4}
	want := []field.Error{
		{Path: "count", Msg: "must not be negative, got -1"},
		{Path: "value_bytes", Msg: "must be positive, got -2"},
		{Path: "keys", Msg: "must be positive, got -3"},
		{Path: "rate", Msg: "must be a finite number, 0 or more, got NaN"},
		{Path: "batch_size", Msg: "must be positive, got -4"},
	}
	errs := field.Split(c.Validate())
	if len(errs) != len(want) {
		t.Fatalf("got %v, want %v", errs, want)
	}
	for i, err := range errs {
		var fe *field.Error
		if !errors.As(err, &fe) || *fe != want[i] {
			t.Errorf("error %d = %#v, want %#v", i, err, want[i])
		}
	}
	if c.ValueBytes != -2 || c.Topic != "" {
		t.Fatal("Validate modified its receiver")
	}
	if err := (generate.Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
}
