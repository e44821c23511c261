package caddymodule

import (
	"context"
	"encoding/json"
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
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", e.sock)
		},
		MaxIdleConnsPerHost: 200,
	}
	e.client = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	t.Cleanup(transport.CloseIdleConnections)
	return e
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
	if err := caddy.Load(cfgJSON, true); err != nil {
		return err
	}
	e.t.Cleanup(func() { _ = caddy.Stop() })
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
