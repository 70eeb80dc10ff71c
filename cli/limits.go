package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/state"
)

const limitsUsage = `Usage:
  spillway limits set --job J (--records-per-second N | --bytes-per-second N | --clear) [-c FILE | --brokers ADDRS]

Writes a live limit to the control topic; every worker of job J applies it within a second and
keeps it across restarts. A rate is a per-worker upper bound that replaces the configured one of
the job's strategy (token_bucket: its rate; adaptive_rate: its max_rate, in its unit); a rate left
out keeps the configured value; --clear goes back to the configured limits. With -c the brokers,
the Kafka client settings, the control topic and the job name come from the pipeline file.
`

// cmdLimits changes a job's limits at runtime through the control topic.
func (s *session) cmdLimits(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "set" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, limitsUsage)
			return nil
		}
		return usagef("limits: want a subcommand\n\n%s", limitsUsage)
	}
	fs := flag.NewFlagSet("limits set", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "pipeline `file` to take brokers, Kafka settings, the control topic and the job name from")
	brokers := fs.String("brokers", "", "comma-separated broker `addresses` (without -c)")
	jobName := fs.String("job", "", "job `name` (default: the name in -c's file)")
	topic := fs.String("topic", "", "control `topic` (default: state.control_topic of -c's file, else "+state.DefaultControlTopic+")")
	rps := fs.Float64("records-per-second", 0, "records per second per worker")
	bps := fs.Float64("bytes-per-second", 0, "bytes per second per worker")
	clear := fs.Bool("clear", false, "go back to the configured limits")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on reaching the brokers")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	var kopts []kgo.Opt
	sc := state.Config{Topic: "unused", ControlTopic: *topic}
	switch {
	case *path != "" && *brokers != "":
		return usagef("-c and --brokers exclude each other")
	case *path != "":
		cfg, err := s.loadConfig(*path)
		if err != nil {
			return err
		}
		if cfg.Brokers.Embedded() || len(cfg.Brokers) == 0 {
			return usagef("%s: the pipeline has no external brokers to reach", *path)
		}
		if kopts, err = cfg.Kafka.Opts(cfg.Brokers); err != nil {
			return err
		}
		sc = cfg.State
		if *topic != "" {
			sc.ControlTopic = *topic
		}
		if *jobName == "" {
			*jobName = cfg.Name
		}
	case *brokers != "":
		kopts = []kgo.Opt{kgo.SeedBrokers(strings.Split(*brokers, ",")...)}
	default:
		return usagef("-c FILE or --brokers is required")
	}
	sc.ApplyDefaults()
	if err := sc.Validate(); err != nil {
		return usagef("%v", err)
	}
	switch {
	case *jobName == "":
		return usagef("--job is required (or -c with a pipeline file)")
	case !(*rps >= 0) || !(*bps >= 0) || math.IsInf(*rps, 0) || math.IsInf(*bps, 0):
		return usagef("--records-per-second and --bytes-per-second must be positive numbers, got %v and %v", *rps, *bps)
	case *clear && (*rps != 0 || *bps != 0):
		return usagef("--clear cannot be combined with a rate")
	case !*clear && *rps == 0 && *bps == 0:
		return usagef("give --records-per-second, --bytes-per-second or --clear")
	}
	c := state.LimitChange{Version: state.LimitVersion, Job: *jobName, RecordsPerSecond: *rps, BytesPerSecond: *bps, Clear: *clear}
	if err := c.Validate(); err != nil {
		return usagef("%v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := state.PublishLimitChange(tctx, kopts, sc.ControlTopic, int32(sc.Partitions), int16(sc.ReplicationFactor), c); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "job %s: live limit set to %s (control topic %s)\n", c.Job, c, sc.ControlTopic)
	return nil
}
