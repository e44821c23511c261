package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

func TestListenAddress(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9080":        "127.0.0.1:9080",
		":9080":                 "127.0.0.1:9080",
		"http://:9080":          "127.0.0.1:9080",
		"localhost:8080":        "localhost:8080",
		"0.0.0.0:9080":          "0.0.0.0:9080",
		"[::1]:9080":            "[::1]:9080",
		"unix//run/apic/x.sock": "unix//run/apic/x.sock",
	} {
		got, err := listenAddress(in)
		if err != nil || got != want {
			t.Errorf("listenAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"9080", "host", ""} {
		if _, err := listenAddress(bad); err == nil {
			t.Errorf("listenAddress(%q) accepted", bad)
		}
	}
}

func TestQuickStartConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		opts proxyOptions
		want string
	}{
		{proxyOptions{}, "missing --to (or --server, APIC_SERVER or --credentials: the API Connect platform API base URL), --username (APIC_USERNAME), a password (APIC_PASSWORD, --password-file or standard input), --realm (APIC_REALM), --client-id (APIC_CLIENT_ID), a client secret (APIC_CLIENT_SECRET or --client-secret-file)"},
		{proxyOptions{APIKey: "{env.K}", ClientID: "id"}, "missing --to (or --server, APIC_SERVER or --credentials: the API Connect platform API base URL), a client secret (APIC_CLIENT_SECRET or --client-secret-file)"},
		{proxyOptions{To: "https://h/api", APIKey: "{env.K}", ClientID: "id", ClientSecret: "{env.S}"}, "--to: give the base URL without the trailing /api"},
		{proxyOptions{To: "https://h/api", ToFrom: "APIC_SERVER", APIKey: "{env.K}", ClientID: "id", ClientSecret: "{env.S}"}, "APIC_SERVER: give the base URL without the trailing /api"},
		{proxyOptions{To: "https://h", APIKey: "{env.K}", ClientID: "id", ClientSecret: "{env.S}", Admin: "0.0.0.0:2019", From: ":9080"}, "--admin: want unix//path[|0600] or a loopback host:port"},
		{proxyOptions{To: "https://h", APIKey: "{env.K}", ClientID: "id", ClientSecret: "{env.S}", Admin: "127.0.0.1:0", From: ":9080"}, "--admin: want"},
		{proxyOptions{To: "https://h"}, "missing --username (APIC_USERNAME), a password (APIC_PASSWORD, --password-file or standard input), --realm (APIC_REALM), --client-id (APIC_CLIENT_ID), a client secret (APIC_CLIENT_SECRET or --client-secret-file)"},
		{proxyOptions{To: "https://h", Realm: "consumer:org:cat/cat-idp", Username: "u", Password: "{env.P}", ClientID: "id", ClientSecret: "{env.S}"}, `--realm (APIC_REALM) "consumer:org:cat/cat-idp": consumer realms are for the consumer API, and the proxy logs in to the platform API: want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://h`},
		{proxyOptions{To: "https://h", APIKey: "{env.K}", ClientID: "id", ClientSecret: "{env.S}", From: "9080"}, "--from: want host:port"},
		{proxyOptions{To: "https://h", APIKey: "{env.K}", ClientID: "id", ClientSecret: "{env.S}", From: ":9080", Scope: []string{"my:view", "{env.X}"}}, `--scope (APIC_SCOPE): "{env.X}" is a placeholder, which scope does not resolve`},
		{proxyOptions{To: "https://h", APIKey: "{env.K}", ClientID: "id", ClientSecret: "{env.S}", From: ":9080", Scope: []string{`my"view`}}, `--scope (APIC_SCOPE): "my\"view" has a character no scope name holds`},
	} {
		if _, _, err := tc.opts.config(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.opts, err, tc.want)
		}
	}
}

// TestQuickStartProxiesWithPrefixAndHost runs the quick start's config in
// Caddy against a simulator under a path prefix, as Cloud Pak for
// Integration serves the platform API, and checks the forwarded Host
// header, the prefix, and that the config holds no secret.
func TestQuickStartProxiesWithPrefixAndHost(t *testing.T) {
	const prefix = "/integration/apis/ns/inst"
	sim := simtest.New(t)
	var mu sync.Mutex
	var hosts []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, prefix+"/api/") {
			http.Error(w, "no prefix: "+r.URL.Path, http.StatusNotFound)
			return
		}
		mu.Lock()
		hosts = append(hosts, r.Host)
		mu.Unlock()
		r.URL.Path = strings.TrimPrefix(r.URL.Path, prefix)
		sim.ServeHTTP(w, r)
	}))
	defer upstream.Close()

	e := newTestEnv(t)
	t.Setenv("TEST_QS_PASSWORD", apicsim.DefaultProviderPassword)
	t.Setenv("TEST_QS_SECRET", apicsim.DefaultClientSecret)
	opts := proxyOptions{
		From: "unix/" + e.sock, To: upstream.URL + prefix,
		Realm: apicsim.DefaultProviderRealm, Username: apicsim.DefaultProviderUsername,
		Password: "{env.TEST_QS_PASSWORD}", ClientID: apicsim.DefaultClientID,
		ClientSecret: "{env.TEST_QS_SECRET}",
	}
	cfg, listen, err := opts.config()
	if err != nil {
		t.Fatal(err)
	}
	if listen != "unix/"+e.sock {
		t.Fatalf("listen %q", listen)
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cfgJSON), apicsim.DefaultProviderPassword) || strings.Contains(string(cfgJSON), apicsim.DefaultClientSecret) {
		t.Fatalf("quick start config holds a secret: %s", cfgJSON)
	}
	if err := caddy.Run(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	status, _, body := e.do("GET", "/api/me?fields=username", nil)
	if status != 200 || string(body) != `{"username":"developer"}` {
		t.Fatalf("GET /api/me: %d %s", status, body)
	}
	// No path may climb out of the prefix to another backend.
	for _, target := range []string{"/api/..%2f..%2f..%2f..%2fother", "/api/%2e%2e/%2e%2e/%2e%2e/%2e%2e/other", "/other"} {
		req, _ := http.NewRequest("GET", "http://localhost/", nil)
		req.URL.Opaque = target
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 && resp.StatusCode != 404 {
			t.Fatalf("GET %s: %d, want it refused", target, resp.StatusCode)
		}
	}
	want := strings.TrimPrefix(upstream.URL, "http://")
	mu.Lock()
	defer mu.Unlock()
	if len(hosts) != 2 || hosts[0] != want || hosts[1] != want {
		t.Fatalf("upstream saw Host %q, want %q for the token request and the call", hosts, want)
	}
	if sim.TokenRequests("password", "ok") != 1 {
		t.Fatal("no token request under the prefix")
	}
}

func TestQuickStartAllowedHosts(t *testing.T) {
	opts := proxyOptions{To: "https://h", APIKey: "{env.K}", ClientID: "id", ClientSecret: "{env.S}",
		From: "127.0.0.1:9080", AllowedHosts: []string{"apic-auth-proxy.tools.svc"},
		TokenFile: "/run/apic/token", APICConfigFile: "~/.apiconnect/token", Scope: []string{"product:view", "my:view"}}
	cfg, _, err := opts.config()
	if err != nil {
		t.Fatal(err)
	}
	cfgJSON, _ := json.Marshal(cfg)
	for _, want := range []string{`"allowed_hosts":["apic-auth-proxy.tools.svc"]`, `"token_file":"/run/apic/token"`, `"apic_config_file":"~/.apiconnect/token"`, `"scope":["product:view","my:view"]`} {
		if !strings.Contains(string(cfgJSON), want) {
			t.Fatalf("config %s lacks %s", cfgJSON, want)
		}
	}
}

func TestSecretPlaceholderKeepsSecretOutOfConfig(t *testing.T) {
	const name = "APIC_AUTH_PROXY_TEST_SECRET"
	t.Cleanup(func() { os.Unsetenv(name) })
	ph := secretPlaceholder(name, "pa{ss}word")
	if ph != "{env."+name+"}" {
		t.Fatalf("placeholder %q", ph)
	}
	got, err := caddy.NewReplacer().ReplaceOrErr(ph, true, true)
	if err != nil || got != "pa{ss}word" {
		t.Fatalf("resolved %q, %v", got, err)
	}
}

func TestValidity(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 7, 0, 0, time.Local)
	for d, want := range map[time.Duration]string{
		8*time.Hour - 300*time.Millisecond: "18:07 (8h)",
		90 * time.Minute:                   "11:37 (1h30m)",
		45*time.Minute + 20*time.Second:    "10:52 (45m)",
		20 * time.Second:                   "10:07 (20s)",
	} {
		if got := validity(now.Add(d), now); got != want {
			t.Errorf("validity(now+%s) = %q, want %q", d, got, want)
		}
	}
}

func TestQuickStartAdminAndGrace(t *testing.T) {
	base := proxyOptions{To: "https://h", APIKey: "{env.K}", ClientID: "id", ClientSecret: "{env.S}", From: "127.0.0.1:0"}
	for _, tc := range []struct {
		admin, want string
	}{
		{"", `"admin":{"disabled":true,"config":{"persist":false}}`},
		{"unix//run/a.sock|0600", `"admin":{"listen":"unix//run/a.sock|0600","config":{"persist":false}}`},
		{"127.0.0.1:2999", `"admin":{"listen":"127.0.0.1:2999","config":{"persist":false}}`},
	} {
		o := base
		o.Admin, o.GracePeriod = tc.admin, 3*time.Second
		cfg, _, err := o.config()
		if err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal(cfg)
		if !strings.Contains(string(js), tc.want) || !strings.Contains(string(js), `"grace_period":3000000000`) {
			t.Errorf("--admin %q: config %s lacks %s or the grace period", tc.admin, js, tc.want)
		}
	}
}
