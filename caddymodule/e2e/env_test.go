package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

const (
	// startBound bounds a proxy's start and its exit, awaitBound a wait for
	// a condition: both end a broken test, no test waits for them to pass.
	startBound = 60 * time.Second
	awaitBound = 60 * time.Second

	// modulePath prefixes the functions of this module in a goroutine dump.
	modulePath = "github.com/apic-tools/apic-auth-proxy/"
)

// procAttr are the proxy processes' attributes (procattr_linux_test.go).
var procAttr *syscall.SysProcAttr

// env is one proxy, the built binary in a process of its own, in front of
// a simulator on a loopback port. The proxy listens on a unix socket (and,
// with withTCP, on a loopback TCP port handed to it as a file descriptor)
// and, unless withoutAdmin, serves Caddy's admin API on another unix
// socket. It is stopped, and its end checked, when the test ends.
type env struct {
	t      *testing.T
	sim    *apicsim.Server
	up     *upstream
	upSrv  *httptest.Server // serves up at simURL
	simURL string           // the simulator's base URL
	server string           // apic_auth's server: simURL unless withServer

	dir       string
	sock      string // the proxy's unix socket
	adminSock string // the admin API's unix socket, "" with withoutAdmin
	logFile   string // the proxy's log, at debug level
	tcpAddr   string // with withTCP: the proxy's loopback TCP address

	proxy *testSocket // client of sock
	tcp   *testSocket // client of tcpAddr, with withTCP
	admin *testSocket // client of adminSock, nil with withoutAdmin
	// sockets are every socket of the proxy the test talks to, handed
	// over at each reload; see loadConfig.
	sockets []*testSocket

	auth    []string          // lines every authBlock gets (withAuth)
	vars    map[string]string // the process's environment
	events  bool              // the config runs the events app
	atStart bool              // the first login starts with the config
	tcpFile *os.File          // the TCP listener until the process has it

	text   string // the Caddyfile the proxy starts with
	noRace bool   // runs plainBinary
	cmd    *exec.Cmd
	// pingback and starting are the pingback's listener and outcome,
	// between launch and awaitStart.
	pingback net.Listener
	starting chan error
	exited   chan struct{} // closed when the process has exited
	waitErr  error         // how it exited, once exited is closed
	started  bool          // the process said it runs the config
	stopped  bool
}

// option changes how newEnv sets an env up.
type option func(*settings)

type settings struct {
	sim       []func(*apicsim.Config)
	auth      []string
	server    string
	caddyfile func(*env) string
	noAdmin   bool
	vars      map[string]string
	tcp       bool
	events    bool
	atStart   bool
	simOf     *env
	noStart   bool
	noRace    bool
}

// withSim changes the simulator's config.
func withSim(f func(*apicsim.Config)) option {
	return func(s *settings) { s.sim = append(s.sim, f) }
}

// withAuth adds lines to every apic_auth block of env.authBlock.
func withAuth(lines ...string) option {
	return func(s *settings) { s.auth = append(s.auth, lines...) }
}

// withServer points apic_auth's server (not reverse_proxy) at url.
func withServer(url string) option {
	return func(s *settings) { s.server = url }
}

// withCaddyfile makes the proxy start with the Caddyfile f returns instead
// of env.caddyfile(env.authBlock()). f may use the env's fields and
// methods; the Caddyfile must bind the env's sockets.
func withCaddyfile(f func(*env) string) option {
	return func(s *settings) { s.caddyfile = f }
}

// withoutAdmin leaves Caddy's admin API off: no reload, status or metrics,
// and no goroutine check at the end.
func withoutAdmin() option {
	return func(s *settings) { s.noAdmin = true }
}

// withVar sets a variable of the proxy's environment.
func withVar(name, value string) option {
	return func(s *settings) {
		if s.vars == nil {
			s.vars = make(map[string]string)
		}
		s.vars[name] = value
	}
}

// withTCP has the proxy listen on a loopback TCP port too: the test
// listens on port 0 and hands the socket to the proxy as fd/3, so that no
// port is picked in advance.
func withTCP() option {
	return func(s *settings) { s.tcp = true }
}

// withEvents runs Caddy's events app, which logs every event at debug
// level: env.loggedEvents reads them from the log.
func withEvents() option {
	return func(s *settings) { s.events = true }
}

// withLoginAtStart has the proxy log in when the config starts, as it does
// by default. Without it the env's Caddyfile sets lazy_login, so that a
// test's first request makes the first token request, as most tests
// expect.
func withLoginAtStart() option {
	return func(s *settings) { s.atStart = true }
}

// withSimOf puts the proxy in front of other's simulator instead of one of
// its own: a fleet of proxies for one identity.
func withSimOf(other *env) option {
	return func(s *settings) { s.simOf = other }
}

// withoutRace runs the binary built without the race detector (see
// plainBuild).
func withoutRace() option {
	return func(s *settings) { s.noRace = true }
}

// withoutStart makes newEnv return before starting the proxy: launch and
// awaitStart start it, so that many start at once.
func withoutStart() option {
	return func(s *settings) { s.noStart = true }
}

// newEnv starts a simulator and a proxy in front of it, and returns once
// the proxy runs its config. The proxy's environment has the APIC_*
// variables of the simulator's developer user (APIC_SERVER, APIC_REALM,
// APIC_USERNAME, APIC_PASSWORD, APIC_CLIENT_ID, APIC_CLIENT_SECRET) and
// APIC_ADMIN_PASSWORD, the Cloud Manager user's password.
func newEnv(t *testing.T, opts ...option) *env {
	t.Helper()
	var s settings
	for _, o := range opts {
		o(&s)
	}
	var sim *apicsim.Server
	if s.simOf != nil {
		sim = s.simOf.sim
	} else {
		sim = simtest.New(t, s.sim...)
	}
	// Unix socket paths are short-limited: keep them out of t.TempDir.
	dir, err := os.MkdirTemp("", "aap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{
		t: t, sim: sim, dir: dir,
		sock:    filepath.Join(dir, "proxy.sock"),
		logFile: filepath.Join(dir, "caddy.log"),
		auth:    s.auth,
		events:  s.events,
		atStart: s.atStart,
	}
	if s.simOf != nil {
		e.up, e.upSrv = s.simOf.up, s.simOf.upSrv
	} else {
		e.up = newUpstream(t, sim)
		// Closed after the proxy has stopped: it signs out on its way.
		e.upSrv = httptest.NewServer(e.up)
		t.Cleanup(e.upSrv.Close)
	}
	e.simURL = e.upSrv.URL
	e.server = cmp.Or(s.server, e.simURL)
	e.vars = map[string]string{
		"APIC_SERVER":         e.simURL,
		"APIC_REALM":          apicsim.DefaultProviderRealm,
		"APIC_USERNAME":       apicsim.DefaultProviderUsername,
		"APIC_PASSWORD":       apicsim.DefaultProviderPassword,
		"APIC_ADMIN_PASSWORD": apicsim.DefaultAdminPassword,
		"APIC_CLIENT_ID":      apicsim.DefaultClientID,
		"APIC_CLIENT_SECRET":  apicsim.DefaultClientSecret,
	}
	maps.Copy(e.vars, s.vars)

	e.proxy = e.socket("unix", e.sock)
	if s.tcp {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		e.tcpFile, err = ln.(*net.TCPListener).File()
		ln.Close() // the file holds the listening socket
		if err != nil {
			t.Fatal(err)
		}
		e.tcpAddr = ln.Addr().String()
		e.tcp = e.socket("tcp", e.tcpAddr)
	}
	if !s.noAdmin {
		e.adminSock = filepath.Join(dir, "admin.sock")
		e.admin = e.socket("unix", e.adminSock)
	}
	e.noRace = s.noRace
	e.text = e.caddyfile(e.authBlock())
	if s.caddyfile != nil {
		e.text = s.caddyfile(e)
	}
	if !s.noStart {
		e.start(e.text)
	}
	return e
}

// authBlock is an apic_auth block for the simulator's developer user,
// the secrets as {env.*} placeholders, with the lines of withAuth and
// extra added.
func (e *env) authBlock(extra ...string) string {
	lines := []string{
		"server " + e.server,
		"realm " + apicsim.DefaultProviderRealm,
		"username " + apicsim.DefaultProviderUsername,
		"password {env.APIC_PASSWORD}",
		"client_id " + apicsim.DefaultClientID,
		"client_secret {env.APIC_CLIENT_SECRET}",
	}
	lines = append(append(lines, e.auth...), extra...)
	return "apic_auth {\n\t\t" + strings.Join(lines, "\n\t\t") + "\n\t}"
}

// caddyfile is a whole Caddyfile whose site runs handlers, then
// reverse_proxy to the simulator.
func (e *env) caddyfile(handlers string) string {
	return e.caddyfileSite(handlers + "\n\treverse_proxy " + e.simURL)
}

// caddyfileSite is a whole Caddyfile: the admin API on e's admin socket
// (or off), the events app with withEvents, debug logs to e.logFile, and
// one site on e's sockets whose body is body.
func (e *env) caddyfileSite(body string) string {
	admin := "admin off"
	if e.adminSock != "" {
		admin = "admin unix/" + e.adminSock
	}
	var events string
	if e.events {
		events = "\n\tevents"
	}
	if !e.atStart {
		events += "\n\tapic_auth {\n\t\tlazy_login\n\t}"
	}
	bind := "unix/" + e.sock
	if e.tcpAddr != "" {
		bind += " fd/3" // the first of cmd.ExtraFiles
	}
	return fmt.Sprintf(`{
	%s
	persist_config off%s
	log {
		output file %s
		level DEBUG
	}
}

http:// {
	bind %s
	%s
}
`, admin, events, e.logFile, bind, body)
}

// environ is the proxy's environment: its own home, and e.vars.
func (e *env) environ() []string {
	vars := map[string]string{
		"HOME":            e.dir,
		"XDG_CONFIG_HOME": filepath.Join(e.dir, "config"),
		"XDG_DATA_HOME":   filepath.Join(e.dir, "data"),
		"TMPDIR":          os.TempDir(),
	}
	if raceEnabled {
		// The race detector waits a second at exit by default.
		vars["GORACE"] = strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=50")
	}
	maps.Copy(vars, e.vars)
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

// start runs the binary with the Caddyfile text and waits for its
// pingback: caddy run --pingback connects to the address and echoes what
// it read on standard input once the config runs.
func (e *env) start(text string) {
	e.t.Helper()
	e.launch(text)
	e.awaitStart()
}

// launch starts the binary with the Caddyfile text; awaitStart waits for
// it to run the config.
func (e *env) launch(text string) {
	t := e.t
	t.Helper()
	bin := binary(t)
	if e.noRace {
		bin = plainBinary(t)
	}
	file := filepath.Join(e.dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	pingback, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	code := rand.Text()

	cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile", "--pingback", pingback.Addr().String())
	cmd.Dir = e.dir
	cmd.Env = e.environ()
	cmd.SysProcAttr = procAttr
	cmd.Stdin = strings.NewReader(code)
	out, err := os.Create(e.stderrFile())
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if e.tcpFile != nil {
		cmd.ExtraFiles = []*os.File{e.tcpFile}
	}
	err = cmd.Start()
	out.Close()
	if e.tcpFile != nil {
		// Only the proxy holds the listener now: should it die, clients
		// are refused rather than left waiting.
		e.tcpFile.Close()
		e.tcpFile = nil
	}
	if err != nil {
		t.Fatal(err)
	}
	e.cmd = cmd
	e.exited = make(chan struct{})
	go func() {
		e.waitErr = cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(e.stop)
	e.pingback = pingback
	e.starting = make(chan error, 1)
	go func() { e.starting <- readPingback(pingback, code) }()
}

// awaitStart waits for the process that launch started to run its config.
func (e *env) awaitStart() {
	t := e.t
	t.Helper()
	defer e.pingback.Close()
	timer := time.NewTimer(startBound)
	defer timer.Stop()
	select {
	case err := <-e.starting:
		if err != nil {
			t.Fatalf("the proxy's pingback: %v\n%s", err, e.stderr())
		}
	case <-e.exited:
		t.Fatalf("the proxy exited at start: %v\n%s", e.waitErr, e.stderr())
	case <-timer.C:
		t.Fatalf("the proxy did not start within %s:\n%s", startBound, e.stderr())
	}
	e.started = true
	for _, s := range e.sockets {
		if err := s.openSentinel(); err != nil {
			t.Fatal(err)
		}
	}
}

func readPingback(ln net.Listener, want string) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(startBound))
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != want {
		return fmt.Errorf("got %q, want %q", got, want)
	}
	return nil
}

func (e *env) stderrFile() string { return filepath.Join(e.dir, "stderr") }

// stderr returns what the proxy wrote on standard error and output.
func (e *env) stderr() string {
	data, err := os.ReadFile(e.stderrFile())
	if err != nil {
		return fmt.Sprintf("(standard error unreadable: %v)", err)
	}
	return string(data)
}

// stop stops the proxy as an operator would and checks how it went: with
// the admin API, it first loads a config without apic_auth (sessions end
// and sign out upstream) and checks that no goroutine started by the
// module is left; then SIGINT, after which Caddy waits for every request
// still being served, even by earlier configs, and exits with status 0.
// Neither the log nor standard error may hold a panic or a data race
// report. stop runs at the end of every test; a test that checks what
// stopping does calls it before.
func (e *env) stop() {
	e.t.Helper()
	e.end(true)
}

// end stops the proxy as stop does; without unload it skips the unload
// and its goroutine check, and uses only t.Errorf, so that many proxies
// can end at once, from goroutines of their own.
func (e *env) end(unload bool) {
	t := e.t
	t.Helper()
	if e.cmd == nil || e.stopped {
		return
	}
	e.stopped = true
	defer e.closeSockets()
	if !e.started {
		_ = e.cmd.Process.Kill()
		<-e.exited
		return
	}
	select {
	case <-e.exited:
		t.Errorf("the proxy exited before the test stopped it: %v\n%s", e.waitErr, e.stderr())
		return
	default:
	}
	if e.admin != nil && unload {
		e.unload()
	}
	_ = e.cmd.Process.Signal(os.Interrupt)
	timer := time.NewTimer(startBound)
	defer timer.Stop()
	select {
	case <-e.exited:
	case <-timer.C:
		// The Go runtime prints every goroutine on SIGQUIT.
		_ = e.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-e.exited:
		case <-time.After(10 * time.Second):
			_ = e.cmd.Process.Kill()
			<-e.exited
		}
		t.Errorf("the proxy did not exit within %s of SIGINT:\n%s", startBound, e.stderr())
		return
	}
	if e.waitErr != nil {
		t.Errorf("the proxy exited with %v:\n%s", e.waitErr, e.stderr())
	}
	if s := e.stderr(); strings.Contains(s, "DATA RACE") || strings.Contains(s, "panic") || strings.Contains(s, "fatal error") {
		t.Errorf("the proxy's standard error reports a race or a panic:\n%s", s)
	}
	if logs, err := os.ReadFile(e.logFile); err == nil && bytes.Contains(bytes.ToLower(logs), []byte("panic")) {
		t.Errorf("the proxy logged a panic:\n%s", logs)
	}
}

// kill ends the proxy with SIGKILL, as a crash does: nothing of its end
// is checked.
func (e *env) kill() {
	e.t.Helper()
	e.stopped = true
	_ = e.cmd.Process.Kill()
	<-e.exited
	e.closeSockets()
}

// unload replaces the running config with one that keeps only the admin
// API and the logs, as a reload that drops apic_auth does, then checks
// that no goroutine started by this module's code is left: a session's
// goroutines end before its config's cleanup returns.
func (e *env) unload() {
	t := e.t
	t.Helper()
	_, admin := e.adminDo(http.MethodGet, "/config/admin")
	_, logging := e.adminDo(http.MethodGet, "/config/logging")
	cfg := fmt.Sprintf(`{"admin":%s,"logging":%s,"apps":{"http":{}}}`, strings.TrimSpace(admin), strings.TrimSpace(logging))
	if err := e.loadConfig([]byte(cfg), "application/json", true); err != nil {
		t.Errorf("unloading the config: %v", err)
		return
	}
	status, dump := e.adminDo(http.MethodGet, "/debug/pprof/goroutine?debug=2")
	if status != http.StatusOK {
		t.Errorf("goroutine dump: %d %s", status, dump)
		return
	}
	var left []string
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.Contains(g, "created by "+modulePath) {
			left = append(left, g)
		}
	}
	if len(left) > 0 {
		t.Errorf("%d goroutines started by apic_auth outlived its config:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}

// reload loads a Caddyfile through the admin API, as caddy reload does,
// and returns once the previous config's servers have stopped accepting
// connections on the test's sockets.
func (e *env) reload(caddyfileText string) error {
	return e.loadConfig([]byte(caddyfileText), "text/caddyfile", false)
}

// mustReload is reload that fails the test on an error.
func (e *env) mustReload(caddyfileText string) {
	e.t.Helper()
	if err := e.reload(caddyfileText); err != nil {
		e.t.Fatal(err)
	}
}

// loadConfig loads a config through the admin API, and returns once the
// previous config's servers have stopped accepting connections on the
// test's sockets; unload says the new config serves none of them but the
// admin API's.
//
// In a reload Caddy starts the new server on the same socket, then shuts
// the old one down with net/http's Server.Shutdown, which closes a
// connection whose request it reads once shutting down without answering
// it. A connection that the old server accepted just before its listener
// closed thus gets EOF, with any handler (a plain reverse_proxy or respond
// too), and a client resends a GET by itself only on a reused connection.
// Caddy's admin server is replaced the same way, at every load. So the
// test's clients do not dial while a reload hands over, and the load
// itself goes over a connection of its own.
func (e *env) loadConfig(config []byte, contentType string, unload bool) error {
	if e.admin == nil {
		return errors.New("the proxy runs without the admin API: nothing to load a config through")
	}
	for _, s := range e.sockets {
		// An idle connection that was dialed for a request another
		// connection served holds the gate until it is closed: close
		// the idle ones now rather than wait for IdleConnTimeout.
		s.closeIdle()
		s.gate.Lock()
		defer s.gate.Unlock()
	}
	status, body, err := e.adminOwnConn(http.MethodPost, "/load", contentType, config)
	if err != nil {
		return fmt.Errorf("POST /load: %v", err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("POST /load: %d %s", status, body)
	}
	for _, s := range e.sockets {
		if err := s.handOver(!unload || s == e.admin); err != nil {
			return err
		}
	}
	return nil
}

// adminOwnConn sends one request to the admin API over a connection of its
// own, outside the admin socket's gate. It asks for a reload even of an
// unchanged config (caddy reload --force), so that a load always hands
// the sockets over.
func (e *env) adminOwnConn(method, path, contentType string, body []byte) (int, []byte, error) {
	c, err := net.Dial("unix", e.adminSock)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(awaitBound))
	req, err := http.NewRequest(method, "http://localhost"+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Cache-Control", "must-revalidate")
	req.Close = true
	if err := req.Write(c); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// adminDo sends a request to the admin API and returns the status and
// body.
func (e *env) adminDo(method, path string) (int, string) {
	e.t.Helper()
	if e.admin == nil {
		e.t.Fatal("the proxy runs without the admin API")
	}
	req, err := http.NewRequest(method, "http://localhost"+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.admin.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s on the admin API: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// identityStatus is one identity in GET /apic_auth/status.
type identityStatus struct {
	Name         string     `json:"name"`
	Server       string     `json:"server"`
	Realm        string     `json:"realm"`
	User         string     `json:"user"`
	Grant        string     `json:"grant"`
	State        string     `json:"state"`
	Ready        bool       `json:"ready"`
	Cause        string     `json:"cause"`
	Scope        []string   `json:"scope"`
	TokenScopes  []string   `json:"token_scopes"`
	TokenGrant   string     `json:"token_grant"`
	TokenExpires *time.Time `json:"token_expires"`
	RefreshAt    *time.Time `json:"refresh_at"`
	LastRefresh  *time.Time `json:"last_refresh"`
	LastError    string     `json:"last_error"`
	RetryAt      *time.Time `json:"retry_at"`
	Counts       struct {
		TokenRequests map[string]map[string]int `json:"token_requests"`
		Failures      map[string]int            `json:"failures"`
		Replays       map[string]int            `json:"replays"`
		Refused       map[string]int            `json:"refused"`
	} `json:"counts"`
	Waits                   int        `json:"waits"`
	SuppressedPaths         int        `json:"suppressed_paths"`
	ReloginsSuppressedUntil *time.Time `json:"relogins_suppressed_until"`
	TokenFiles              []struct {
		Option    string     `json:"option"`
		Path      string     `json:"path"`
		WrittenAt *time.Time `json:"written_at"`
		Error     string     `json:"error"`
	} `json:"token_files"`
}

// attempts counts the token requests the identity made.
func (s identityStatus) attempts() int {
	n := 0
	for _, m := range s.Counts.TokenRequests {
		for _, c := range m {
			n += c
		}
	}
	return n
}

// status returns GET /apic_auth/status.
func (e *env) status() []identityStatus {
	e.t.Helper()
	code, body := e.adminDo(http.MethodGet, "/apic_auth/status")
	var st []identityStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != http.StatusOK {
		e.t.Fatalf("GET /apic_auth/status: %d %s (%v)", code, body, err)
	}
	return st
}

// identity returns the status of the only identity.
func (e *env) identity() identityStatus {
	e.t.Helper()
	st := e.status()
	if len(st) != 1 {
		e.t.Fatalf("status lists %d identities, want 1: %+v", len(st), st)
	}
	return st[0]
}

// metrics returns GET /metrics.
func (e *env) metrics() string {
	e.t.Helper()
	code, body := e.adminDo(http.MethodGet, "/metrics")
	if code != http.StatusOK {
		e.t.Fatalf("GET /metrics: %d %s", code, body)
	}
	return body
}

// metricValue returns the value of sample, a metric name with its labels
// as Prometheus writes them (sorted), in the text metrics.
func metricValue(metrics, sample string) (float64, bool) {
	for line := range strings.Lines(metrics) {
		rest, ok := strings.CutPrefix(line, sample+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}

// do sends a request through the proxy's unix socket and returns the
// status, headers and body.
func (e *env) do(method, path string, hdr http.Header) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://localhost"+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	maps.Copy(req.Header, hdr)
	status, h, body, err := e.send(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return status, h, body
}

// mustOK sends a GET through the proxy and fails the test unless it is
// answered 200.
func (e *env) mustOK(path, step string) {
	e.t.Helper()
	if status, _, body := e.do(http.MethodGet, path, nil); status != http.StatusOK {
		e.t.Fatalf("%s: GET %s: status %d: %s", step, path, status, body)
	}
}

// send sends req through the proxy's unix socket without failing the
// test, for load goroutines.
func (e *env) send(req *http.Request) (int, http.Header, []byte, error) {
	resp, err := e.proxy.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, body, nil
}

// logText returns what the proxy logged so far.
func (e *env) logText() string {
	e.t.Helper()
	data, err := os.ReadFile(e.logFile)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(data)
}

// event is an apic_auth event, as Caddy's events app logs it.
type event struct {
	Name string         `json:"name"`
	Data map[string]any `json:"data"`
}

// loggedEvents returns the apic_auth events in the log, in order; the env
// needs withEvents.
func (e *env) loggedEvents() []event {
	e.t.Helper()
	var out []event
	for line := range strings.Lines(e.logText()) {
		var entry struct {
			Logger string `json:"logger"`
			Msg    string `json:"msg"`
			event
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			e.t.Fatalf("log line %q: %v", line, err)
		}
		if entry.Logger == "events" && entry.Msg == "event" && strings.HasPrefix(entry.Name, "apic_auth_") {
			out = append(out, entry.event)
		}
	}
	return out
}

// adapt adapts a Caddyfile to JSON with the binary, in the proxy's
// environment.
func (e *env) adapt(caddyfileText string) []byte {
	e.t.Helper()
	out, stderr, err := e.tool("adapt", caddyfileText)
	if err != nil {
		e.t.Fatalf("adapt: %v\n%s", err, stderr)
	}
	return out
}

// validate runs the binary's validate on a Caddyfile, in the proxy's
// environment, and returns what it wrote (its log and its error) and
// whether the config is valid.
func (e *env) validate(caddyfileText string) (string, bool) {
	e.t.Helper()
	out, stderr, err := e.tool("validate", caddyfileText)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		e.t.Fatalf("validate: %v", err)
	}
	return string(out) + string(stderr), err == nil
}

// tool runs the binary's command verb (adapt, validate) on a Caddyfile in
// the proxy's environment, and returns its standard output and error.
func (e *env) tool(verb, caddyfileText string) ([]byte, []byte, error) {
	e.t.Helper()
	file := filepath.Join(e.dir, verb+".Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfileText), 0o600); err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(binary(e.t), verb, "--config", file, "--adapter", "caddyfile")
	cmd.Env = e.environ()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	return out, stderr.Bytes(), err
}

// upstream is the simulator's front door: it serves the simulator, records
// what reaches it, and runs the test's hooks around it.
type upstream struct {
	sim *apicsim.Server
	// checked serves sim through a conformance check (simtest.Checked).
	checked http.Handler

	mu sync.Mutex
	// auth is the Authorization header of every call that is neither a
	// token request nor a control, in the order they arrived; distinct
	// counts its values.
	auth     []string
	distinct map[string]bool
	// tokens are the arrival times of the token requests.
	tokens []time.Time
	// changed is closed, and replaced, after every answer.
	changed     chan struct{}
	beforeToken func(n int, r *http.Request)
	afterToken  func(n int)
	beforeAPI   func(r *http.Request)
	answerAPI   func(w http.ResponseWriter, r *http.Request) bool
}

func newUpstream(t *testing.T, sim *apicsim.Server) *upstream {
	return &upstream{sim: sim, checked: simtest.Checked(t, sim), changed: make(chan struct{}), distinct: make(map[string]bool)}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var (
		n          int
		before     func(int, *http.Request)
		after      func(int)
		beforeCall func(*http.Request)
		answer     func(http.ResponseWriter, *http.Request) bool
	)
	u.mu.Lock()
	switch {
	case r.URL.Path == "/api/token":
		u.tokens = append(u.tokens, time.Now())
		n, before, after = len(u.tokens), u.beforeToken, u.afterToken
	case strings.HasPrefix(r.URL.Path, "/_sim/"):
	default:
		a := r.Header.Get("Authorization")
		u.auth = append(u.auth, a)
		u.distinct[a] = true
		beforeCall, answer = u.beforeAPI, u.answerAPI
	}
	u.mu.Unlock()
	if before != nil {
		before(n, r)
	}
	if beforeCall != nil {
		beforeCall(r)
	}
	if answer == nil || !answer(w, r) {
		u.checked.ServeHTTP(w, r)
	}
	if after != nil {
		after(n)
	}
	u.mu.Lock()
	close(u.changed)
	u.changed = make(chan struct{})
	u.mu.Unlock()
}

// stopUpstream stops the simulator's server, as API Manager going down
// does: its port refuses connections from then on (the env's end then
// finds the sign-out failing, which it tolerates).
func (e *env) stopUpstream() { e.upSrv.Close() }

// next returns a channel closed at the simulator's next answer.
func (u *upstream) next() <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.changed
}

// beforeToken runs f before the simulator sees its nth token request
// (from 1); f may block, until r's context is done at the latest.
func (e *env) beforeToken(f func(n int, r *http.Request)) {
	e.up.mu.Lock()
	e.up.beforeToken = f
	e.up.mu.Unlock()
}

// afterToken runs f after the simulator has answered its nth token
// request, before the answer leaves.
func (e *env) afterToken(f func(n int)) {
	e.up.mu.Lock()
	e.up.afterToken = f
	e.up.mu.Unlock()
}

// beforeAPI runs f before the simulator sees a call other than a token
// request.
func (e *env) beforeAPI(f func(r *http.Request)) {
	e.up.mu.Lock()
	e.up.beforeAPI = f
	e.up.mu.Unlock()
}

// answerAPI runs f instead of the simulator for a call other than a token
// request when f reports that it answered it.
func (e *env) answerAPI(f func(w http.ResponseWriter, r *http.Request) bool) {
	e.up.mu.Lock()
	e.up.answerAPI = f
	e.up.mu.Unlock()
}

// upstreamAuth returns the Authorization headers of the calls that reached
// the simulator's API (not its token endpoint), in order.
func (e *env) upstreamAuth() []string {
	e.up.mu.Lock()
	defer e.up.mu.Unlock()
	return append([]string(nil), e.up.auth...)
}

// upstreamTokens counts the distinct Authorization headers of the calls
// that reached the simulator's API.
func (e *env) upstreamTokens() int {
	e.up.mu.Lock()
	defer e.up.mu.Unlock()
	return len(e.up.distinct)
}

// bearerCalls counts the calls that reached the simulator's API with a
// bearer token of its own (every token it issues is a JWT).
func (e *env) bearerCalls() int {
	n := 0
	for _, a := range e.upstreamAuth() {
		if strings.HasPrefix(a, "Bearer ey") {
			n++
		}
	}
	return n
}

// tokenArrivals returns when each token request reached the simulator.
func (e *env) tokenArrivals() []time.Time {
	e.up.mu.Lock()
	defer e.up.mu.Unlock()
	return append([]time.Time(nil), e.up.tokens...)
}

// await waits until cond holds, checking it each time the simulator has
// answered a request. The deadline only ends a broken test.
func (e *env) await(what string, cond func() bool) {
	e.t.Helper()
	e.awaitWoken(what, e.up.next, cond)
}

// awaitWoken waits until cond holds, looking again whenever the channel
// that wake returns (before each look) is closed or sends.
func (e *env) awaitWoken(what string, wake func() <-chan struct{}, cond func() bool) {
	e.t.Helper()
	timer := time.NewTimer(awaitBound)
	defer timer.Stop()
	for {
		changed := wake()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-e.exited:
			e.t.Fatalf("waiting for %s: the proxy exited: %v\n%s", what, e.waitErr, e.stderr())
		case <-timer.C:
			e.t.Fatalf("no %s within %s", what, awaitBound)
		}
	}
}

// testSocket is a client of one socket of the proxy's that is handed over
// from one config's server to the next without racing the old server's
// shutdown; see loadConfig.
type testSocket struct {
	network, address string
	client           *http.Client
	// gate holds dials off while a reload hands over: a new connection
	// holds its read side until its first answer arrives or it closes.
	gate sync.RWMutex
	// sentinel is an idle connection to the running server.
	sentinel net.Conn
	// closeIdle closes the client's idle connections.
	closeIdle func()
}

// socket returns a client of the proxy's socket at address, handed over
// at every reload.
func (e *env) socket(network, address string) *testSocket {
	s := &testSocket{network: network, address: address}
	transport := &http.Transport{
		DialContext:         s.dial,
		MaxIdleConnsPerHost: 200,
		// A connection dialed for a request that another connection
		// served sits idle, holding the gate, until it is used or
		// closed: closing idle connections soon bounds a reload's wait.
		IdleConnTimeout: 500 * time.Millisecond,
	}
	s.client = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	s.closeIdle = transport.CloseIdleConnections
	e.t.Cleanup(s.close)
	e.sockets = append(e.sockets, s)
	return s
}

func (s *testSocket) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	s.gate.RLock()
	var d net.Dialer
	c, err := d.DialContext(ctx, s.network, s.address)
	if err != nil {
		s.gate.RUnlock()
		return nil, err
	}
	return &gatedConn{Conn: c, release: sync.OnceFunc(s.gate.RUnlock)}, nil
}

// close closes the client's idle connections and the sentinel.
func (s *testSocket) close() {
	s.closeIdle()
	if s.sentinel != nil {
		s.sentinel.Close()
		s.sentinel = nil
	}
}

// closeSockets closes every socket's connections.
func (e *env) closeSockets() {
	for _, s := range e.sockets {
		s.close()
	}
}

// gatedConn releases its hold on the gate at its first read (the server
// has read the request and answered, or closed) or at its close.
type gatedConn struct {
	net.Conn
	release func()
}

func (c *gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.release()
	return n, err
}

func (c *gatedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// handOver waits until the server that held the sentinel has stopped
// accepting (it closes idle connections only after its accept loop has
// ended), then, when reopen is set, opens a sentinel to the new one.
func (s *testSocket) handOver(reopen bool) error {
	if old := s.sentinel; old != nil {
		s.sentinel = nil
		// The old server closes it; a deadline bounds a broken reload.
		_ = old.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := old.Read(make([]byte, 1))
		old.Close()
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("the previous server on %s did not close its idle connection after the reload: %v", s.address, err)
		}
		// The old server closed the client's idle connections too, but
		// the client may not have seen it yet: a request on one would
		// fail, and Go resends only some (GET, not POST) by itself.
		s.closeIdle()
	}
	if !reopen {
		return nil
	}
	return s.openSentinel()
}

// openSentinel opens an idle connection to the running server: one
// "OPTIONS *" request (answered by net/http itself, no handler sees it),
// then nothing.
func (s *testSocket) openSentinel() error {
	c, err := net.Dial(s.network, s.address)
	if err != nil {
		return fmt.Errorf("sentinel connection: %v", err)
	}
	if _, err := io.WriteString(c, "OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		c.Close()
		return fmt.Errorf("sentinel connection: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return fmt.Errorf("sentinel connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return fmt.Errorf("sentinel connection: OPTIONS * answered %d", resp.StatusCode)
	}
	s.sentinel = c
	return nil
}
