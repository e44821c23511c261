// Package e2e tests apic-auth-proxy from the outside: the binary users run
// (go build ./cmd/apic-auth-proxy), in a process of its own for each test,
// in front of the API Connect simulator on a loopback port, driven by real
// HTTP clients over the sockets its Caddyfile binds.
//
// The tests see only what a user or an operator sees: answers through the
// proxy, Caddy's admin API (/apic_auth/status, /apic_auth/refresh,
// /metrics, /load for reloads, /debug/pprof for the goroutine check), the
// simulator's counters and what reached it, and the proxy's log file, where
// Caddy's events app logs every event at debug level (a config asks for the
// events app with the events global option). Nothing here imports the
// module's code.
//
// Why processes rather than caddy.Load in the test binary: Caddy's running
// config is process-global, so in-process tests must run one after
// another. With a process each, the tests run in parallel (t.Parallel),
// each with its own environment for the {env.*} secrets (t.Setenv rules
// out t.Parallel), and a test that waits on real time (a refresh of a
// 3-second token) costs its wait alongside the others rather than after
// them. A process starts in about 0.15 s (0.9 s when built with -race) and
// says it is ready with Caddy's own --pingback, so no test polls for a
// socket. Its end is checked as well: no goroutine started by apic_auth
// outlives its config, the process exits on SIGINT with status 0 after its
// requests are done, and neither its log nor its standard error holds a
// panic or a data race report.
//
// The binary is built once per test binary, at the first test that needs
// it (so go test -list builds nothing), with -race when the tests run with
// it: the race detector then watches the proxy's own code under the
// tests' traffic.
//
// The proxy runs on real time. Faults come from counts (the simulator's
// queued faults, after N answers, at the Nth token request), never from
// time windows, and tests wait on what they can observe (the simulator's
// counters, answers, the admin API); a deadline only bounds a broken test.
// Where a token must be refreshed, the simulator issues 3-second tokens.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// raceEnabled is set by race_test.go when the tests run with -race.
var raceEnabled bool

// binDir holds the binary; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "apic-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build is one build of the binary, made at the first call of path.
type build struct {
	once sync.Once
	path string
	err  error
}

var (
	// raceBuild is the binary the tests run: with -race when the tests
	// run with it, so that the race detector watches the proxy's code
	// under the tests' traffic.
	raceBuild = &build{}
	// plainBuild is built without -race, for the fleet tests' many
	// processes: a proxy with the race detector takes about 1.3 s of CPU
	// to start (its own code and the shared session's key derivation),
	// twenty at once a minute on 2 cores. The same code runs under the
	// race detector in every other test.
	plainBuild = &build{}
)

// binary returns the path of the apic-auth-proxy binary, building it on
// the first call.
func binary(t *testing.T) string {
	t.Helper()
	return raceBuild.get(t, "apic-auth-proxy", raceEnabled)
}

// plainBinary returns the path of the binary built without -race.
func plainBinary(t *testing.T) string {
	t.Helper()
	if !raceEnabled {
		return binary(t)
	}
	return plainBuild.get(t, "apic-auth-proxy-plain", false)
}

func (b *build) get(t *testing.T, name string, race bool) string {
	t.Helper()
	b.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			b.err = fmt.Errorf("building the binary needs the go command: %v", err)
			return
		}
		path := filepath.Join(binDir, name)
		args := []string{"build", "-o", path}
		if race {
			args = append(args, "-race")
		}
		args = append(args, "github.com/apic-tools/apic-auth-proxy/cmd/apic-auth-proxy")
		if out, err := exec.Command(goTool, args...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		b.path = path
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}
