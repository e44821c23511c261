package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// proc is one run of the binary (the quick start, or run with a config)
// whose standard error the test reads line by line.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	ready  chan string   // the ready line, once
	line   chan struct{} // a new line arrived (buffered: 1)
	exited chan struct{} // closed when the process has exited
	err    error         // how it exited, once exited is closed
}

// startProc runs the binary with args and the simulator's developer user
// in APIC_* variables (vars override them), in a home of its own. It is
// killed when the test ends, if still running.
func startProc(t *testing.T, sim string, vars map[string]string, args ...string) *proc {
	t.Helper()
	home := t.TempDir()
	env := []string{
		"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "XDG_DATA_HOME=" + filepath.Join(home, "data"),
		"TMPDIR=" + os.TempDir(),
		"APIC_SERVER=" + sim, "APIC_REALM=" + apicsim.DefaultProviderRealm,
		"APIC_USERNAME=" + apicsim.DefaultProviderUsername, "APIC_PASSWORD=" + apicsim.DefaultProviderPassword,
		"APIC_CLIENT_ID=" + apicsim.DefaultClientID, "APIC_CLIENT_SECRET=" + apicsim.DefaultClientSecret,
	}
	if raceEnabled {
		env = append(env, "GORACE=atexit_sleep_ms=50")
	}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	p := &proc{t: t, ready: make(chan string, 1), line: make(chan struct{}, 1), exited: make(chan struct{})}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Env = env
	p.cmd.Dir = home
	p.cmd.SysProcAttr = procAttr
	p.cmd.Stdout = io.Discard
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			select {
			case p.line <- struct{}{}:
			default:
			}
			if strings.HasPrefix(line, "ready: ") {
				p.ready <- line
			}
		}
	}()
	go func() {
		<-read // Wait closes the pipe: read it to the end first
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(os.Interrupt)
			select {
			case <-p.exited:
			case <-time.After(startBound):
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if s := p.stderr(); strings.Contains(s, "DATA RACE") || strings.Contains(s, "panic") {
			t.Errorf("the process reports a race or a panic:\n%s", s)
		}
	})
	return p
}

func (p *proc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// awaitReady returns the ready line, failing the test if the process
// exits first.
func (p *proc) awaitReady() string {
	p.t.Helper()
	select {
	case line := <-p.ready:
		return line
	case <-p.exited:
		p.t.Fatalf("the proxy exited before it was ready: %v\n%s", p.err, p.stderr())
	case <-time.After(startBound):
		p.t.Fatalf("the proxy was not ready within %s:\n%s", startBound, p.stderr())
	}
	return ""
}

// awaitExit waits for the process to exit and returns its exit code.
func (p *proc) awaitExit() int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(startBound):
		p.t.Fatalf("the process did not exit within %s:\n%s", startBound, p.stderr())
	}
	if p.err == nil {
		return 0
	}
	ee, ok := p.err.(*exec.ExitError)
	if !ok {
		p.t.Fatalf("wait: %v", p.err)
	}
	return ee.ExitCode()
}

// readyRE is the quick start's ready line for a TCP listener.
var readyRE = regexp.MustCompile(`^ready: http://(127\.0\.0\.1:[0-9]+) → (\S+) as (.+), token valid until [0-2][0-9]:[0-5][0-9] \(8h\)$`)

// readyAddr parses the ready line and returns the listener's address.
func readyAddr(t *testing.T, line, server, who string) string {
	t.Helper()
	m := readyRE.FindStringSubmatch(line)
	if m == nil || m[2] != server || m[3] != who {
		t.Fatalf("ready line %q: want %q to %s as %s", line, readyRE, server, who)
	}
	if strings.HasSuffix(m[1], ":0") {
		t.Fatalf("ready line %q names port 0, not the port the proxy got", line)
	}
	return m[1]
}

// get sends one GET over a new connection and returns its status.
func get(t *testing.T, addr, path string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: awaitBound}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestQuickStartReadyLineNamesRealPort: with --from 127.0.0.1:0 the ready
// line names the port the proxy got, the server and the user, and the
// proxy answers there.
func TestQuickStartReadyLineNamesRealPort(t *testing.T) {
	sim, srv := simtest.Start(t)
	p := startProc(t, srv.URL, nil, "apic-proxy", "--from", "127.0.0.1:0")
	addr := readyAddr(t, p.awaitReady(), srv.URL, "developer (provider/default-idp-2)")
	if status := get(t, addr, "/api/me"); status != http.StatusOK {
		t.Fatalf("GET /api/me on the ready line's address: %d", status)
	}
	// The token was there before any request: the login ran at start.
	if n := sim.TokenRequests("password", "ok"); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
}

// TestQuickStartDemoStartsQuietly: the whole start-up output of --demo on
// standard error is the ready line; no line of Caddy's own.
func TestQuickStartDemoStartsQuietly(t *testing.T) {
	p := startProc(t, "", nil, "apic-proxy", "--demo", "--from", "127.0.0.1:0")
	line := p.awaitReady()
	readyAddr(t, line, strings.Fields(line)[3], "admin (admin/default-idp-1)")
	if got := p.stderr(); got != line {
		t.Fatalf("start-up output:\n%s\nwant the ready line alone", got)
	}
}

// TestQuickStartDemoAsAPIManagerUser runs --demo with the provider realm:
// it proxies as the simulator's API Manager user, who reaches the provider
// org's catalogs; a realm the simulator has no user in is refused.
func TestQuickStartDemoAsAPIManagerUser(t *testing.T) {
	p := startProc(t, "", nil, "apic-proxy", "--demo", "--realm", "provider/default-idp-2", "--from", "127.0.0.1:0")
	line := p.awaitReady()
	addr := readyAddr(t, line, strings.Fields(line)[3], "developer (provider/default-idp-2)")
	for _, path := range []string{"/api/me", "/api/orgs/localtest/catalogs", "/api/catalogs/localtest/sandbox/products"} {
		if status := get(t, addr, path); status != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", path, status)
		}
	}
	bad := startProc(t, "", nil, "apic-proxy", "--demo", "--realm", "provider/nope", "--from", "127.0.0.1:0")
	if code := bad.awaitExit(); code != 1 || !strings.Contains(bad.stderr(), "the simulator has no user in realm") || !strings.Contains(bad.stderr(), "provider/nope") {
		t.Fatalf("--demo --realm provider/nope: exit %d:\n%s", code, bad.stderr())
	}
}

// TestQuickStartRefusesTakenPort runs two quick starts on one port: the
// second exits 1 naming the address, and every request still reaches the
// first.
func TestQuickStartRefusesTakenPort(t *testing.T) {
	sim, srv := simtest.Start(t)
	first := startProc(t, srv.URL, nil, "apic-proxy", "--from", "127.0.0.1:0", "--access-log")
	addr := readyAddr(t, first.awaitReady(), srv.URL, "developer (provider/default-idp-2)")

	second := startProc(t, srv.URL, nil, "apic-proxy", "--from", addr)
	if code := second.awaitExit(); code != 1 {
		t.Fatalf("the second proxy exited with %d, want 1:\n%s", code, second.stderr())
	}
	if want := addr + " is already in use"; !strings.Contains(second.stderr(), want) {
		t.Fatalf("the second proxy's output lacks %q:\n%s", want, second.stderr())
	}
	if sim.TokenRequests("password", "ok") != 1 {
		t.Fatal("the second proxy logged in: it got as far as starting")
	}
	const n = 20
	for i := range n {
		if status := get(t, addr, fmt.Sprintf("/api/me?n=%d", i)); status != http.StatusOK {
			t.Fatalf("request %d: %d", i, status)
		}
	}
	// The first proxy's access log has every request (it is written
	// after the response: wait for its lines).
	timeout := time.After(awaitBound)
	for strings.Count(first.stderr(), `"uri":"/api/me?n=`) < n {
		select {
		case <-first.line:
		case <-first.exited:
			t.Fatalf("the first proxy exited: %v\n%s", first.err, first.stderr())
		case <-timeout:
			t.Fatalf("the first proxy logged %d of %d requests:\n%s", strings.Count(first.stderr(), `"uri":"/api/me?n=`), n, first.stderr())
		}
	}
}

// TestQuickStartWrongPassword: a refused login ends the quick start
// within the token timeout, with the server's message and a hint, and
// without the password.
func TestQuickStartWrongPassword(t *testing.T) {
	_, srv := simtest.Start(t)
	const wrong = "Xq7-wrong-Zk29v"
	start := time.Now()
	p := startProc(t, srv.URL, map[string]string{"APIC_PASSWORD": wrong}, "apic-proxy", "--from", "127.0.0.1:0", "--timeout", "20s")
	if code := p.awaitExit(); code != 1 {
		t.Fatalf("exit code %d, want 1:\n%s", code, p.stderr())
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("took %s, more than the token timeout", took)
	}
	out := p.stderr()
	for _, want := range []string{"Invalid username or password", "check the user name, the password and the client id and secret"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, wrong) || strings.Contains(out, "ready:") {
		t.Errorf("output holds the password or a ready line:\n%s", out)
	}
}

// TestQuickStartLazyDoesNotLogIn: --lazy is ready without a login.
func TestQuickStartLazyDoesNotLogIn(t *testing.T) {
	sim, srv := simtest.Start(t)
	p := startProc(t, srv.URL, map[string]string{"APIC_PASSWORD": "wrong-but-lazy"}, "apic-proxy", "--from", "127.0.0.1:0", "--lazy")
	if line := p.awaitReady(); !strings.HasSuffix(line, "as developer (provider/default-idp-2), logging in at the first request") {
		t.Fatalf("ready line %q", line)
	}
	if n := sim.TokenRequests("", ""); n != 0 {
		t.Fatalf("%d token requests at start with --lazy", n)
	}
}

// runCaddyfile is a Caddyfile that serves apic_auth to the simulator on
// the loopback address addr (host:port), logging to standard error.
func runCaddyfile(sim, addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`{
	admin off
	persist_config off
}

http://:%s {
	bind %s
	apic_auth {
		server %s
		realm %s
		username %s
		password {env.APIC_PASSWORD}
		client_id %s
		client_secret {env.APIC_CLIENT_SECRET}
	}
	reverse_proxy %s
}
`, port, host, sim, apicsim.DefaultProviderRealm, apicsim.DefaultProviderUsername, apicsim.DefaultClientID, sim)
}

// TestRunRefusesTakenPort: caddy run with a Caddyfile whose address a
// quick start holds exits 1 naming the address; validate still passes.
func TestRunRefusesTakenPort(t *testing.T) {
	_, srv := simtest.Start(t)
	first := startProc(t, srv.URL, nil, "apic-proxy", "--from", "127.0.0.1:0")
	addr := readyAddr(t, first.awaitReady(), srv.URL, "developer (provider/default-idp-2)")
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(runCaddyfile(srv.URL, addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	// validate provisions but starts nothing: a running proxy is no error.
	v := startProc(t, srv.URL, nil, "validate", "--config", file, "--adapter", "caddyfile")
	if code := v.awaitExit(); code != 0 {
		t.Fatalf("validate exited %d:\n%s", code, v.stderr())
	}
	r := startProc(t, srv.URL, nil, "run", "--config", file, "--adapter", "caddyfile")
	if code := r.awaitExit(); code != 1 {
		t.Fatalf("run exited %d, want 1:\n%s", code, r.stderr())
	}
	if want := addr + " is already in use"; !strings.Contains(r.stderr(), want) {
		t.Fatalf("run's output lacks %q:\n%s", want, r.stderr())
	}
	if status := get(t, addr, "/api/me"); status != http.StatusOK {
		t.Fatalf("the first proxy after the refused run: %d", status)
	}
}

// freeTCPAddr is a loopback address with a port nobody listens on now.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestReloadKeepsTCPAddress: a reload binds the running config's TCP
// address again in the same process, which the check leaves alone: the
// reload succeeds and the address serves on.
func TestReloadKeepsTCPAddress(t *testing.T) {
	addr := freeTCPAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	site := func(e *env, extra string) string {
		text := e.caddyfile(e.authBlock(extra))
		text = strings.Replace(text, "\nhttp:// {", "\nhttp://:"+port+" {", 1)
		return strings.Replace(text, "bind unix/"+e.sock, "bind unix/"+e.sock+" "+host, 1)
	}
	e := newEnv(t, withCaddyfile(func(e *env) string { return site(e, "") }))
	if status := get(t, addr, "/api/me"); status != http.StatusOK {
		t.Fatalf("GET /api/me on %s: %d", addr, status)
	}
	for i := range 3 {
		e.mustReload(site(e, fmt.Sprintf("name reload-%d", i)))
		if status := get(t, addr, "/api/me"); status != http.StatusOK {
			t.Fatalf("after reload %d, GET /api/me on %s: %d", i, addr, status)
		}
	}
}

// TestRunLogsInAtStart: caddy run logs in when the config starts, before
// any request, and logs one line saying what is proxied as whom.
func TestRunLogsInAtStart(t *testing.T) {
	e := newEnv(t, withLoginAtStart())
	e.awaitLog("the ready line", `"msg":"apic_auth ready: `)
	logs := e.logText()
	for _, want := range []string{`"user":"developer"`, `"token_valid_until":`, `"listen":["unix/` + e.sock} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
	if n := len(e.tokenArrivals()); n != 1 || e.bearerCalls() != 0 {
		t.Fatalf("%d token requests and %d calls before any request, want 1 and 0", n, e.bearerCalls())
	}
}

// TestRunWrongPasswordLogsErrorAndServes: a refused login at start is one
// ERROR line with the cause and a hint; the proxy serves on, answering
// 502 in API Connect's error shape.
func TestRunWrongPasswordLogsErrorAndServes(t *testing.T) {
	const wrong = "Jw4-wrong-Pm81t"
	e := newEnv(t, withLoginAtStart(), withVar("APIC_PASSWORD", wrong))
	const msg = `"msg":"API Connect login at start failed`
	e.awaitLog("the login error", msg)
	logs := e.logText()
	if strings.Count(logs, msg) != 1 || !strings.Contains(logs, `"cause":"refused"`) ||
		!strings.Contains(logs, `"hint":"check the user name, the password and the client id and secret"`) {
		t.Fatalf("want one ERROR line with the cause and the hint:\n%s", logs)
	}
	if strings.Contains(logs, wrong) || strings.Contains(e.stderr(), wrong) {
		t.Fatal("the log holds the password")
	}
	status, _, body := e.do(http.MethodGet, "/api/me", nil)
	if code, msgs := simtest.APIError(t, body); status != http.StatusBadGateway || code != http.StatusBadGateway || len(msgs) != 1 {
		t.Fatalf("GET /api/me after a refused login: %d %s", status, body)
	}
}
