package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/sources/kafka"
	"github.com/spillway-io/spillway/state"
)

const savepointUsage = `Usage:
  spillway savepoint create (-c FILE | --brokers ADDRS --job J --group G) [--stop] [--id ID] [--file PATH]
  spillway savepoint list   (-c FILE | --brokers ADDRS --job J) [--json]
  spillway savepoint show   ID (-c FILE | --brokers ADDRS --job J)
  spillway savepoint delete ID (-c FILE | --brokers ADDRS --job J)
  spillway run -c FILE --from-savepoint ID | --from-savepoint-file PATH

create saves the committed offsets of the job's consumer group and the job's state (strategy,
live limit, breaker record) under an id, in the state topic (key <job>/savepoints/<id>) or in a
file (--file), and prints the id. --stop first asks every worker of the job to stop (a record on
the control topic): each drains what is in flight, commits and exits 0; once the group is empty
the savepoint is taken, exact. run --from-savepoint restores the offsets (the group must be
empty) and the state before consuming. With -c the brokers, Kafka settings, state and control
topics, group, topics and job name come from the pipeline file.
`

// savepointTarget is what a savepoint command works on, from -c or flags.
type savepointTarget struct {
	kopts  []kgo.Opt
	sc     state.Config
	job    string
	group  string
	topics []string
}

// cmdSavepoint takes, lists, shows and deletes savepoints.
func (s *session) cmdSavepoint(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("savepoint: want a subcommand (create, list, show, delete)\n\n%s", savepointUsage)
	}
	sub := args[0]
	switch sub {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, savepointUsage)
		return nil
	case "create", "list", "show", "delete":
	default:
		return usagef("savepoint: unknown subcommand %q (want create, list, show or delete)\n\n%s", sub, savepointUsage)
	}
	rest := args[1:]
	var id string
	withID := sub == "show" || sub == "delete"
	if withID && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		id, rest = rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("savepoint "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "pipeline `file` to take brokers, Kafka settings, topics, group and job name from")
	brokers := fs.String("brokers", "", "comma-separated broker `addresses` (without -c)")
	jobName := fs.String("job", "", "job `name` (default: the name in -c's file)")
	timeout := fs.Duration("timeout", 30*time.Second, "bound on each exchange with the brokers")
	var (
		group, newID, file *string
		stop, asJSON       *bool
		stopTimeout        *time.Duration
	)
	switch sub {
	case "create":
		group = fs.String("group", "", "consumer `group` (default: source.kafka.group of -c's file)")
		stop = fs.Bool("stop", false, "stop the job's workers gracefully first (drain, commit, exit 0), then take the savepoint")
		stopTimeout = fs.Duration("stop-timeout", 2*time.Minute, "with --stop: how long to wait for the group to become empty")
		newID = fs.String("id", "", "savepoint `id` (default: sp-<UTC time>-<random>)")
		file = fs.String("file", "", "write the savepoint to `path` instead of the state topic")
	case "list":
		asJSON = fs.Bool("json", false, "print JSON")
	}
	if withID && id == "" {
		// The ID may follow the flags instead.
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err}
		}
		if fs.NArg() > 0 {
			id, rest = fs.Arg(0), fs.Args()[1:]
		} else {
			rest = nil
		}
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if withID {
		if id == "" {
			return usagef("savepoint %s: want the savepoint ID (spillway savepoint %s ID -c FILE)", sub, sub)
		}
		if err := state.ValidateSavepointID(id); err != nil {
			return usagef("savepoint %s: %v", sub, err)
		}
	}
	tg, err := s.savepointTarget(*path, *brokers, *jobName, group)
	if err != nil {
		return err
	}
	if *timeout <= 0 {
		return usagef("--timeout must be positive, got %s", *timeout)
	}
	sps, err := state.OpenSavepoints(tg.kopts, tg.sc)
	if err != nil {
		return usagef("%v", err)
	}
	defer sps.Close()
	bounded := func(f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return f(ctx)
	}
	switch sub {
	case "list":
		var list []state.Savepoint
		err := bounded(func(ctx context.Context) (err error) { list, err = sps.List(ctx, tg.job); return err })
		if list == nil && err != nil {
			return err
		}
		if err != nil {
			fmt.Fprintf(stderr, "spillway savepoint list: some records could not be read: %v\n", err)
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(append([]state.Savepoint{}, list...))
		}
		printSavepoints(stdout, tg.job, list)
		return nil
	case "show":
		var sp state.Savepoint
		if err := bounded(func(ctx context.Context) (err error) { sp, err = sps.Get(ctx, tg.job, id); return err }); err != nil {
			return err
		}
		b, err := sp.Encode(true)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	case "delete":
		if err := bounded(func(ctx context.Context) error { return sps.Delete(ctx, tg.job, id) }); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "job %s: savepoint %s deleted\n", tg.job, id)
		return nil
	}
	// create
	switch {
	case tg.group == "":
		return usagef("--group is required with --brokers (or -c with a pipeline file)")
	case *newID != "":
		if err := state.ValidateSavepointID(*newID); err != nil {
			return usagef("--id: %v", err)
		}
	case *stop && *stopTimeout <= 0:
		return usagef("--stop-timeout must be positive, got %s", *stopTimeout)
	case *stop && tg.sc.Kind == state.KindMemory:
		return usagef("--stop: the job's workers keep their state on memory (state.kind: memory) and do not read the control topic; stop them yourself (SIGTERM) and take the savepoint without --stop")
	}
	spID := *newID
	if spID == "" {
		spID = state.NewSavepointID(time.Now())
	}
	if *stop {
		if err := s.stopJob(ctx, sps, tg, spID, *timeout, *stopTimeout, stderr); err != nil {
			return err
		}
	}
	var sp state.Savepoint
	if err := bounded(func(ctx context.Context) (err error) {
		sp, err = sps.Capture(ctx, tg.job, tg.group, tg.topics)
		return err
	}); err != nil {
		return err
	}
	sp.ID, sp.Stopped = spID, *stop
	if *file != "" {
		b, err := sp.Encode(true)
		if err != nil {
			return err
		}
		if err := writeNew(*file, b); err != nil {
			return err
		}
	} else if err := bounded(func(ctx context.Context) error { return sps.Put(ctx, sp) }); err != nil {
		return err
	}
	where := "state topic " + tg.sc.Topic
	if *file != "" {
		where = *file
	}
	fmt.Fprintf(stderr, "job %s: savepoint %s of group %s: %d partitions, %d records before it, state %s; in %s\n",
		sp.Job, sp.ID, sp.Group, len(sp.Offsets), sp.Total(), stateNames(sp), where)
	fmt.Fprintln(stdout, sp.ID)
	return nil
}

// stopJob writes a stop record, waits for the group to become empty and
// deletes the record.
func (s *session) stopJob(ctx context.Context, sps *state.Savepoints, tg savepointTarget, id string, timeout, wait time.Duration, stderr io.Writer) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	err := sps.RequestStop(wctx, state.StopRequest{Job: tg.job, Savepoint: id})
	cancel()
	if err != nil {
		return fmt.Errorf("--stop: ask the workers to stop: %w", err)
	}
	fmt.Fprintf(stderr, "job %s: stop requested; waiting up to %s for group %s to become empty\n", tg.job, wait, tg.group)
	wctx, cancel = context.WithTimeout(ctx, wait)
	err = sps.WaitGroupEmpty(wctx, tg.group, 200*time.Millisecond)
	cancel()
	// The record is deleted whether or not the workers left: one left
	// behind would never stop a worker started later anyway.
	cctx, ccancel := context.WithTimeout(context.Background(), timeout)
	defer ccancel()
	if cerr := sps.ClearStop(cctx, tg.job); cerr != nil {
		fmt.Fprintf(stderr, "spillway savepoint create: deleting the stop record: %v\n", cerr)
	}
	if err != nil {
		return fmt.Errorf("--stop: %w (workers started after the request, or with state.kind memory, do not obey it); no savepoint taken", err)
	}
	return nil
}

// savepointTarget resolves -c or --brokers into what a savepoint command
// works on; group is nil for the commands that need none.
func (s *session) savepointTarget(path, brokers, jobName string, group *string) (savepointTarget, error) {
	var tg savepointTarget
	switch {
	case path != "" && brokers != "":
		return tg, usagef("-c and --brokers exclude each other")
	case path != "":
		cfg, err := s.loadConfig(path)
		if err != nil {
			return tg, err
		}
		src, ok := cfg.Source.Config.(*kafka.Config)
		if !ok {
			return tg, usagef("%s: the source is %s, not kafka: it has no consumer group to save", path, cfg.Source.Kind)
		}
		if cfg.Brokers.Embedded() || len(cfg.Brokers) == 0 {
			return tg, usagef("%s: the pipeline has no external brokers to reach (brokers: embedded is private to the process that runs it)", path)
		}
		if tg.kopts, err = cfg.Kafka.Opts(cfg.Brokers); err != nil {
			return tg, err
		}
		tg.sc, tg.job = cfg.State, cmp.Or(jobName, cfg.Name)
		tg.group, tg.topics = src.Group, src.Topics
		_, kafkaSource := cfg.SourceTopics()
		tg.sc.Kind = tg.sc.Resolve(kafkaSource)
	case brokers != "":
		tg.kopts = []kgo.Opt{kgo.SeedBrokers(strings.Split(brokers, ",")...)}
		tg.job = jobName
	default:
		return tg, usagef("-c FILE or --brokers is required")
	}
	if group != nil && *group != "" {
		tg.group = *group
	}
	tg.sc.ApplyDefaults()
	if tg.job == "" {
		return tg, usagef("--job is required (or -c with a pipeline file)")
	}
	return tg, nil
}

// writeNew writes b to a new file at path; an existing file is not
// overwritten.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("--file: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("--file: %w", err)
	}
	return f.Close()
}

func stateNames(sp state.Savepoint) string {
	var names []string
	for _, n := range state.SavedStateNames {
		if _, ok := sp.State[n]; ok {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

func printSavepoints(w io.Writer, job string, list []state.Savepoint) {
	if len(list) == 0 {
		fmt.Fprintf(w, "job %s has no savepoints\n", job)
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tcreated_at\tgroup\tstopped\tpartitions\trecords_before\tstate")
	for _, sp := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%d\t%s\n", sp.ID, sp.CreatedAt.Format(time.RFC3339), sp.Group, sp.Stopped, len(sp.Offsets), sp.Total(), stateNames(sp))
	}
	tw.Flush()
}

// errSavepointFlags is returned when run gets both savepoint flags.
var errSavepointFlags = errors.New("--from-savepoint and --from-savepoint-file exclude each other")
