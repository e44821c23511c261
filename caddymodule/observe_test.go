package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// adminClient talks to Caddy's admin API on a unix socket.
// adminClient is a client of the admin socket of the running config,
// handed over at every reload like the proxy's.
func (e *testEnv) adminClient(sock string) *http.Client {
	e.t.Helper()
	s := e.socket(sock)
	if err := s.openSentinel(); err != nil {
		e.t.Fatal(err)
	}
	return s.client
}

func adminDo(t *testing.T, c *http.Client, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://localhost"+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// withAdmin turns the test Caddyfile's admin off into an admin socket.
func withAdmin(cf, sock string) string {
	return strings.Replace(cf, "admin off", "admin unix/"+sock, 1)
}

type eventRecorder struct {
	mu     sync.Mutex
	events []caddy.Event
}

func (r *eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	return nil
}

func (r *eventRecorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, fmt.Sprintf("%s:%v:%v", e.Name(), e.Data["identity"], e.Data["grant"]))
	}
	return out
}

func TestAdminStatusRefreshAndMetricsAcrossReload(t *testing.T) {
	setSecrets(t)
	e := newTestEnv(t, apicsim.DefaultConfig())
	adminSock := filepath.Join(filepath.Dir(e.sock), "admin.sock")
	cf := withAdmin(e.caddyfile(e.authBlock("name ci-developer")), adminSock)
	e.mustLoad(cf)
	admin := e.adminClient(adminSock)

	status, body := adminDo(t, admin, "GET", "/apic_auth/status")
	if status != 200 || !strings.Contains(body, `"state":"no_token"`) {
		t.Fatalf("status before traffic: %d %s", status, body)
	}
	for range 3 {
		if s, _, _ := e.do("GET", "/api/me", nil); s != 200 {
			t.Fatal(s)
		}
	}
	status, body = adminDo(t, admin, "GET", "/apic_auth/status")
	var st []identityStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || status != 200 || len(st) != 1 {
		t.Fatalf("status: %d %s", status, body)
	}
	got := st[0]
	if got.Name != "ci-developer" || got.User != "developer" || got.Realm != apicsim.DefaultProviderRealm ||
		got.State != "valid" || got.TokenExpires == nil || got.LastRefresh == nil || got.Counts.TokenRequests["password"]["ok"] != 1 {
		t.Fatalf("status %+v", got)
	}
	e.mu.Lock()
	token := strings.TrimPrefix(e.seenAuth[0], "Bearer ")
	e.mu.Unlock()
	for _, secret := range []string{apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret, token[:40]} {
		if strings.Contains(body, secret) {
			t.Fatal("status holds a secret or the token")
		}
	}

	// Reload the same identity; counters carry on.
	e.mustLoad(strings.Replace(cf, "reverse_proxy", "header X-Gen 2\n\treverse_proxy", 1))
	if s, _, _ := e.do("GET", "/api/me", nil); s != 200 {
		t.Fatal(s)
	}
	status, body = adminDo(t, admin, "POST", "/apic_auth/refresh")
	if status != 200 || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("refresh: %d %s", status, body)
	}
	if n := e.sim.TokenRequests("password", "ok"); n != 2 {
		t.Fatalf("token requests after reload and refresh = %d, want 2", n)
	}
	if s, _ := adminDo(t, admin, "POST", "/apic_auth/refresh?name=nobody"); s != 404 {
		t.Fatalf("refresh of an unknown identity: %d", s)
	}
	if s, _ := adminDo(t, admin, "GET", "/apic_auth/refresh"); s != 405 {
		t.Fatalf("GET refresh: %d", s)
	}

	_, metrics := adminDo(t, admin, "GET", "/metrics")
	for _, want := range []string{
		`caddy_apic_auth_token_requests_total{grant="password",identity="ci-developer",outcome="ok"} 2`,
		`caddy_apic_auth_token_request_duration_seconds_count{identity="ci-developer"} 2`,
		`caddy_apic_auth_token_expiry_seconds{identity="ci-developer"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, banned := range []string{`="developer"`, apicsim.DefaultClientID, apicsim.DefaultProviderPassword} {
		if strings.Contains(metrics, banned) {
			t.Errorf("metrics hold %q", banned)
		}
	}
}

func TestMetricsCountFailuresAndReplays(t *testing.T) {
	setSecrets(t)
	e := newTestEnv(t, apicsim.DefaultConfig())
	adminSock := filepath.Join(filepath.Dir(e.sock), "admin.sock")
	e.mustLoad(withAdmin(e.caddyfile(e.authBlock()), adminSock))
	if s, _, _ := e.do("GET", "/api/me", nil); s != 200 {
		t.Fatal(s)
	}
	e.sim.RevokeAll()
	if s, _, _ := e.do("GET", "/api/me", nil); s != 200 {
		t.Fatal(s)
	}
	e.sim.RevokeAll()
	e.sim.FailTokenRequests(-1, apicsim.Fault{Status: 503})
	if s, _, _ := e.do("GET", "/api/me", nil); s != 502 {
		t.Fatalf("with the token endpoint down: %d", s)
	}
	if s, _, _ := e.do("GET", "/api/me", nil); s != 502 {
		t.Fatalf("backing off: %d", s)
	}
	_, metrics := adminDo(t, e.adminClient(adminSock), "GET", "/metrics")
	name := strings.TrimPrefix(e.simSrv.URL, "http://") + "/" + apicsim.DefaultProviderRealm
	for _, want := range []string{
		fmt.Sprintf(`caddy_apic_auth_replays_total{identity=%q,outcome="ok"} 1`, name),
		fmt.Sprintf(`caddy_apic_auth_replays_total{identity=%q,outcome="no_token"} 1`, name),
		fmt.Sprintf(`caddy_apic_auth_token_requests_total{grant="password",identity=%q,outcome="server_error"} 1`, name),
		fmt.Sprintf(`caddy_apic_auth_failures_total{cause="server_error",identity=%q} 2`, name),
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Log(metrics)
	}
}

// testRecorder is an events handler module that records into recorded,
// and sends each event to the channel in forwarded, when one is set.
type testRecorder struct{}

var (
	recorded  = &eventRecorder{}
	forwarded atomic.Pointer[chan caddy.Event]
)

func (testRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.apic_auth_test_recorder", New: func() caddy.Module { return new(testRecorder) }}
}

func (testRecorder) Handle(ctx context.Context, e caddy.Event) error {
	if ch := forwarded.Load(); ch != nil {
		*ch <- e
	}
	return recorded.Handle(ctx, e)
}

// withEvents subscribes the recorder to the token events in a config.
func withEvents(t *testing.T, cfgJSON []byte) []byte {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["apps"].(map[string]any)["events"] = map[string]any{"subscriptions": []any{map[string]any{
		"events":   []string{EventTokenObtained, EventTokenFailed},
		"handlers": []any{map[string]any{"handler": "apic_auth_test_recorder"}},
	}}}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// loadForwardingEvents loads a Caddyfile with the recorder subscribed to
// the token events, and returns the channel they arrive on. The handler
// runs before a token's waiters go on, so an event received means the
// session holds the outcome.
func (e *testEnv) loadForwardingEvents(caddyfileText string) <-chan caddy.Event {
	e.t.Helper()
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	ch := make(chan caddy.Event, 1024)
	forwarded.Store(&ch)
	e.t.Cleanup(func() { forwarded.Store(nil) })
	if err := e.loadJSON(withEvents(e.t, cfgJSON)); err != nil {
		e.t.Fatal(err)
	}
	return ch
}

func init() { caddy.RegisterModule(testRecorder{}) }

func TestEvents(t *testing.T) {
	setSecrets(t)
	e := newTestEnv(t, apicsim.DefaultConfig())
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(e.caddyfile(e.authBlock("name events-test"))), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Subscribe the recorder with Caddy's events app, as a user would
	// subscribe a notification handler.
	cfgJSON = withEvents(t, cfgJSON)
	recorded.mu.Lock()
	recorded.events = nil
	recorded.mu.Unlock()
	if err := e.loadJSON(cfgJSON); err != nil {
		t.Fatal(err)
	}

	if s, _, _ := e.do("GET", "/api/me", nil); s != 200 {
		t.Fatal(s)
	}
	e.sim.RevokeAll()
	e.sim.FailTokenRequests(1, apicsim.Fault{Status: 500})
	if s, _, _ := e.do("GET", "/api/me", nil); s != 502 {
		t.Fatal(s)
	}
	got := strings.Join(recorded.names(), " ")
	want := EventTokenObtained + ":events-test:password " + EventTokenFailed + ":events-test:password"
	if got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	recorded.mu.Lock()
	failed := recorded.events[1].Data
	recorded.mu.Unlock()
	if failed["cause"] != "server_error" || failed["status"] != 500 || !strings.Contains(failed["error"].(string), "status 500") {
		t.Fatalf("failure event data %v", failed)
	}
	for _, ev := range recorded.events {
		for k, v := range ev.Data {
			if s := fmt.Sprint(v); strings.Contains(s, apicsim.DefaultProviderPassword) || strings.Contains(s, apicsim.DefaultClientSecret) {
				t.Fatalf("event data %s holds a secret", k)
			}
		}
	}
}
