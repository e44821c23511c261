package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/testclock"
)

// fakeClock is a clock that moves only when told, shared by the simulator
// and the proxy's sessions.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock {
	return testclock.New(time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC))
}

// useClock makes the sessions created from now on use c.
func useClock(t *testing.T, c *fakeClock) {
	t.Helper()
	old := now
	now = c.Now
	t.Cleanup(func() { now = old })
}

// newClockedEnv is newTestEnv with a fake clock shared by the simulator
// and the sessions created from now on; mod, when not nil, changes the
// simulator's config.
func newClockedEnv(t *testing.T, mod func(*apicsim.Config)) (*testEnv, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	useClock(t, clock)
	cfg := apicsim.DefaultConfig()
	cfg.Now = clock.Now
	if mod != nil {
		mod(&cfg)
	}
	return newTestEnv(t, cfg), clock
}

// testEnv is a simulator on a loopback port and a real Caddy in this
// process in front of it, listening on a unix socket.
type testEnv struct {
	t       *testing.T
	sim     *apicsim.Server
	simSrv  *httptest.Server
	sock    string
	logFile string
	client  *http.Client

	mu       sync.Mutex
	seenAuth []string // Authorization headers that reached the simulator

	// sockets are the unix sockets the test talks to: the proxy's, and
	// the admin API's when a test asks for it; see loadJSON.
	sockets []*testSocket
}

func newTestEnv(t *testing.T, cfg apicsim.Config) *testEnv {
	t.Helper()
	sim, err := apicsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, sim: sim}
	e.simSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/token" && !strings.HasPrefix(r.URL.Path, "/_sim/") {
			e.mu.Lock()
			e.seenAuth = append(e.seenAuth, r.Header.Get("Authorization"))
			e.mu.Unlock()
		}
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(e.simSrv.Close)
	// Unix socket paths are short-limited: keep them out of t.TempDir.
	dir, err := os.MkdirTemp("", "aap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.sock = filepath.Join(dir, "proxy.sock")
	e.logFile = filepath.Join(dir, "caddy.log")
	proxy := e.socket(e.sock)
	e.client = proxy.client
	return e
}

// testSocket is a client of one unix socket of Caddy's that is handed over
// from one config's server to the next without racing the old server's
// shutdown; see loadJSON.
type testSocket struct {
	path   string
	client *http.Client
	// gate holds dials off while a reload hands over: a new connection
	// holds its read side until its first answer arrives or it closes.
	gate sync.RWMutex
	// sentinel is an idle connection to the running server.
	sentinel net.Conn
	// closeIdle closes the client's idle connections.
	closeIdle func()
}

// socket returns a client of the unix socket at path, handed over at every
// reload. Its server must be running when a sentinel is first needed.
func (e *testEnv) socket(path string) *testSocket {
	s := &testSocket{path: path}
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
	e.t.Cleanup(func() {
		transport.CloseIdleConnections()
		if s.sentinel != nil {
			s.sentinel.Close()
		}
	})
	e.sockets = append(e.sockets, s)
	return s
}

func (s *testSocket) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	s.gate.RLock()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", s.path)
	if err != nil {
		s.gate.RUnlock()
		return nil, err
	}
	return &gatedConn{Conn: c, release: sync.OnceFunc(s.gate.RUnlock)}, nil
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
// ended), then opens a sentinel to the new one.
func (s *testSocket) handOver() error {
	if old := s.sentinel; old != nil {
		s.sentinel = nil
		// The old server closes it; a deadline bounds a broken reload.
		_ = old.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := old.Read(make([]byte, 1))
		old.Close()
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("the previous server on %s did not close its idle connection after the reload: %v", s.path, err)
		}
		// The old server closed the client's idle connections too, but
		// the client may not have seen it yet: a request on one would
		// fail, and Go resends only some (GET, not POST) by itself.
		s.closeIdle()
	}
	return s.openSentinel()
}

// openSentinel opens an idle connection to the running server: one
// "OPTIONS *" request (answered by net/http itself, no handler sees it),
// then nothing.
func (s *testSocket) openSentinel() error {
	c, err := net.Dial("unix", s.path)
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

// authBlock is an apic_auth block for the simulator's developer user,
// with extra lines added.
func (e *testEnv) authBlock(extra ...string) string {
	lines := []string{
		"server " + e.simSrv.URL,
		"realm " + apicsim.DefaultProviderRealm,
		"username " + apicsim.DefaultProviderUsername,
		"password {env.TEST_APIC_PASSWORD}",
		"client_id " + apicsim.DefaultClientID,
		"client_secret {env.TEST_APIC_CLIENT_SECRET}",
	}
	return "apic_auth {\n\t\t" + strings.Join(append(lines, extra...), "\n\t\t") + "\n\t}"
}

// caddyfile is a whole Caddyfile: debug logs to e.logFile, a server on
// e.sock, the given handlers, then reverse_proxy to the simulator.
func (e *testEnv) caddyfile(handlers string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %s
		level DEBUG
	}
}

http:// {
	bind unix/%s
	%s
	reverse_proxy %s
}
`, e.logFile, e.sock, handlers, e.simSrv.URL)
}

// load adapts and runs a Caddyfile; Caddy stops at the end of the test.
func (e *testEnv) load(caddyfileText string) error {
	e.t.Helper()
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
	if err != nil {
		return err
	}
	return e.loadJSON(cfgJSON)
}

// loadJSON runs a JSON config, and returns once the previous config's
// servers (if any) have stopped accepting connections on the test's
// sockets.
//
// In a reload Caddy starts the new server on the same socket, then shuts
// the old one down with net/http's Server.Shutdown, which closes a
// connection whose request it reads once shutting down without answering
// it. A connection that the old server accepted just before its listener
// closed thus gets EOF, with any handler (a plain reverse_proxy or respond
// too), and a client resends a GET by itself only on a reused connection.
// Caddy's admin server is replaced the same way. So the test's clients do
// not dial while a reload hands over.
func (e *testEnv) loadJSON(cfgJSON []byte) error {
	e.t.Helper()
	for _, s := range e.sockets {
		s.gate.Lock()
		defer s.gate.Unlock()
	}
	if err := caddy.Load(cfgJSON, true); err != nil {
		return err
	}
	e.t.Cleanup(func() { _ = caddy.Stop() })
	for _, s := range e.sockets {
		if err := s.handOver(); err != nil {
			return err
		}
	}
	return nil
}

func (e *testEnv) mustLoad(caddyfileText string) {
	e.t.Helper()
	if err := e.load(caddyfileText); err != nil {
		e.t.Fatal(err)
	}
}

// do sends a request through the proxy and returns the status, headers
// and body.
func (e *testEnv) do(method, path string, hdr http.Header) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://localhost"+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

// apiError decodes API Connect's error body, failing the test if the body
// is not of that shape.
func apiError(t *testing.T, body []byte) (int, []string) {
	t.Helper()
	var e struct {
		Status  *int     `json:"status"`
		Message []string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Status == nil || len(e.Message) == 0 {
		t.Fatalf("body is not API Connect's error shape: %s", body)
	}
	return *e.Status, e.Message
}

// logText returns what Caddy logged so far.
func (e *testEnv) logText() string {
	e.t.Helper()
	data, err := os.ReadFile(e.logFile)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(data)
}

func setSecrets(t *testing.T) {
	t.Setenv("TEST_APIC_PASSWORD", apicsim.DefaultProviderPassword)
	t.Setenv("TEST_APIC_CLIENT_SECRET", apicsim.DefaultClientSecret)
}
