// Package k8s checks the deployment files against the binaries' configuration.
// Every environment variable that a Kubernetes overlay or the compose file sets
// on a gateway or worker must be one the binary reads. Its value must pass the
// binary's own validation.
package k8s

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/shardgate/shardgate/pkg/config"
)

// overlays are the kustomize overlays under deploy/k8s/overlays.
var overlays = []string{"dev", "production", "monitoring"}

// downwardAPI lists the variables, other than SHARDGATE_*, that the manifests
// may set: Downward API fields that SHARDGATE_* values refer to as $(NAME).
// The values stand in for what the kubelet fills in.
var downwardAPI = map[string]string{
	"POD_NAME":      "shardgate-x-0",
	"POD_NAMESPACE": "shardgate",
	"POD_IP":        "10.1.2.3",
}

// workload is the part of a rendered object, and of a StatefulSet or
// Deployment in particular, that this test reads.
type workload struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		Template struct {
			Spec podSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type podSpec struct {
	EnableServiceLinks *bool       `json:"enableServiceLinks"`
	Containers         []container `json:"containers"`
}

type container struct {
	Name    string            `json:"name"`
	Command []string          `json:"command"`
	Env     []envVar          `json:"env"`
	EnvFrom []json.RawMessage `json:"envFrom"`
}

type envVar struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `json:"fieldPath"`
		} `json:"fieldRef"`
	} `json:"valueFrom"`
}

func TestOverlaysMatchConfig(t *testing.T) {
	kubectl := findKubectl(t)
	for _, overlay := range overlays {
		t.Run(overlay, func(t *testing.T) {
			dir := filepath.Join(repoRoot(t), "deploy", "k8s", "overlays", overlay)
			out, err := exec.Command(kubectl, "kustomize", dir).Output()
			if err != nil {
				t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderrOf(err))
			}
			roles := map[string]int{}
			namespaces := map[string]bool{}
			for _, doc := range yamlToJSON(t, out) {
				var w workload
				if err := json.Unmarshal(doc, &w); err != nil {
					t.Fatalf("decode rendered object: %v", err)
				}
				if w.Kind == "Namespace" {
					namespaces[w.Metadata.Name] = true
					continue
				}
				// Every object of an overlay is namespaced and belongs in the
				// overlay's own Namespace, not in whatever namespace kubectl uses.
				if w.Metadata.Namespace == "" {
					t.Errorf("%s %s has no namespace", w.Kind, w.Metadata.Name)
				}
				namespaces[w.Metadata.Namespace] = true
				if w.Kind != "StatefulSet" && w.Kind != "Deployment" {
					continue
				}
				if w.Spec.Template.Spec.EnableServiceLinks == nil || *w.Spec.Template.Spec.EnableServiceLinks {
					t.Errorf("%s %s: enableServiceLinks must be false, or Kubernetes injects "+
						"SHARDGATE_EDGE_* variables for the Services", w.Kind, w.Metadata.Name)
				}
				for _, c := range w.Spec.Template.Spec.Containers {
					role := checkContainer(t, w.Kind+" "+w.Metadata.Name, c)
					roles[role]++
				}
			}
			if roles[config.RoleGateway] != 1 || roles[config.RoleWorker] != 1 {
				t.Errorf("containers per role = %v, want one gateway and one worker", roles)
			}
			if len(namespaces) != 1 {
				t.Errorf("objects span namespaces %v, want one Namespace object holding them all", namespaces)
			}
		})
	}
}

// checkContainer checks one container's environment and returns its role.
func checkContainer(t *testing.T, where string, c container) string {
	t.Helper()
	where += " container " + c.Name
	role := roleOf(c.Command)
	if role == "" {
		t.Errorf("%s: command %q runs neither /usr/local/bin/gateway nor /usr/local/bin/worker", where, c.Command)
		return ""
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("%s: envFrom hides variable names from this check; list each variable under env", where)
	}

	env := map[string]string{}
	for _, v := range c.Env {
		if _, ok := downwardAPI[v.Name]; ok {
			if v.ValueFrom == nil || v.ValueFrom.FieldRef == nil {
				t.Errorf("%s: %s must come from the Downward API (valueFrom.fieldRef)", where, v.Name)
			}
			env[v.Name] = downwardAPI[v.Name]
			continue
		}
		if !slices.Contains(config.EnvVars(role), v.Name) {
			t.Errorf("%s: the %s binary does not read %s; it reads %v", where, role, v.Name, config.EnvVars(role))
			continue
		}
		env[v.Name] = expand(v.Value, env)
		if strings.Contains(env[v.Name], "$(") {
			t.Errorf("%s: %s=%q refers to a variable not defined before it", where, v.Name, v.Value)
		}
	}

	// The Prometheus Adapter rule maps the `worker` label of shardgate_sessions
	// to a pod, and the Diameter Origin-Host must be unique per gateway: both
	// depend on names taken from the pod name.
	if got := valueOf(c.Env, "SHARDGATE_NAME"); got != "$(POD_NAME)" {
		t.Errorf("%s: SHARDGATE_NAME = %q, want $(POD_NAME)", where, got)
	}
	if role == config.RoleGateway {
		if got := valueOf(c.Env, "SHARDGATE_DIAMETER_HOST"); !strings.HasPrefix(got, "$(POD_NAME).") {
			t.Errorf("%s: SHARDGATE_DIAMETER_HOST = %q, want it to start with $(POD_NAME).", where, got)
		}
	}
	if err := parseConfig(role, env); err != nil {
		t.Errorf("%s: the %s binary rejects this environment: %v", where, role, err)
	}
	return role
}

func TestComposeEnvMatchesConfig(t *testing.T) {
	file := filepath.Join(repoRoot(t), "deploy", "compose", "compose.yaml")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	docs := yamlToJSON(t, data)
	if len(docs) != 1 {
		t.Fatalf("%s holds %d YAML documents, want 1", file, len(docs))
	}
	var compose struct {
		Services map[string]struct {
			Command     []string        `json:"command"`
			Environment json.RawMessage `json:"environment"`
			Ports       []string        `json:"ports"`
		} `json:"services"`
	}
	if err := json.Unmarshal(docs[0], &compose); err != nil {
		t.Fatalf("decode %s: %v", file, err)
	}

	roles := map[string]int{}
	for name, svc := range compose.Services {
		role := roleOf(svc.Command)
		if role == "" {
			t.Errorf("service %s: command %q runs neither gateway nor worker", name, svc.Command)
			continue
		}
		roles[role]++
		env, err := composeEnv(svc.Environment)
		if err != nil {
			t.Errorf("service %s: %v", name, err)
			continue
		}
		for k := range env {
			if !slices.Contains(config.EnvVars(role), k) {
				t.Errorf("service %s: the %s binary does not read %s", name, role, k)
			}
		}
		if err := parseConfig(role, env); err != nil {
			t.Errorf("service %s: the %s binary rejects this environment: %v", name, role, err)
		}
		for _, p := range svc.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s: port %q is not bound to 127.0.0.1", name, p)
			}
		}
	}
	if roles[config.RoleGateway] != 2 || roles[config.RoleWorker] != 1 {
		t.Errorf("services per role = %v, want two gateways and one worker", roles)
	}
}

// composeEnv decodes a compose `environment`, which is either a map or a list
// of NAME=VALUE strings.
func composeEnv(raw json.RawMessage) (map[string]string, error) {
	env := map[string]string{}
	if len(raw) == 0 {
		return env, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err == nil {
		for k, v := range m {
			env[k] = fmt.Sprint(v)
		}
		return env, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("environment is neither a map nor a list of strings: %s", raw)
	}
	for _, kv := range list {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env, nil
}

// roleOf returns the role of the binary a command runs, or "" for another one.
func roleOf(command []string) string {
	if len(command) == 0 {
		return ""
	}
	switch command[0] {
	case "/usr/local/bin/gateway":
		return config.RoleGateway
	case "/usr/local/bin/worker":
		return config.RoleWorker
	}
	return ""
}

func parseConfig(role string, env map[string]string) error {
	getenv := func(k string) string { return env[k] }
	var err error
	if role == config.RoleGateway {
		_, err = config.ParseGateway(nil, getenv, io.Discard)
	} else {
		_, err = config.ParseWorker(nil, getenv, io.Discard)
	}
	return err
}

// varRef is a Kubernetes dependent-variable reference, $(NAME).
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(NAME) with the value of a variable defined earlier, as the
// kubelet does, and leaves unknown references as they are.
func expand(value string, defined map[string]string) string {
	return varRef.ReplaceAllStringFunc(value, func(ref string) string {
		if v, ok := defined[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

func valueOf(env []envVar, name string) string {
	for _, v := range env {
		if v.Name == name {
			return v.Value
		}
	}
	return ""
}

// yamlToJSON converts a stream of YAML documents to one JSON value per
// non-empty document.
// TODO: decode in Go once go.mod requires a YAML module (sigs.k8s.io/yaml);
// until then python3 with PyYAML does the conversion.
func yamlToJSON(t *testing.T, yamlText []byte) [][]byte {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: it converts the YAML files to JSON for this test")
	}
	const script = `
import json, sys
try:
    import yaml
except ImportError:
    sys.exit(3)
for doc in yaml.safe_load_all(sys.stdin):
    if doc:
        print(json.dumps(doc))
`
	cmd := exec.Command(python, "-c", script)
	cmd.Stdin = bytes.NewReader(yamlText)
	out, err := cmd.Output()
	if exitErr := (*exec.ExitError)(nil); errors.As(err, &exitErr) && exitErr.ExitCode() == 3 {
		t.Skip("python3 has no yaml module (PyYAML): it converts the YAML files to JSON for this test")
	}
	if err != nil {
		t.Fatalf("convert YAML to JSON: %v\n%s", err, stderrOf(err))
	}
	var docs [][]byte
	for line := range bytes.Lines(out) {
		if line = bytes.TrimSpace(line); len(line) > 0 {
			docs = append(docs, line)
		}
	}
	return docs
}

// findKubectl returns $SHARDGATE_KUBECTL, kubectl from PATH, or the kubectl
// that deploy/k8s/validate.sh builds, and skips the test when none exists.
func findKubectl(t *testing.T) string {
	t.Helper()
	if k := os.Getenv("SHARDGATE_KUBECTL"); k != "" {
		return k
	}
	if k, err := exec.LookPath("kubectl"); err == nil {
		return k
	}
	cache := os.Getenv("SHARDGATE_K8S_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = path.Join(home, ".cache", "shardgate-k8s")
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "bin", "kubectl-*"))
	if len(matches) > 0 {
		return matches[len(matches)-1]
	}
	t.Skip("kubectl not found (set SHARDGATE_KUBECTL, or run make k8s-validate to build it): it renders the overlays")
	return ""
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func stderrOf(err error) []byte {
	if exitErr := (*exec.ExitError)(nil); errors.As(err, &exitErr) {
		return exitErr.Stderr
	}
	return nil
}
