package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// binary is the apic-auth-proxy built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "apic-auth-proxy-cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "apic-auth-proxy")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binary:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// bound ends a broken test; no test waits for it to pass.
const bound = 60 * time.Second

// cliEnv is the environment of the binary: its own home, so that Caddy
// writes no autosave or storage outside dir, and its admin API on a unix
// socket in dir.
func cliEnv(dir string) []string {
	return append(os.Environ(),
		"HOME="+dir,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"CADDY_ADMIN=unix/"+filepath.Join(dir, "admin.sock"),
	)
}

// runBinary runs the binary with args in dir to its end and returns its
// output and exit status.
func runBinary(t *testing.T, dir string, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir, cmd.Env = dir, cliEnv(dir)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		status = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", binary, args, err)
	}
	return out.String(), errOut.String(), status
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {}} {
		out, errOut, status := runBinary(t, t.TempDir(), args...)
		if status != 0 {
			t.Fatalf("%v: exit status %d\n%s", args, status, errOut)
		}
		if !strings.HasPrefix(out, "apic-auth-proxy is a local authenticating reverse proxy") {
			t.Errorf("%v does not lead with the program's description:\n%s", args, out)
		}
		own, caddys := strings.Index(out, "\nCommands:\n"), strings.Index(out, "\nCaddy's commands:\n")
		if own < 0 || caddys < own {
			t.Fatalf("%v: want the program's commands, then Caddy's:\n%s", args, out)
		}
		for _, name := range []string{"apic-proxy", "apic-token", "apic-register", "apic-realms", "version"} {
			if i := strings.Index(out, "\n  "+name+" "); i < own || i > caddys {
				t.Errorf("%v: %s is not among the program's commands", args, name)
			}
		}
		for _, name := range []string{"run", "validate", "adapt", "reload", "fmt", "list-modules"} {
			if i := strings.Index(out, "\n  "+name+" "); i < caddys {
				t.Errorf("%v: %s is not among Caddy's commands", args, name)
			}
		}
		for _, name := range []string{"upgrade", "add-package", "remove-package"} {
			if strings.Contains(out, "\n  "+name+" ") {
				t.Errorf("%v lists %s", args, name)
			}
		}
		if !strings.Contains(out, "Usage:\n  apic-auth-proxy [command]") || regexp.MustCompile(`(?m)^\s+(\$ )?caddy `).MatchString(out) {
			t.Errorf("%v: want usage lines of apic-auth-proxy, not caddy:\n%s", args, out)
		}
	}
}

func TestCommandUsageLines(t *testing.T) {
	for cmd, want := range map[string]string{
		"apic-proxy": "Usage:\n  apic-auth-proxy apic-proxy [--from <addr>]",
		"apic-token": "Usage:\n  apic-auth-proxy apic-token",
		"run":        "Usage:\n  apic-auth-proxy run [--config <path>",
		"validate":   "Usage:\n  apic-auth-proxy validate --config <path>",
	} {
		out, errOut, status := runBinary(t, t.TempDir(), cmd, "--help")
		if status != 0 || !strings.Contains(out, want) {
			t.Errorf("%s --help: status %d, want %q in:\n%s%s", cmd, status, want, out, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Fatal("no build info in the test binary")
	}
	var caddyVersion string
	for _, dep := range bi.Deps {
		if dep.Path == caddyModule {
			caddyVersion = dep.Version
		}
	}
	if !strings.HasPrefix(caddyVersion, "v2.") {
		t.Fatalf("Caddy's version in the test's build: %q", caddyVersion)
	}
	want := regexp.MustCompile(`^apic-auth-proxy \S.* \(Caddy ` + regexp.QuoteMeta(caddyVersion) + `\)\n$`)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, errOut, status := runBinary(t, t.TempDir(), args...)
		if status != 0 || !want.MatchString(out) {
			t.Errorf("%v: status %d, printed %q, want %s\n%s", args, status, out, want, errOut)
		}
	}
}

func TestFormatVersion(t *testing.T) {
	caddyDep := &debug.Module{Path: caddyModule, Version: "v2.11.9"}
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"release", &debug.BuildInfo{Main: debug.Module{Version: "v0.3.0"}, Deps: []*debug.Module{caddyDep}}, "apic-auth-proxy v0.3.0 (Caddy v2.11.9)"},
		{"checkout", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Deps: []*debug.Module{caddyDep}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0c10fddb2a8e4f7c9d1e3a5b7c9d1e3a5b7c9d1e"},
			{Key: "vcs.time", Value: "2026-12-02T01:56:00Z"},
			{Key: "vcs.modified", Value: "true"},
		}}, "apic-auth-proxy (devel) 0c10fddb2a8e 2026-12-02T01:56:00Z modified (Caddy v2.11.9)"},
		{"clean checkout", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Deps: []*debug.Module{caddyDep}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0c10fdd"}, {Key: "vcs.modified", Value: "false"},
		}}, "apic-auth-proxy (devel) 0c10fdd (Caddy v2.11.9)"},
		{"replaced Caddy", &debug.BuildInfo{Main: debug.Module{Version: "v0.3.1"}, Deps: []*debug.Module{
			{Path: caddyModule, Version: "v2.11.9", Replace: &debug.Module{Path: "example.com/caddy", Version: "v2.12.0"}},
		}}, "apic-auth-proxy v0.3.1 (Caddy v2.12.0)"},
	} {
		if got := formatVersion(tc.bi); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRemovedCommands(t *testing.T) {
	for _, name := range []string{"upgrade", "add-package", "remove-package"} {
		_, errOut, status := runBinary(t, t.TempDir(), name)
		if status != 1 || !strings.Contains(errOut, `unknown command "`+name+`"`) {
			t.Errorf("%s: status %d, stderr %q; want 1 and an unknown command", name, status, errOut)
		}
	}
}

// TestExitStatus checks that a Caddy command's exit status reaches the
// process, as with Caddy's own Main.
func TestExitStatus(t *testing.T) {
	runE := caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return 3, errors.New("failed quitting") })
	err := runE(&cobra.Command{}, nil)
	if got := exitStatus(err); got != 3 {
		t.Errorf("exitStatus(%v) = %d, want 3", err, got)
	}
	if got := exitStatus(errors.New("plain")); got != 1 {
		t.Errorf("exitStatus of a plain error = %d, want 1", got)
	}
}

// badRealm is a Caddyfile whose apic_auth handler has a malformed realm.
const badRealm = `{
	admin off
}
http://127.0.0.1:0 {
	apic_auth {
		server https://apim.example.com
		realm nonsense
		username me
		password {env.APIC_CLI_TEST_PASSWORD}
		client_id id
		client_secret {env.APIC_CLI_TEST_PASSWORD}
	}
	respond ok
}
`

func TestConfigErrorWithoutCaddysChain(t *testing.T) {
	t.Setenv("APIC_CLI_TEST_PASSWORD", "s3cret-Value")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte(badRealm), 0o600); err != nil {
		t.Fatal(err)
	}
	const want = "Error: apic_auth: realm \"nonsense\": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://apim.example.com\nin server srv0, route 0 > 0\n"
	for _, args := range [][]string{
		{"validate", "--config", "Caddyfile"},
		{"run", "--config", "Caddyfile"},
		{"adapt", "--config", "Caddyfile", "--validate"},
	} {
		_, errOut, status := runBinary(t, dir, args...)
		if status != 1 || !strings.HasSuffix(errOut, want) {
			t.Errorf("%v: status %d, want 1 and stderr ending in %q:\n%s", args, status, want, errOut)
		}
		if strings.Contains(errOut, "s3cret-Value") {
			t.Errorf("%v: stderr holds the password", args)
		}
	}

	// Another error is Caddy's alone.
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("http://127.0.0.1:0 {\n\tnot_a_directive\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, status := runBinary(t, dir, "validate", "--config", "Caddyfile")
	if status != 1 || !strings.Contains(errOut, "not_a_directive") || strings.Contains(errOut, "Error: ") {
		t.Errorf("validate of an unknown directive: status %d, stderr:\n%s", status, errOut)
	}
}

// started is a run of the binary in the background.
type started struct {
	cmd   *exec.Cmd
	lines chan string // its stderr, line by line
	seen  []string
}

// start runs the binary with args in dir until the test ends.
func start(t *testing.T, dir string, args ...string) *started {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir, cmd.Env = dir, cliEnv(dir)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &started{cmd: cmd, lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		for range s.lines {
		}
		_ = cmd.Wait()
	})
	return s
}

// await returns the first line logged from now on that holds all of want.
func (s *started) await(t *testing.T, want ...string) string {
	t.Helper()
	timeout := time.After(bound)
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				t.Fatalf("the process ended before logging %q:\n%s", want, strings.Join(s.seen, "\n"))
			}
			s.seen = append(s.seen, line)
			all := true
			for _, w := range want {
				all = all && strings.Contains(line, w)
			}
			if all {
				return line
			}
		case <-timeout:
			t.Fatalf("no line with %q in %s:\n%s", want, bound, strings.Join(s.seen, "\n"))
		}
	}
}

func (s *started) hangup(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// respondingCaddyfile serves body on the unix socket sock.
func respondingCaddyfile(sock, body string) string {
	return fmt.Sprintf("{\n\tadmin off\n}\nhttp:// {\n\tbind unix/%s\n\trespond %q\n}\n", sock, body)
}

func TestHangupReloadsTheConfigFile(t *testing.T) {
	t.Setenv("APIC_CLI_TEST_PASSWORD", "s3cret-Value")
	dir := t.TempDir()
	sock := filepath.Join(dir, "proxy.sock")
	file := filepath.Join(dir, "Caddyfile")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	client := &http.Client{Timeout: bound, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	get := func() string {
		t.Helper()
		resp, err := client.Get("http://localhost/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	write(respondingCaddyfile(sock, "one"))
	p := start(t, dir, "run", "--config", "Caddyfile")
	p.await(t, "serving initial configuration")
	if got := get(); got != "one" {
		t.Fatalf("before SIGHUP: %q, want one", got)
	}

	for _, body := range []string{"two", "three"} {
		write(respondingCaddyfile(sock, body))
		p.hangup(t)
		p.await(t, `"msg":"reloaded config from file"`, `"signal":"SIGHUP"`, `"file":"Caddyfile"`)
		if got := get(); got != body {
			t.Fatalf("after SIGHUP: %q, want %s", got, body)
		}
	}

	// A bad config is refused; the running one stays.
	write(strings.Replace(badRealm, "http://127.0.0.1:0 {", "http:// {\n\tbind unix/"+sock, 1))
	p.hangup(t)
	p.await(t, `"level":"error"`, "reloading config failed; the running config stays", `apic_auth: realm \"nonsense\": want <scope>/<identity provider>`)
	if got := get(); got != "three" {
		t.Fatalf("after a bad config: %q, want three (the running config)", got)
	}
	for _, line := range p.seen[slicesIndex(p.seen, "reloaded config from file"):] {
		if strings.Contains(line, "not implemented") {
			t.Errorf("a later SIGHUP still reaches Caddy's trap: %s", line)
		}
	}
}

// slicesIndex is the index of the first line holding s.
func slicesIndex(lines []string, s string) int {
	for i, l := range lines {
		if strings.Contains(l, s) {
			return i
		}
	}
	return len(lines)
}

func TestHangupWithoutConfigFile(t *testing.T) {
	p := start(t, t.TempDir(), "run")
	p.await(t, "serving initial configuration")
	p.hangup(t)
	line := p.await(t, "nothing to reload")
	if !strings.Contains(line, `"level":"info"`) || !strings.Contains(line, `"signal":"SIGHUP"`) {
		t.Errorf("logged %s, want it at info with the signal", line)
	}
}
