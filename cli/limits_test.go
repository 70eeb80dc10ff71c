package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/registry"
	"github.com/spillway-io/spillway/state"
)

// TestLimitsSetRefuses: bad values are refused with a clear message and
// exit code 2 before any broker is contacted (the address is unreachable).
func TestLimitsSetRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"set", "--brokers", "127.0.0.1:1", "--records-per-second", "5"}, "--job is required"},
		{[]string{"set", "--brokers", "127.0.0.1:1", "--job", "j", "--records-per-second", "-5"}, "must be positive numbers"},
		{[]string{"set", "--brokers", "127.0.0.1:1", "--job", "j", "--bytes-per-second", "NaN"}, "must be positive numbers"},
		{[]string{"set", "--brokers", "127.0.0.1:1", "--job", "j", "--records-per-second", "1e300"}, "records_per_second: must be a positive number up to"},
		{[]string{"set", "--brokers", "127.0.0.1:1", "--job", "j"}, "give --records-per-second, --bytes-per-second or --clear"},
		{[]string{"set", "--brokers", "127.0.0.1:1", "--job", "j", "--clear", "--records-per-second", "5"}, "--clear cannot be combined"},
		{[]string{"set", "--job", "j", "--records-per-second", "5"}, "-c FILE or --brokers is required"},
		{[]string{"set", "--brokers", "127.0.0.1:1", "--job", "j", "--records-per-second", "5", "--topic", "bad topic"}, "invalid topic name"},
		{[]string{"get"}, "want a subcommand"},
	} {
		var out, errb bytes.Buffer
		code := Main(append([]string{"limits"}, tc.args...), &out, &errb, registry.Builtin())
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("limits %v: exit %d, stderr %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestLimitsSet writes a control record a worker can read.
func TestLimitsSet(t *testing.T) {
	e, err := broker.Start(broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var out, errb bytes.Buffer
	addrs := strings.Join(e.Addrs(), ",")
	if code := Main([]string{"limits", "set", "--brokers", addrs, "--job", "orders", "--records-per-second", "1500"}, &out, &errb, registry.Builtin()); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "job orders: live limit set to records_per_second=1500") {
		t.Errorf("stdout %q", out.String())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.Addrs()...), kgo.ConsumeTopics(state.DefaultControlTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fs := cl.PollFetches(ctx)
	if fs.NumRecords() != 1 {
		t.Fatalf("control topic holds %d records (%v)", fs.NumRecords(), fs.Errors())
	}
	r := fs.Records()[0]
	c, err := state.ParseLimitChange(string(r.Key), r.Value)
	if err != nil || c.Job != "orders" || c.RecordsPerSecond != 1500 {
		t.Errorf("record %s=%s: %+v, %v", r.Key, r.Value, c, err)
	}
}
