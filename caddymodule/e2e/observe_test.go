package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

func TestAdminStatusRefreshAndMetricsAcrossReload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAuth("name ci-developer"))
	cf := e.caddyfile(e.authBlock())

	status, body := e.adminDo("GET", "/apic_auth/status")
	if status != 200 || !strings.Contains(body, `"state":"no_token"`) {
		t.Fatalf("status before traffic: %d %s", status, body)
	}
	for range 3 {
		e.mustOK("/api/me", "traffic")
	}
	status, body = e.adminDo("GET", "/apic_auth/status")
	var st []identityStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || status != 200 || len(st) != 1 {
		t.Fatalf("status: %d %s", status, body)
	}
	got := st[0]
	if got.Name != "ci-developer" || got.User != "developer" || got.Realm != apicsim.DefaultProviderRealm ||
		got.State != "valid" || got.TokenExpires == nil || got.LastRefresh == nil || got.Counts.TokenRequests["password"]["ok"] != 1 {
		t.Fatalf("status %+v", got)
	}
	token := strings.TrimPrefix(e.upstreamAuth()[0], "Bearer ")
	for _, secret := range []string{apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret, token[:40]} {
		if strings.Contains(body, secret) {
			t.Fatal("status holds a secret or the token")
		}
	}

	// Reload the same identity; counters carry on.
	e.mustReload(strings.Replace(cf, "reverse_proxy", "header X-Gen 2\n\treverse_proxy", 1))
	e.mustOK("/api/me", "after the reload")
	status, body = e.adminDo("POST", "/apic_auth/refresh")
	if status != 200 || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("refresh: %d %s", status, body)
	}
	if n := e.sim.TokenRequests("password", "ok"); n != 2 {
		t.Fatalf("token requests after reload and refresh = %d, want 2", n)
	}
	if s, _ := e.adminDo("POST", "/apic_auth/refresh?name=nobody"); s != 404 {
		t.Fatalf("refresh of an unknown identity: %d", s)
	}
	if s, _ := e.adminDo("GET", "/apic_auth/refresh"); s != 405 {
		t.Fatalf("GET refresh: %d", s)
	}

	metrics := e.metrics()
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
	t.Parallel()
	e := newEnv(t)
	e.mustOK("/api/me", "first request")
	e.sim.RevokeAll()
	e.mustOK("/api/me", "after a revocation")
	e.sim.RevokeAll()
	e.sim.FailTokenRequests(-1, apicsim.Fault{Status: 503})
	if s, _, _ := e.do("GET", "/api/me", nil); s != 502 {
		t.Fatalf("with the token endpoint down: %d", s)
	}
	if s, _, _ := e.do("GET", "/api/me", nil); s != 502 {
		t.Fatalf("backing off: %d", s)
	}
	metrics := e.metrics()
	name := strings.TrimPrefix(e.simURL, "http://") + "/" + apicsim.DefaultProviderRealm
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

// TestEvents: a token obtained and a token request failed are events of
// Caddy's events app, with the identity, the grant and the failure's
// cause, and no secret.
func TestEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withEvents(), withAuth("name events-test"))
	e.mustOK("/api/me", "first request")
	e.sim.RevokeAll()
	e.sim.FailTokenRequests(1, apicsim.Fault{Status: 500})
	if s, _, _ := e.do("GET", "/api/me", nil); s != 502 {
		t.Fatal(s)
	}
	events := e.loggedEvents()
	var names []string
	for _, ev := range events {
		names = append(names, fmt.Sprintf("%s:%v:%v", ev.Name, ev.Data["identity"], ev.Data["grant"]))
	}
	got := strings.Join(names, " ")
	want := "apic_auth_token_obtained:events-test:password apic_auth_token_failed:events-test:password"
	if got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	obtained, failed := events[0].Data, events[1].Data
	for _, k := range []string{"server", "expires", "refresh_at"} {
		if obtained[k] == nil {
			t.Errorf("obtained event lacks %s: %v", k, obtained)
		}
	}
	if failed["cause"] != "server_error" || failed["status"] != float64(500) || failed["retry_at"] == nil ||
		!strings.Contains(fmt.Sprint(failed["error"]), "status 500") {
		t.Fatalf("failure event data %v", failed)
	}
	for _, ev := range events {
		for k, v := range ev.Data {
			if s := fmt.Sprint(v); strings.Contains(s, apicsim.DefaultProviderPassword) || strings.Contains(s, apicsim.DefaultClientSecret) {
				t.Fatalf("event data %s holds a secret", k)
			}
		}
	}
}
