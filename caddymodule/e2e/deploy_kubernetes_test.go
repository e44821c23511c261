package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// The Kubernetes objects of deploy/kubernetes, with only the fields the
// manifests use: a misspelt or misplaced field fails the decoding.
type k8sObject struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   k8sMeta           `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`       // ConfigMap
	Type       string            `yaml:"type"`       // Secret
	StringData map[string]string `yaml:"stringData"` // Secret
	Spec       *struct {         // Deployment
		Replicas int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sMeta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type podSpec struct {
	AutomountServiceAccountToken  *bool              `yaml:"automountServiceAccountToken"`
	EnableServiceLinks            *bool              `yaml:"enableServiceLinks"`
	TerminationGracePeriodSeconds int                `yaml:"terminationGracePeriodSeconds"`
	HostNetwork                   bool               `yaml:"hostNetwork"`
	HostPID                       bool               `yaml:"hostPID"`
	HostIPC                       bool               `yaml:"hostIPC"`
	SecurityContext               podSecurityContext `yaml:"securityContext"`
	InitContainers                []k8sContainer     `yaml:"initContainers"`
	Containers                    []k8sContainer     `yaml:"containers"`
	Volumes                       []k8sVolume        `yaml:"volumes"`
}

// runAs are the security settings of a pod that a container may override.
type runAs struct {
	RunAsNonRoot   *bool           `yaml:"runAsNonRoot"`
	RunAsUser      *uint32         `yaml:"runAsUser"`
	RunAsGroup     *uint32         `yaml:"runAsGroup"`
	SeccompProfile *seccompProfile `yaml:"seccompProfile"`
}

type podSecurityContext struct {
	runAs   `yaml:",inline"`
	FSGroup *uint32 `yaml:"fsGroup"`
}

type seccompProfile struct {
	Type string `yaml:"type"`
}

type containerSecurityContext struct {
	runAs                    `yaml:",inline"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	Privileged               *bool `yaml:"privileged"`
	Capabilities             *struct {
		Drop []string `yaml:"drop"`
		Add  []string `yaml:"add"`
	} `yaml:"capabilities"`
}

type k8sContainer struct {
	Name          string   `yaml:"name"`
	Image         string   `yaml:"image"`
	RestartPolicy string   `yaml:"restartPolicy"`
	Command       []string `yaml:"command"`
	Args          []string `yaml:"args"`
	Env           []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom any    `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom        []any     `yaml:"envFrom"`
	Ports          []any     `yaml:"ports"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *containerSecurityContext `yaml:"securityContext"`
	VolumeMounts    []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
	HTTPGet          any `yaml:"httpGet"`
	TCPSocket        any `yaml:"tcpSocket"`
	GRPC             any `yaml:"grpc"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type k8sVolume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName  string       `yaml:"secretName"`
		DefaultMode *os.FileMode `yaml:"defaultMode"`
	} `yaml:"secret"`
	EmptyDir *struct {
		Medium    string `yaml:"medium"`
		SizeLimit string `yaml:"sizeLimit"`
	} `yaml:"emptyDir"`
}

// deployFile reads a file of the repository's deploy directory.
func deployFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// k8sObjects decodes the YAML documents of a deploy/kubernetes file,
// refusing fields the types above do not have.
func k8sObjects(t *testing.T, name string) []k8sObject {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(deployFile(t, filepath.Join("kubernetes", name))))
	dec.KnownFields(true)
	var out []k8sObject
	for {
		var o k8sObject
		if err := dec.Decode(&o); err != nil {
			if err.Error() == "EOF" {
				return out
			}
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, o)
	}
}

// k8sManifests are deploy/kubernetes's ConfigMap, Deployment and Secret
// template, checked for their kinds and API versions.
type k8sManifests struct {
	caddyfile string // the ConfigMap's
	configMap k8sObject
	secret    k8sObject
	pod       podSpec
	sidecar   k8sContainer
	app       k8sContainer
}

func loadK8sManifests(t *testing.T) k8sManifests {
	t.Helper()
	var m k8sManifests
	objs := k8sObjects(t, "deployment.yaml")
	if len(objs) != 2 || objs[0].Kind != "ConfigMap" || objs[0].APIVersion != "v1" || objs[1].Kind != "Deployment" || objs[1].APIVersion != "apps/v1" {
		t.Fatalf("deployment.yaml: want a v1 ConfigMap and an apps/v1 Deployment, got %+v", objs)
	}
	m.configMap = objs[0]
	m.caddyfile = m.configMap.Data["Caddyfile"]
	d := objs[1]
	if d.Spec == nil || len(d.Spec.Selector.MatchLabels) == 0 {
		t.Fatal("the Deployment has no selector")
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Metadata.Labels[k] != v {
			t.Fatalf("the pod template's labels %v do not match the selector %v", d.Spec.Template.Metadata.Labels, d.Spec.Selector.MatchLabels)
		}
	}
	m.pod = d.Spec.Template.Spec
	if len(m.pod.InitContainers) != 1 || len(m.pod.Containers) != 1 {
		t.Fatalf("want one init container (the sidecar) and one container (the application), got %d and %d", len(m.pod.InitContainers), len(m.pod.Containers))
	}
	m.sidecar, m.app = m.pod.InitContainers[0], m.pod.Containers[0]

	secrets := k8sObjects(t, "secret.example.yaml")
	if len(secrets) != 1 || secrets[0].Kind != "Secret" || secrets[0].APIVersion != "v1" || secrets[0].Type != "Opaque" {
		t.Fatalf("secret.example.yaml: want one v1 Secret of type Opaque, got %+v", secrets)
	}
	m.secret = secrets[0]
	return m
}

func (m k8sManifests) volume(t *testing.T, name string) k8sVolume {
	t.Helper()
	for _, v := range m.pod.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return k8sVolume{}
}

// mountedBy lists the containers that mount the volume.
func (m k8sManifests) mountedBy(volume string) []string {
	var out []string
	for _, c := range append(slices.Clone(m.pod.InitContainers), m.pod.Containers...) {
		for _, vm := range c.VolumeMounts {
			if vm.Name == volume {
				out = append(out, c.Name)
			}
		}
	}
	return out
}

// mountOf returns the volume mounted at the directory of path in c, and
// that directory.
func mountOf(c k8sContainer, path string) (volume, dir string) {
	for _, vm := range c.VolumeMounts {
		if filepath.Dir(path) == vm.MountPath {
			return vm.Name, vm.MountPath
		}
	}
	return "", ""
}

var (
	adminRe  = regexp.MustCompile(`(?m)^\s*admin "unix/(/[^"|]+)\|0600"$`)
	bindRe   = regexp.MustCompile(`(?m)^\s*bind "unix/(/[^"|]+)\|0600"$`)
	fileRe   = regexp.MustCompile(`\{file\.(/[^}]+)\}`)
	secretRe = regexp.MustCompile(`(?m)^\s*(username|password|api_key|client_id|client_secret)\s+(\S+)`)
)

// TestKubernetesManifests checks what a reviewer of deploy/kubernetes
// would: a native sidecar, secrets as files only it reads, the admin API
// and the proxy on unix sockets only, probes that run the status command
// on the admin socket, a hardened securityContext, and a grace period
// that fits.
func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	m := loadK8sManifests(t)
	pod, sc, app := m.pod, m.sidecar, m.app

	// The pod: nothing of the node's, no service account token.
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Error("the pod shares the node's network, PIDs or IPC")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false: the pod needs no Kubernetes API token")
	}

	// A native sidecar (Kubernetes 1.29+): an init container that runs
	// as long as the pod.
	if sc.RestartPolicy != "Always" || app.RestartPolicy != "" {
		t.Errorf("restartPolicy: sidecar %q, app %q; want Always on the init container alone", sc.RestartPolicy, app.RestartPolicy)
	}
	if !regexp.MustCompile(`^ghcr\.io/apic-tools/apic-auth-proxy:v\d+\.\d+\.\d+$`).MatchString(sc.Image) {
		t.Errorf("sidecar image %q, want ghcr.io/apic-tools/apic-auth-proxy:v<version>", sc.Image)
	}
	if len(sc.Command) == 0 || sc.Command[0] != "apic-auth-proxy" || !slices.Contains(sc.Command, "run") {
		t.Errorf("sidecar command %q, want apic-auth-proxy run", sc.Command)
	}

	// Hardened containers: the pod's settings and each container's.
	ps := pod.SecurityContext
	for _, c := range []k8sContainer{sc, app} {
		if len(c.Ports) != 0 {
			t.Errorf("container %s declares ports: nothing listens on TCP", c.Name)
		}
		if len(c.EnvFrom) != 0 {
			t.Errorf("container %s has envFrom", c.Name)
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil {
				t.Errorf("container %s: env %s comes from %v: secrets are files, not variables", c.Name, e.Name, e.ValueFrom)
			}
		}
		cs := c.SecurityContext
		if cs == nil {
			t.Errorf("container %s has no securityContext", c.Name)
			continue
		}
		runAsNonRoot := cmpOr(cs.RunAsNonRoot, ps.RunAsNonRoot)
		runAsUser := cmpOr(cs.RunAsUser, ps.RunAsUser)
		seccomp := cmpOr(cs.SeccompProfile, ps.SeccompProfile)
		switch {
		case runAsNonRoot == nil || !*runAsNonRoot:
			t.Errorf("container %s: runAsNonRoot is not true", c.Name)
		case runAsUser == nil || *runAsUser == 0:
			// The image's user is root: runAsNonRoot needs a numeric user.
			t.Errorf("container %s: no runAsUser other than 0", c.Name)
		case seccomp == nil || seccomp.Type != "RuntimeDefault":
			t.Errorf("container %s: seccompProfile is not RuntimeDefault", c.Name)
		case cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem:
			t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
		case cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation:
			t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
		case cs.Privileged != nil && *cs.Privileged:
			t.Errorf("container %s is privileged", c.Name)
		case cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []string{"ALL"}) || len(cs.Capabilities.Add) != 0:
			t.Errorf("container %s: capabilities %+v, want drop [ALL] and none added", c.Name, cs.Capabilities)
		}
	}
	if *cmpOr(sc.SecurityContext.RunAsUser, ps.RunAsUser) != *cmpOr(app.SecurityContext.RunAsUser, ps.RunAsUser) {
		t.Error("the sidecar and the application run as different users: the 0600 socket would refuse the application")
	}

	// The admin API: a 0600 unix socket in a volume of the sidecar's alone.
	directives := regexp.MustCompile(`(?m)^\s*#.*\n`).ReplaceAllString(m.caddyfile, "")
	am := adminRe.FindStringSubmatch(directives)
	if am == nil || strings.Count(directives, "admin ") != 1 {
		t.Fatalf("the Caddyfile's admin is not one unix socket of mode 0600:\n%s", m.caddyfile)
	}
	adminSock := am[1]
	adminVol, _ := mountOf(sc, adminSock)
	if adminVol == "" || m.volume(t, adminVol).EmptyDir == nil || !slices.Equal(m.mountedBy(adminVol), []string{sc.Name}) {
		t.Errorf("the admin socket %s is not in an emptyDir mounted by the sidecar alone (volume %q, mounted by %v)", adminSock, adminVol, m.mountedBy(adminVol))
	}
	// The proxy: a 0600 unix socket in a volume of the sidecar's and the
	// application's.
	bm := bindRe.FindAllStringSubmatch(m.caddyfile, -1)
	if len(bm) != 1 || strings.Count(directives, "bind ") != 1 {
		t.Fatalf("the Caddyfile does not bind one unix socket of mode 0600:\n%s", m.caddyfile)
	}
	proxyVol, _ := mountOf(sc, bm[0][1])
	if proxyVol == "" || m.volume(t, proxyVol).EmptyDir == nil || !slices.Equal(m.mountedBy(proxyVol), []string{sc.Name, app.Name}) {
		t.Errorf("the proxy socket %s is not in an emptyDir mounted by the sidecar and the application (volume %q, mounted by %v)", bm[0][1], proxyVol, m.mountedBy(proxyVol))
	}
	if !strings.Contains(m.caddyfile, "persist_config off") {
		t.Error("the Caddyfile does not turn persist_config off: Caddy would write autosave.json")
	}

	// The probes: the status command on the admin socket, run inside the
	// sidecar; nothing reaches the admin API over the network.
	want := []string{"apic-auth-proxy", "status", "--address", "unix/" + adminSock}
	for name, p := range map[string]*k8sProbe{"startupProbe": sc.StartupProbe, "readinessProbe": sc.ReadinessProbe} {
		if p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, want) || p.HTTPGet != nil || p.TCPSocket != nil || p.GRPC != nil {
			t.Errorf("sidecar %s: %+v, want exec %q", name, p, want)
		} else if p.TimeoutSeconds < 2 {
			t.Errorf("sidecar %s: timeoutSeconds %d leaves the status command no time", name, p.TimeoutSeconds)
		}
	}
	if sc.LivenessProbe != nil {
		t.Error("the sidecar has a liveness probe: restarts would not fix a refused login, and each is a new login")
	}
	if app.StartupProbe != nil || app.ReadinessProbe != nil || app.LivenessProbe != nil {
		t.Log("the application has probes of its own")
	}

	// The credentials: files of the Secret, mode 0400, mounted read-only
	// into the sidecar alone; the Secret template holds placeholders.
	files := fileRe.FindAllStringSubmatch(m.caddyfile, -1)
	secretVol, secretDir := mountOf(sc, files[0][1])
	v := m.volume(t, secretVol)
	if v.Secret == nil || v.Secret.SecretName != m.secret.Metadata.Name {
		t.Fatalf("the credentials' volume %q is not the Secret %s", secretVol, m.secret.Metadata.Name)
	}
	if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o400 {
		t.Errorf("the Secret's defaultMode is %v, want 0400", v.Secret.DefaultMode)
	}
	if !slices.Equal(m.mountedBy(secretVol), []string{sc.Name}) {
		t.Errorf("the Secret is mounted by %v, want the sidecar alone", m.mountedBy(secretVol))
	}
	for _, vm := range sc.VolumeMounts {
		if vm.Name == secretVol && !vm.ReadOnly {
			t.Error("the Secret is not mounted readOnly")
		}
	}
	var keys []string
	for _, f := range files {
		if filepath.Dir(f[1]) != secretDir {
			t.Errorf("{file.%s} is not in the Secret's directory %s", f[1], secretDir)
		}
		keys = append(keys, filepath.Base(f[1]))
	}
	var templateKeys []string
	for k, val := range m.secret.StringData {
		templateKeys = append(templateKeys, k)
		if !regexp.MustCompile(`^<[a-zA-Z' ]+>$`).MatchString(val) {
			t.Errorf("the Secret template's %s is %q, want a <placeholder>", k, val)
		}
	}
	sort.Strings(keys)
	sort.Strings(templateKeys)
	if !slices.Equal(keys, templateKeys) {
		t.Errorf("the Caddyfile reads the files %v, the Secret template has %v", keys, templateKeys)
	}
	// Every credential setting reads a file: none is written out, or
	// taken from the environment ({env.*}) or at adapt time ({$...}).
	sm := secretRe.FindAllStringSubmatch(m.caddyfile, -1)
	if len(sm) == 0 {
		t.Fatal("the Caddyfile has no credential settings")
	}
	for _, s := range sm {
		if !strings.HasPrefix(s[2], "{file."+secretDir+"/") {
			t.Errorf("the Caddyfile's %s is %s, want {file.%s/...}", s[1], s[2], secretDir)
		}
	}

	// A stop fits: the application stops first, then the sidecar waits
	// up to its grace period for requests in flight and signs the session
	// out (bounded by 5 s).
	gm := regexp.MustCompile(`(?m)^\s*grace_period (\d+)s$`).FindStringSubmatch(m.caddyfile)
	if gm == nil {
		t.Fatal("the Caddyfile sets no grace_period: a stop would wait for requests without bound")
	}
	grace, _ := strconv.Atoi(gm[1])
	const signOut = 5
	if grace+signOut >= pod.TerminationGracePeriodSeconds {
		t.Errorf("grace_period %ds and the sign-out (%ds) do not fit in terminationGracePeriodSeconds %d", grace, signOut, pod.TerminationGracePeriodSeconds)
	}
}

// cmpOr returns the container's setting, else the pod's.
func cmpOr[T any](container, pod *T) *T {
	if container != nil {
		return container
	}
	return pod
}

// TestKubernetesSidecarRuns runs deploy/kubernetes's sidecar as kubelet
// would, in front of the simulator: the ConfigMap's Caddyfile and the
// container's command, environment and user, its volumes as directories
// (the Secret's files with the simulator's credentials), a root file
// system and home it cannot write to; then the probes' commands exactly as
// written, not ready while the first login is held back and ready once it
// is done, a request as the application makes it through the shared
// socket, and a stop by SIGTERM that signs the session out within the
// pod's termination grace period. The rewriting is this and no more: each
// volume's mount path becomes its directory, the command's and probes'
// apic-auth-proxy the built binary, APIC_SERVER the simulator's URL.
func TestKubernetesSidecarRuns(t *testing.T) {
	t.Parallel()
	m := loadK8sManifests(t)
	sc, app := m.sidecar, m.app
	ps := m.pod.SecurityContext

	// The simulator, its first token request held back until released.
	sim := simtest.New(t)
	up := newUpstream(t, sim)
	held, release := make(chan struct{}), make(chan struct{})
	up.beforeToken = func(n int, r *http.Request) {
		if n == 1 {
			close(held)
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // before srv.Close

	dir, err := os.MkdirTemp("", "aapk8s") // short: unix socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	asRoot := os.Geteuid() == 0
	// As root, the processes run as the pod's user, group and fsGroup;
	// otherwise as the test's user, with the same permissions.
	var cred *syscall.Credential
	if asRoot {
		cred = &syscall.Credential{Uid: *cmpOr(sc.SecurityContext.RunAsUser, ps.RunAsUser), Gid: *cmpOr(sc.SecurityContext.RunAsGroup, ps.RunAsGroup), Groups: []uint32{*ps.FSGroup}}
	}
	mustDo(t, os.Chmod(dir, 0o755))

	// The image: the binary, and a root file system and home that cannot
	// be written (the image sets XDG_CONFIG_HOME=/config and
	// XDG_DATA_HOME=/data).
	binDir := filepath.Join(dir, "bin")
	mustDo(t, os.Mkdir(binDir, 0o755))
	bin := filepath.Join(binDir, "apic-auth-proxy")
	if err := os.Link(binary(t), bin); err != nil {
		data, err := os.ReadFile(binary(t))
		mustDo(t, err)
		mustDo(t, os.WriteFile(bin, data, 0o755))
	}
	mustDo(t, os.Chmod(bin, 0o755))
	rootfs := filepath.Join(dir, "rootfs")
	mustDo(t, os.Mkdir(rootfs, 0o555))

	// The volumes, as kubelet makes them.
	volDir := func(name string) string { return filepath.Join(dir, "vol-"+name) }
	creds := map[string]string{
		"username": apicsim.DefaultProviderUsername, "password": apicsim.DefaultProviderPassword,
		"client_id": apicsim.DefaultClientID, "client_secret": apicsim.DefaultClientSecret,
	}
	for _, v := range m.pod.Volumes {
		d := volDir(v.Name)
		switch {
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != m.configMap.Metadata.Name {
				t.Fatalf("volume %s: ConfigMap %s is not deployment.yaml's", v.Name, v.ConfigMap.Name)
			}
			mustDo(t, os.Mkdir(d, 0o755))
			for k, text := range m.configMap.Data {
				mustDo(t, os.WriteFile(filepath.Join(d, k), []byte(text), 0o644))
			}
		case v.Secret != nil:
			mustDo(t, os.Mkdir(d, 0o755))
			for k := range m.secret.StringData {
				val, ok := creds[k]
				if !ok {
					t.Fatalf("the Secret's key %s is none of the simulator's credentials", k)
				}
				f := filepath.Join(d, k)
				mustDo(t, os.WriteFile(f, []byte(val), 0o600))
				mode := *v.Secret.DefaultMode
				if asRoot {
					// kubelet gives the files to the fsGroup, readable by it.
					mustDo(t, os.Chown(f, 0, int(*ps.FSGroup)))
					mode |= 0o440
				}
				mustDo(t, os.Chmod(f, mode))
			}
		case v.EmptyDir != nil:
			mustDo(t, os.Mkdir(d, 0o777))
			mustDo(t, os.Chmod(d, 0o777))
		default:
			t.Fatalf("volume %s: not a ConfigMap, Secret or emptyDir", v.Name)
		}
	}
	// mapPaths rewrites c's mount paths to the volumes' directories.
	mapPaths := func(c k8sContainer, s string) string {
		for _, vm := range c.VolumeMounts {
			s = strings.ReplaceAll(s, vm.MountPath+"/", volDir(vm.Name)+"/")
		}
		return s
	}
	caddyfile := mapPaths(sc, m.caddyfile)
	if strings.Contains(caddyfile, "/run/") || strings.Contains(caddyfile, "/etc/") {
		t.Fatalf("the Caddyfile names paths outside the sidecar's volumes:\n%s", caddyfile)
	}
	cfgVol := m.volume(t, "caddyfile")
	mustDo(t, os.WriteFile(filepath.Join(volDir(cfgVol.Name), "Caddyfile"), []byte(caddyfile), 0o644))

	// The sidecar's environment: the image's, then the container's.
	environ := []string{
		"PATH=" + binDir + ":/usr/bin:/bin", "HOME=" + rootfs,
		"XDG_CONFIG_HOME=" + filepath.Join(rootfs, "config"), "XDG_DATA_HOME=" + filepath.Join(rootfs, "data"),
		"TMPDIR=" + filepath.Join(rootfs, "tmp"),
	}
	if raceEnabled {
		environ = append(environ, "GORACE=atexit_sleep_ms=50")
	}
	server := false
	for _, e := range sc.Env {
		val := mapPaths(sc, e.Value)
		if e.Name == "APIC_SERVER" {
			val, server = srv.URL, true
		}
		environ = append(environ, e.Name+"="+val)
	}
	if !server {
		t.Fatal("the sidecar has no APIC_SERVER to point at the simulator")
	}
	containerCmd := func(c k8sContainer, args []string) *exec.Cmd {
		args = slices.Clone(args)
		if args[0] != "apic-auth-proxy" {
			t.Fatalf("%q does not run apic-auth-proxy", args)
		}
		args[0] = bin
		for i := range args {
			args[i] = mapPaths(c, args[i])
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env, cmd.Dir = environ, rootfs
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		return cmd
	}

	// Start the sidecar; Caddy logs to standard error, as kubectl logs
	// shows it.
	proxy := containerCmd(sc, append(slices.Clone(sc.Command), sc.Args...))
	logs := newLineLog()
	proxy.Stdout, proxy.Stderr = logs, logs
	mustDo(t, proxy.Start())
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = proxy.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = proxy.Process.Kill()
		<-exited
	})
	select {
	case <-held:
	case <-exited:
		t.Fatalf("the sidecar exited: %v\n%s", waitErr, logs)
	case <-time.After(startBound):
		t.Fatalf("no login within %s:\n%s", startBound, logs)
	}

	// Logging in: both probes fail with exit status 2 (not ready).
	probe := func(name string, p *k8sProbe) command {
		c := run(t, containerCmd(sc, p.Exec.Command))
		t.Logf("%s: exit status %d\n%s%s", name, c.code, c.stdout, c.stderr)
		return c
	}
	for name, p := range map[string]*k8sProbe{"startupProbe": sc.StartupProbe, "readinessProbe": sc.ReadinessProbe} {
		if c := probe(name, p); c.code != 2 || !strings.Contains(c.stdout, "apim") || strings.Contains(c.stdout, " valid ") {
			t.Fatalf("%s while the login is held: exit status %d, want 2 and the identity not valid", name, c.code)
		}
	}

	// Logged in: the ready line, then both probes pass.
	releaseOnce()
	logs.await(t, "the ready line", exited, func(s string) bool { return strings.Contains(s, `"msg":"apic_auth ready`) })
	for name, p := range map[string]*k8sProbe{"startupProbe": sc.StartupProbe, "readinessProbe": sc.ReadinessProbe} {
		if c := probe(name, p); c.code != 0 || !regexp.MustCompile(`(?m)^apim\s+developer\s+valid\s`).MatchString(c.stdout) {
			t.Fatalf("%s once logged in: exit status %d, want 0 and the identity valid", name, c.code)
		}
	}

	// The sockets: mode 0600, of the pod's user.
	for _, re := range []*regexp.Regexp{adminRe, bindRe} {
		path := mapPaths(sc, re.FindStringSubmatch(m.caddyfile)[1])
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want a socket of mode 0600", path, fi, err)
		}
	}

	// The application: curl through the socket its volume holds, as its
	// user, with its environment's APIC_PROXY_SOCKET.
	var sock string
	for _, e := range app.Env {
		if e.Name == "APIC_PROXY_SOCKET" {
			sock = mapPaths(app, e.Value)
		}
	}
	if sock == "" {
		t.Fatal("the application has no APIC_PROXY_SOCKET")
	}
	curl := exec.Command("curl", "-sS", "--fail-with-body", "--unix-socket", sock, "http://localhost/api/me")
	if asRoot {
		curl.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid: *cmpOr(app.SecurityContext.RunAsUser, ps.RunAsUser), Gid: *cmpOr(app.SecurityContext.RunAsGroup, ps.RunAsGroup), Groups: []uint32{*ps.FSGroup}}}
	}
	c := run(t, curl)
	var me struct{ Username string }
	if c.code != 0 || json.Unmarshal([]byte(c.stdout), &me) != nil || me.Username != apicsim.DefaultProviderUsername {
		t.Fatalf("the application's curl: exit status %d: %s%s", c.code, c.stdout, c.stderr)
	}
	t.Logf("the application's curl --unix-socket %s http://localhost/api/me:\n%s", sock, c.stdout)
	up.mu.Lock()
	seen := slices.Clone(up.auth)
	up.mu.Unlock()
	if len(seen) != 1 || !strings.HasPrefix(seen[0], "Bearer ey") {
		t.Fatalf("API Manager saw Authorization %q, want the proxy's token", seen)
	}

	// kubelet stops the sidecar with SIGTERM, and kills it after the
	// termination grace period: it exits before, signed out.
	mustDo(t, proxy.Process.Signal(syscall.SIGTERM))
	select {
	case <-exited:
	case <-time.After(time.Duration(m.pod.TerminationGracePeriodSeconds) * time.Second):
		t.Fatalf("the sidecar did not exit within terminationGracePeriodSeconds:\n%s", logs)
	}
	if waitErr != nil {
		t.Fatalf("the sidecar exited with %v:\n%s", waitErr, logs)
	}
	if n := sim.Stats().Paths["/api/me/sign-out"]; n != 1 {
		t.Fatalf("%d sign-outs, want 1:\n%s", n, logs)
	}

	// Nothing failed for want of a writable directory: no error in the
	// log, no warning but the ones listed.
	for line := range strings.Lines(logs.String()) {
		var entry struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		switch {
		case entry.Level == "error" || entry.Level == "fatal" || entry.Level == "panic":
			t.Errorf("the sidecar logged an error: %s", line)
		case entry.Level == "warn" && !slices.Contains(sidecarWarnings, entry.Msg):
			t.Errorf("the sidecar logged a warning: %s", line)
		}
	}
}

// sidecarWarnings are the warnings Caddy logs for the sidecar's config:
// its admin API on a unix socket, its exit on a signal.
var sidecarWarnings = []string{"admin endpoint on open interface; host checking disabled", "exiting; byeee!! 👋"}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// lineLog collects a process's output, and says when more has come.
type lineLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.changed)
	l.changed = make(chan struct{})
	return l.buf.Write(p)
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// await waits until a complete line satisfies match, or fails the test
// when the process exits first; the deadline only ends a broken test.
func (l *lineLog) await(t *testing.T, what string, exited <-chan struct{}, match func(string) bool) {
	t.Helper()
	timer := time.NewTimer(awaitBound)
	defer timer.Stop()
	for {
		l.mu.Lock()
		changed, text := l.changed, l.buf.String()
		l.mu.Unlock()
		for line := range strings.Lines(text) {
			if strings.HasSuffix(line, "\n") && match(line) {
				return
			}
		}
		select {
		case <-changed:
		case <-exited:
			t.Fatalf("waiting for %s: the process exited:\n%s", what, text)
		case <-timer.C:
			t.Fatalf("no %s within %s:\n%s", what, awaitBound, text)
		}
	}
}
