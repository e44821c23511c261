package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// workflow is the part of a GitHub Actions workflow that
// deploy/ci/github-actions.yml uses.
type workflow struct {
	Name        string            `yaml:"name"`
	On          map[string]any    `yaml:"on"`
	Permissions map[string]string `yaml:"permissions"`
	Defaults    struct {
		Run struct {
			Shell string `yaml:"shell"`
		} `yaml:"run"`
	} `yaml:"defaults"`
	Jobs map[string]struct {
		RunsOn         string            `yaml:"runs-on"`
		TimeoutMinutes int               `yaml:"timeout-minutes"`
		Env            map[string]string `yaml:"env"`
		Steps          []workflowStep    `yaml:"steps"`
	} `yaml:"jobs"`
}

type workflowStep struct {
	Name string            `yaml:"name"`
	ID   string            `yaml:"id"`
	Uses string            `yaml:"uses"`
	With map[string]string `yaml:"with"`
	If   string            `yaml:"if"`
	Env  map[string]string `yaml:"env"`
	Run  string            `yaml:"run"`
}

// expressionRe is a ${{ ... }} expression of a workflow.
var expressionRe = regexp.MustCompile(`\$\{\{\s*([^}]*?)\s*\}\}`)

// TestGitHubActionsExample runs the run: steps of
// deploy/ci/github-actions.yml in order with bash, as the runner does,
// against the simulator: the repository's variables and secrets are the
// simulator's, RUNNER_TEMP a temporary directory, and apic-auth-proxy on
// PATH the built binary, in place of the install step (skipped, after
// checking what it installs), and of the uses: steps (skipped). The call
// step's output must be the simulator's, and the stop step must end the
// proxy, signed out.
func TestGitHubActionsExample(t *testing.T) {
	t.Parallel()
	var wf workflow
	dec := yaml.NewDecoder(bytes.NewReader(deployFile(t, "ci/github-actions.yml")))
	dec.KnownFields(true)
	mustDo(t, dec.Decode(&wf))
	if len(wf.Jobs) != 1 {
		t.Fatalf("want one job, got %d", len(wf.Jobs))
	}
	if wf.Permissions["contents"] != "read" || len(wf.Permissions) != 1 {
		t.Errorf("permissions %v, want contents: read alone", wf.Permissions)
	}
	if wf.Defaults.Run.Shell != "bash" {
		t.Fatalf("defaults.run.shell is %q, want bash", wf.Defaults.Run.Shell)
	}

	sim, srv := simtest.Start(t)
	vars := map[string]string{
		"APIC_SERVER": srv.URL, "APIC_REALM": apicsim.DefaultProviderRealm,
		"APIC_USERNAME": apicsim.DefaultProviderUsername, "APIC_CLIENT_ID": apicsim.DefaultClientID,
	}
	secrets := map[string]string{"APIC_PASSWORD": apicsim.DefaultProviderPassword, "APIC_CLIENT_SECRET": apicsim.DefaultClientSecret}

	dir, err := os.MkdirTemp("", "aapci") // short: unix socket paths
	mustDo(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	binDir, runnerTemp, home := filepath.Join(dir, "bin"), filepath.Join(dir, "_temp"), filepath.Join(dir, "home")
	for _, d := range []string{binDir, runnerTemp, home} {
		mustDo(t, os.Mkdir(d, 0o700))
	}
	mustDo(t, os.Symlink(binary(t), filepath.Join(binDir, "apic-auth-proxy")))
	base := []string{"PATH=" + binDir + ":" + os.Getenv("PATH"), "HOME=" + home, "RUNNER_TEMP=" + runnerTemp}
	if raceEnabled {
		base = append(base, "GORACE=atexit_sleep_ms=50")
	}

	// expand resolves a value's ${{ vars.X }} and ${{ secrets.X }}; any
	// other expression fails the test.
	expand := func(where, s string) string {
		return expressionRe.ReplaceAllStringFunc(s, func(expr string) string {
			e := expressionRe.FindStringSubmatch(expr)[1]
			kind, name, _ := strings.Cut(e, ".")
			src := map[string]map[string]string{"vars": vars, "secrets": secrets}[kind]
			v, ok := src[name]
			if !ok {
				t.Fatalf("%s: ${{ %s }} is neither a known variable nor secret", where, e)
			}
			return v
		})
	}

	var pgids []int
	t.Cleanup(func() {
		// What a step left running, should the stop step not run.
		for _, g := range pgids {
			_ = syscall.Kill(-g, syscall.SIGKILL)
		}
	})
	failed := false
	outputs := map[string]string{}
	for _, job := range wf.Jobs {
		for i, st := range job.Steps {
			label := st.Name
			if label == "" {
				label = st.Uses
			}
			switch {
			case st.Uses != "":
				t.Logf("step %d (%s): skipped, an action", i+1, label)
				continue
			case st.ID == "install":
				want := "go install \"github.com/apic-tools/apic-auth-proxy/cmd/apic-auth-proxy@$APIC_AUTH_PROXY_VERSION\""
				if strings.TrimSpace(st.Run) != want || !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(job.Env["APIC_AUTH_PROXY_VERSION"]) {
					t.Fatalf("the install step runs %q with version %q, want %s of a release", st.Run, job.Env["APIC_AUTH_PROXY_VERSION"], want)
				}
				t.Logf("step %d (%s): skipped, the built binary is on PATH", i+1, label)
				continue
			case failed && st.If != "always()":
				t.Logf("step %d (%s): skipped after a failure", i+1, label)
				continue
			}
			if expressionRe.MatchString(st.Run) {
				t.Errorf("step %s: an expression in run: %q (a secret there would be in the script's text)", label, st.Run)
			}
			env := append([]string(nil), base...)
			for _, m := range []map[string]string{job.Env, st.Env} {
				for k, v := range m {
					env = append(env, k+"="+expand(label, v))
				}
			}
			for _, v := range secrets {
				if strings.Contains(st.Run, v) {
					t.Fatalf("step %s holds a secret in its script", label)
				}
			}
			script := filepath.Join(dir, "step.sh")
			mustDo(t, os.WriteFile(script, []byte(st.Run), 0o600))
			// The runner's command line for shell: bash.
			cmd := exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", script)
			cmd.Env, cmd.Dir = env, home
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			out := newLineLog()
			cmd.Stdout, cmd.Stderr = out, out
			// A step ends when its shell does: a background process
			// holding the output open would hang it.
			cmd.WaitDelay = 10 * time.Second
			mustDo(t, cmd.Start())
			pgids = append(pgids, cmd.Process.Pid)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(time.Duration(job.TimeoutMinutes) * time.Minute):
				t.Fatalf("step %s outlived the job's timeout:\n%s", label, out)
			}
			outputs[label] = out.String()
			t.Logf("step %d (%s): %v\n%s", i+1, label, cmdResult(err), out)
			if err != nil {
				t.Errorf("step %s failed: %v", label, err)
				failed = true
			}
		}
	}
	if failed {
		t.FailNow()
	}

	call := outputs["Call the platform API"]
	if !strings.Contains(call, `"username":"developer"`) || !strings.Contains(call, `"type":"org"`) {
		t.Errorf("the call step printed %q, want /api/me and /api/orgs of the simulator", call)
	}
	if n := sim.Stats().Paths["/api/me/sign-out"]; n != 1 {
		t.Errorf("%d sign-outs after the stop step, want 1", n)
	}
	if n := sim.TokenRequests("", ""); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
	pid, err := os.ReadFile(filepath.Join(runnerTemp, "apic-auth-proxy.pid"))
	mustDo(t, err)
	if _, err := os.Stat("/proc/" + strings.TrimSpace(string(pid))); err == nil {
		t.Errorf("the proxy (pid %s) still runs after the stop step", pid)
	}
	for _, s := range []string{"apic-auth-proxy.sock", "apic-auth-proxy-admin.sock"} {
		if _, err := os.Stat(filepath.Join(runnerTemp, s)); err == nil {
			t.Errorf("%s is left after the stop step", s)
		}
	}
}

// cmdResult says how a step's shell ended.
func cmdResult(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
