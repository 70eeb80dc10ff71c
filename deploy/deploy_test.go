package deploy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	composecli "github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"

	"github.com/spillway-io/spillway/internal/config"
	sinkhttp "github.com/spillway-io/spillway/sinks/http"
	"github.com/spillway-io/spillway/sources/kafka"
)

// loadPipeline parses a pipeline file as `spillway validate` does, with
// env for its ${VAR}s.
func loadPipeline(t *testing.T, name string, body []byte, env map[string]string) *config.Pipeline {
	t.Helper()
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	p, err := config.Parse(name, body, lookup)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

func kafkaSource(t *testing.T, p *config.Pipeline) *kafka.Config {
	t.Helper()
	c, ok := p.Source.Config.(*kafka.Config)
	if !ok {
		t.Fatalf("source is %s, want kafka", p.Source.Kind)
	}
	return c
}

// TestComposeStack loads docker-compose.yml with compose-go (as `docker
// compose` does) and checks the stack hangs together: services, images,
// build, the order they start in, health checks, ports, the files they
// mount, and that the workers' pipeline and Prometheus agree on addresses.
func TestComposeStack(t *testing.T) {
	opts, err := composecli.NewProjectOptions([]string{"../docker-compose.yml"},
		composecli.WithWorkingDirectory(".."), composecli.WithName("spillway"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	project, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	want := []string{"grafana", "jaeger", "kafka", "kafka-init", "producer", "prometheus", "receiver", "worker-1", "worker-2"}
	var got []string
	for name := range project.Services {
		got = append(got, name)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	svc := project.Services

	// Everything of ours is the image the Dockerfile builds.
	for _, name := range []string{"producer", "receiver", "worker-1", "worker-2"} {
		s := svc[name]
		if s.Image != "spillway:local" || s.Build == nil || s.Build.Context != project.WorkingDir {
			t.Errorf("%s: image %q build %+v, want spillway:local built from the repository root", name, s.Image, s.Build)
		}
	}
	if _, err := os.Stat("../Dockerfile"); err != nil {
		t.Errorf("the stack builds from ../Dockerfile: %v", err)
	}
	for _, name := range []string{"kafka", "kafka-init", "prometheus", "jaeger", "grafana"} {
		if img := svc[name].Image; img == "" || !strings.Contains(img, ":") || strings.HasSuffix(img, ":latest") {
			t.Errorf("%s: image %q, want a pinned tag", name, img)
		}
	}

	// Start order: topics exist before anything uses them; workers wait
	// for the receiver's health.
	deps := map[string]map[string]string{
		"kafka-init": {"kafka": types.ServiceConditionHealthy},
		"producer":   {"kafka-init": types.ServiceConditionCompletedSuccessfully},
		"worker-1":   {"kafka-init": types.ServiceConditionCompletedSuccessfully, "receiver": types.ServiceConditionHealthy},
		"worker-2":   {"kafka-init": types.ServiceConditionCompletedSuccessfully, "receiver": types.ServiceConditionHealthy},
		"grafana":    {"prometheus": types.ServiceConditionStarted},
	}
	for name, want := range deps {
		for dep, cond := range want {
			if got := svc[name].DependsOn[dep].Condition; got != cond {
				t.Errorf("%s depends on %s with condition %q, want %q", name, dep, got, cond)
			}
		}
	}
	for _, name := range []string{"kafka", "receiver", "worker-1", "worker-2"} {
		if hc := svc[name].HealthCheck; hc == nil || len(hc.Test) < 2 {
			t.Errorf("%s: no health check", name)
		}
	}

	// The workers: the pipeline mounted, a health check on its ops port,
	// a grace period longer than its shutdown_timeout, GOMEMLIMIT, OTLP.
	pipelineFile := filepath.Join(project.WorkingDir, "deploy/compose/pipeline.yaml")
	body, err := os.ReadFile(pipelineFile)
	if err != nil {
		t.Fatal(err)
	}
	p := loadPipeline(t, pipelineFile, body, nil)
	_, opsPort, _ := strings.Cut(p.Ops.Listen, ":")
	for _, name := range []string{"worker-1", "worker-2"} {
		s := svc[name]
		mounted := false
		for _, v := range s.Volumes {
			if v.Source == pipelineFile && slices.Contains(s.Command, v.Target) && v.ReadOnly {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("%s: the pipeline file is not mounted read-only where its command reads it (%v, %+v)", name, s.Command, s.Volumes)
		}
		if hc := strings.Join(s.HealthCheck.Test, " "); !strings.Contains(hc, "healthcheck") || !strings.Contains(hc, ":"+opsPort+"/healthz") {
			t.Errorf("%s: health check %q, want spillway healthcheck on ops port %s", name, hc, opsPort)
		}
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= p.ShutdownTimeout {
			t.Errorf("%s: stop_grace_period %v, want longer than shutdown_timeout %v", name, s.StopGracePeriod, p.ShutdownTimeout)
		}
		if !slices.ContainsFunc(s.Ports, func(pc types.ServicePortConfig) bool { return strconv.Itoa(int(pc.Target)) == opsPort }) {
			t.Errorf("%s: ops port %s not published", name, opsPort)
		}
		for _, k := range []string{"GOMEMLIMIT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
			if v := s.Environment[k]; v == nil || *v == "" {
				t.Errorf("%s: %s not set", name, k)
			}
		}
		if ep := s.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]; ep != nil && !strings.Contains(*ep, "jaeger:") {
			t.Errorf("%s: OTLP endpoint %q, want the jaeger service", name, *ep)
		}
	}
	if got := strings.Join(p.Brokers, ","); got != "kafka:9092" {
		t.Errorf("pipeline brokers %q, want kafka:9092 (the kafka service's PLAINTEXT listener)", got)
	}
	src := kafkaSource(t, p)
	initCmd := strings.Join(svc["kafka-init"].Command, " ")
	for _, topic := range append(slices.Clone(src.Topics), p.Errors.Topic) {
		if !strings.Contains(initCmd, "--topic "+topic+" ") {
			t.Errorf("kafka-init does not create %s", topic)
		}
	}
	if sinkURL := sinkHTTPURL(t, p); !strings.HasPrefix(sinkURL, "http://receiver:8080/") {
		t.Errorf("sink URL %q, want the receiver service", sinkURL)
	}

	// Prometheus scrapes both workers' ops port.
	var prom struct {
		ScrapeConfigs []struct {
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "prometheus/prometheus.yml", &prom)
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.MetricsPath != "/metrics" {
			t.Errorf("metrics_path %q, want /metrics", sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	if want := []string{"worker-1:" + opsPort, "worker-2:" + opsPort}; !slices.Equal(targets, want) {
		t.Errorf("Prometheus targets %v, want %v", targets, want)
	}
	for _, v := range svc["prometheus"].Volumes {
		if strings.HasSuffix(v.Source, "prometheus.yml") {
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("prometheus mounts %s: %v", v.Source, err)
			}
		}
	}
	if _, err := os.Stat("grafana/dashboards/spillway.json"); err == nil {
		checkGrafana(t, svc["grafana"], project.WorkingDir)
	} else {
		t.Error("no Grafana dashboard: grafana/dashboards/spillway.json (it comes with the metrics)")
	}
}

func sinkHTTPURL(t *testing.T, p *config.Pipeline) string {
	t.Helper()
	c, ok := p.Sink.Config.(*sinkhttp.Config)
	if !ok {
		t.Fatalf("sink is %s, want http", p.Sink.Kind)
	}
	return c.URL
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// checkGrafana: the provisioning the grafana service mounts parses, its
// datasource is the prometheus service, and the dashboard's panels query
// that datasource for metrics the workers export (README's metrics table).
func checkGrafana(t *testing.T, s types.ServiceConfig, root string) {
	t.Helper()
	var mounts []string
	for _, v := range s.Volumes {
		if _, err := os.Stat(v.Source); err != nil {
			t.Errorf("grafana mounts %s: %v", v.Source, err)
		}
		mounts = append(mounts, v.Target)
	}
	if !slices.Contains(mounts, "/etc/grafana/provisioning") {
		t.Errorf("grafana mounts %v, want /etc/grafana/provisioning", mounts)
	}
	var ds struct {
		Datasources []struct{ Name, UID, Type, URL string } `yaml:"datasources"`
	}
	readYAML(t, "grafana/provisioning/datasources/prometheus.yaml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Fatalf("datasources %+v, want the prometheus service", ds.Datasources)
	}
	var prov struct {
		Providers []struct {
			Options struct{ Path string } `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "grafana/provisioning/dashboards/spillway.yaml", &prov)
	if len(prov.Providers) != 1 || !slices.Contains(mounts, prov.Providers[0].Options.Path) {
		t.Errorf("dashboard provider path %+v is not a mounted folder (%v)", prov.Providers, mounts)
	}
	b, err := os.ReadFile("grafana/dashboards/spillway.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string
		Panels []struct {
			Title      string
			Datasource struct{ UID string }
			Targets    []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	known := readmeMetrics(t, filepath.Join(root, "README.md"))
	metric := regexp.MustCompile(`\b(spillway_[a-z0-9_]+|messaging_[a-z0-9_]+)`)
	labels := regexp.MustCompile(`\{[^}]*\}|\b(by|without)\s*\([^)]*\)`)
	seen := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Datasource.UID != ds.Datasources[0].UID {
			t.Errorf("panel %q uses datasource %q, want %q", p.Title, p.Datasource.UID, ds.Datasources[0].UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			// Label matchers and grouping name labels, not metrics.
			expr := labels.ReplaceAllString(q.Expr, "")
			for _, m := range metric.FindAllString(expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
				if !known[base] && !known[strings.TrimSuffix(base, "_total")] {
					t.Errorf("panel %q queries %s, which README's metrics table does not list", p.Title, m)
				}
				seen[p.Title] = true
			}
		}
	}
	for _, want := range []string{"Throughput", "Consumer lag", "Rate limit", "Circuit breaker"} {
		if !seen[want] {
			t.Errorf("dashboard has no %q panel with a Spillway metric", want)
		}
	}
}

// readmeMetrics is the set of metric names in README's metrics table (the
// first column's code spans that look like Prometheus names).
func readmeMetrics(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	name := regexp.MustCompile("^\\| `((?:spillway|messaging)_[a-z0-9_]+)`")
	for _, line := range strings.Split(string(b), "\n") {
		if m := name.FindStringSubmatch(line); m != nil {
			out[m[1]] = true
			out[strings.TrimSuffix(m[1], "_total")] = true
		}
	}
	if len(out) == 0 {
		t.Fatal("README has no metrics table (rows starting with | `spillway_...`)")
	}
	return out
}
