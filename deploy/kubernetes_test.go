package deploy

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		// Deployment
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				Containers                    []struct {
					Name  string   `yaml:"name"`
					Args  []string `yaml:"args"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					Env []struct {
						Name      string `yaml:"name"`
						Value     string `yaml:"value"`
						ValueFrom struct {
							ResourceFieldRef struct {
								ContainerName string `yaml:"containerName"`
								Resource      string `yaml:"resource"`
							} `yaml:"resourceFieldRef"`
							FieldRef struct {
								FieldPath string `yaml:"fieldPath"`
							} `yaml:"fieldRef"`
						} `yaml:"valueFrom"`
					} `yaml:"env"`
					Resources struct {
						Limits map[string]string `yaml:"limits"`
					} `yaml:"resources"`
					LivenessProbe  probe `yaml:"livenessProbe"`
					ReadinessProbe probe `yaml:"readinessProbe"`
					VolumeMounts   []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name      string `yaml:"name"`
					ConfigMap struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		// Service
		Ports []struct {
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		// ScaledObject
		ScaleTargetRef struct {
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicaCount int `yaml:"minReplicaCount"`
		MaxReplicaCount int `yaml:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `yaml:"type"`
			Metadata map[string]string `yaml:"metadata"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

// TestKubernetes parses every manifest in deploy/kubernetes and checks the
// cross-references: the kustomization lists them all, the Deployment
// mounts the ConfigMap where its args read the pipeline, its probes use
// the ops port the pipeline listens on, its grace period outlasts the
// pipeline's shutdown_timeout, GOMEMLIMIT follows its memory limit, and
// the KEDA ScaledObject scales that Deployment on the pipeline's group and
// topic, with no more replicas than partitions.
func TestKubernetes(t *testing.T) {
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	readYAML(t, "kubernetes/kustomization.yaml", &kust)
	byKind := map[string]k8sObject{}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		if !slices.Contains(kust.Resources, filepath.Base(f)) {
			t.Errorf("kustomization.yaml does not list %s", f)
		}
		var o k8sObject
		readYAML(t, f, &o)
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Fatalf("%s: apiVersion %q kind %q name %q", f, o.APIVersion, o.Kind, o.Metadata.Name)
		}
		byKind[o.Kind] = o
	}
	cm, dep, svc, so := byKind["ConfigMap"], byKind["Deployment"], byKind["Service"], byKind["ScaledObject"]
	if dep.Kind == "" || cm.Kind == "" || so.Kind == "" || svc.Kind == "" {
		t.Fatalf("want a ConfigMap, Deployment, Service and ScaledObject, got %v", slices.Collect(maps.Keys(byKind)))
	}
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	for k, v := range dep.Spec.Selector.MatchLabels {
		if dep.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
		}
	}

	// The pipeline: mounted from the ConfigMap where the args read it.
	var cfgPath string
	if i := slices.Index(c.Args, "-c"); i >= 0 && i+1 < len(c.Args) {
		cfgPath = c.Args[i+1]
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.ConfigMap.Name == cm.Metadata.Name {
				if key := strings.TrimPrefix(cfgPath, vm.MountPath+"/"); cm.Data[key] != "" {
					mounted = true
				}
			}
		}
	}
	if !mounted {
		t.Fatalf("args %v read %s, which is not a key of ConfigMap %s mounted there", c.Args, cfgPath, cm.Metadata.Name)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.Value == "" {
			env[e.Name] = "from-" + e.Name
		}
	}
	p := loadPipeline(t, "configmap:pipeline.yaml", []byte(cm.Data[filepath.Base(cfgPath)]), map[string]string{
		"KAFKA_BROKERS": env["KAFKA_BROKERS"], "SINK_URL": env["SINK_URL"], "POD_NAME": "spillway-0"})
	src := kafkaSource(t, p)

	// Ops port, probes and the Service.
	_, opsPort, _ := strings.Cut(p.Ops.Listen, ":")
	var portName string
	for _, cp := range c.Ports {
		if strconv.Itoa(cp.ContainerPort) == opsPort {
			portName = cp.Name
		}
	}
	if portName == "" {
		t.Fatalf("no container port %s (the pipeline's ops.listen)", opsPort)
	}
	for name, pr := range map[string]probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if pr.HTTPGet.Port != portName {
			t.Errorf("%s probe on port %q, want %q", name, pr.HTTPGet.Port, portName)
		}
	}
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probes on %s and %s, want /healthz and /readyz", c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != portName {
		t.Errorf("service ports %+v, want the %s port", svc.Spec.Ports, portName)
	}

	// Termination, memory.
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= p.ShutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds %v, want longer than shutdown_timeout %v", grace, p.ShutdownTimeout)
	}
	var memlimit bool
	for _, e := range c.Env {
		rf := e.ValueFrom.ResourceFieldRef
		if e.Name == "GOMEMLIMIT" && rf.ContainerName == c.Name && rf.Resource == "limits.memory" {
			memlimit = true
		}
	}
	if !memlimit || c.Resources.Limits["memory"] == "" {
		t.Errorf("GOMEMLIMIT must come from the container's limits.memory (limit %q)", c.Resources.Limits["memory"])
	}
	if src.InstanceID == "" {
		t.Errorf("no source.kafka.instance_id: a restarted pod would trigger a rebalance")
	}

	// KEDA.
	if so.Spec.ScaleTargetRef.Name != dep.Metadata.Name {
		t.Errorf("ScaledObject targets %q, want Deployment %q", so.Spec.ScaleTargetRef.Name, dep.Metadata.Name)
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "kafka" {
		t.Fatalf("triggers %+v, want one kafka trigger", so.Spec.Triggers)
	}
	m := so.Spec.Triggers[0].Metadata
	if m["consumerGroup"] != src.Group || !slices.Contains(src.Topics, m["topic"]) || m["bootstrapServers"] != env["KAFKA_BROKERS"] {
		t.Errorf("kafka trigger %v, want group %s, a topic of %v, brokers %s", m, src.Group, src.Topics, env["KAFKA_BROKERS"])
	}
	if lag, err := strconv.Atoi(m["lagThreshold"]); err != nil || lag <= 0 {
		t.Errorf("lagThreshold %q, want a positive number", m["lagThreshold"])
	}
	parts, err := strconv.Atoi(so.Metadata.Annotations["spillway.io/partitions"])
	if err != nil {
		t.Fatalf("ScaledObject has no spillway.io/partitions annotation: %v", err)
	}
	if so.Spec.MaxReplicaCount < 1 || so.Spec.MaxReplicaCount > parts || so.Spec.MinReplicaCount > so.Spec.MaxReplicaCount {
		t.Errorf("replicas %d..%d, want at most the %d partitions", so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount, parts)
	}
	if _, err := os.Stat("../Dockerfile"); err != nil {
		t.Error(err)
	}
}
