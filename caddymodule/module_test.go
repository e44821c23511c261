package caddymodule

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

func provision(t testing.TB, h *Handler) error {
	t.Helper()
	ctx := testContext(t)
	t.Cleanup(func() { _ = h.Cleanup() })
	return h.Provision(ctx)
}

// contextApp is a test app that hands out the context of the config it is
// loaded in: a handler provisioned with it finds the config's apps.
type contextApp struct{}

var capturedContext caddy.Context

func (contextApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "apic_auth_test_context", New: func() caddy.Module { return new(contextApp) }}
}
func (*contextApp) Provision(ctx caddy.Context) error { capturedContext = ctx; return nil }
func (*contextApp) Start() error                      { return nil }
func (*contextApp) Stop() error                       { return nil }

func init() { caddy.RegisterModule(contextApp{}) }

// testContext runs a config with nothing but contextApp and returns its
// context; Caddy stops at the end of the test. Caddy's own warnings (the
// admin endpoint is off) stay out of the test and benchmark output.
func testContext(t testing.TB) caddy.Context {
	t.Helper()
	if err := caddy.Load([]byte(`{"admin":{"disabled":true,"config":{"persist":false}},"logging":{"logs":{"default":{"level":"ERROR"}}},"apps":{"apic_auth_test_context":{}}}`), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	return capturedContext
}

func simHandler(url string) *Handler {
	return &Handler{
		Server: url, Realm: apicsim.DefaultProviderRealm,
		Username: apicsim.DefaultProviderUsername, Password: apicsim.DefaultProviderPassword,
		ClientID: apicsim.DefaultClientID, ClientSecret: apicsim.DefaultClientSecret,
	}
}

func TestProvisionErrors(t *testing.T) {
	const secret = "s3cret-Value"
	t.Setenv("APIC_TEST_EMPTY", "")
	t.Setenv("APIC_TEST_SECRET", secret)
	full := func(mod func(h *Handler)) *Handler {
		h := simHandler("https://apim.example.com")
		mod(h)
		return h
	}
	for _, tc := range []struct {
		name  string
		h     *Handler
		wants []string
	}{
		{"nothing", &Handler{}, []string{"missing server, username (or api_key), password (or api_key), realm, client_id, client_secret"}},
		{"no client", full(func(h *Handler) { h.ClientID, h.ClientSecret = "", "" }), []string{"missing client_id, client_secret"}},
		{"no realm", full(func(h *Handler) { h.Realm = "" }), []string{"missing realm"}},
		{"unset env", full(func(h *Handler) { h.Password = "{env.APIC_TEST_UNSET_VAR}" }), []string{"password: placeholder {env.APIC_TEST_UNSET_VAR} is unset"}},
		{"empty env", full(func(h *Handler) { h.ClientSecret = "{env.APIC_TEST_EMPTY}" }), []string{"client_secret: placeholder {env.APIC_TEST_EMPTY}"}},
		{"missing file", full(func(h *Handler) { h.Password = "{file./nonexistent/apic-password}" }), []string{"password: placeholder {file./nonexistent/apic-password}"}},
		{"literal with placeholder", full(func(h *Handler) { h.Password = secret + "{env.APIC_TEST_UNSET_VAR}" }), []string{"password: placeholder {env.APIC_TEST_UNSET_VAR}"}},
		{"both grants", full(func(h *Handler) { h.APIKey = "{env.APIC_TEST_SECRET}" }), []string{"set either api_key or username and password"}},
		{"trailing api", full(func(h *Handler) { h.Server = "https://apim.example.com/api" }), []string{"server: give the base URL without the trailing /api"}},
		{"credentials in URL", full(func(h *Handler) { h.Server = "https://u:" + secret + "@apim.example.com" }), []string{"server: the URL must not carry credentials"}},
		{"no scheme", full(func(h *Handler) { h.Server = "apim.example.com" }), []string{"server: want an http:// or https:// URL"}},
		{"bad realm", full(func(h *Handler) { h.Realm = "default-idp-2" }), []string{`realm "default-idp-2": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://apim.example.com`}},
		{"realm without identity provider", full(func(h *Handler) { h.Realm = "provider/" }), []string{`realm "provider/": want <scope>/<identity provider>`}},
		{"insecure and CA", full(func(h *Handler) { h.TLSInsecureSkipVerify, h.TLSTrustedCACerts = true, []string{"/x.pem"} }), []string{"exclude each other"}},
		{"unreadable CA", full(func(h *Handler) { h.TLSTrustedCACerts = []string{"/nonexistent/ca.pem"} }), []string{"tls_trusted_ca_certs"}},
		{"max body without rewrite_links", full(func(h *Handler) { h.RewriteLinksMaxBody = 1 << 20 }), []string{"rewrite_links_max_body: set without rewrite_links"}},
		{"negative rewrite_links_max_body", full(func(h *Handler) { h.RewriteLinks, h.RewriteLinksMaxBody = true, -1 }), []string{"rewrite_links_max_body: want a size in bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := provision(t, tc.h)
			if err == nil {
				t.Fatal("provisioned, want an error")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q holds the secret", err)
			}
		})
	}
}

func TestProvisionResolvesPlaceholders(t *testing.T) {
	_, srv := simtest.Start(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(apicsim.DefaultClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("APIC_TEST_PASSWORD", apicsim.DefaultProviderPassword)
	t.Setenv("APIC_TEST_SERVER", srv.URL)
	h := simHandler("{env.APIC_TEST_SERVER}")
	h.Password = "{env.APIC_TEST_PASSWORD}"
	h.ClientSecret = "{file." + secretFile + "}"
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	// The config keeps the placeholders.
	if h.Password != "{env.APIC_TEST_PASSWORD}" || !strings.HasPrefix(h.ClientSecret, "{file.") {
		t.Fatalf("provision rewrote the config: %q %q", h.Password, h.ClientSecret)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://localhost/api/me", nil)
	var got string
	err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		got = r.Header.Get("Authorization")
		return nil
	}))
	if err != nil || !strings.HasPrefix(got, "Bearer ey") {
		t.Fatalf("ServeHTTP: %v, Authorization %q", err, got)
	}
}

func TestServeHTTPSetsPrebuiltHeader(t *testing.T) {
	sim, srv := simtest.Start(t)
	h := simHandler(srv.URL)
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	var seen [][]string
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if n := len(r.Header.Values("Authorization")); n != 1 {
			t.Errorf("%d Authorization headers", n)
		}
		seen = append(seen, r.Header["Authorization"])
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	for _, client := range []string{"", "Basic Zm9vOmJhcg==", "Bearer stale"} {
		req := httptest.NewRequest("GET", "http://localhost/api/me", nil)
		if client != "" {
			req.Header.Add("Authorization", client)
			req.Header.Add("Authorization", "Bearer second")
		}
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, req, next); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 3 || &seen[0][0] != &seen[1][0] || &seen[1][0] != &seen[2][0] {
		t.Fatal("the header value was not built once and shared")
	}
	if !strings.HasPrefix(seen[0][0], "Bearer ey") {
		t.Fatalf("Authorization %q", seen[0][0])
	}
	if n := sim.TokenRequests("", ""); n != 1 {
		t.Fatalf("token requests = %d", n)
	}
}

func TestServeHTTPClientGoneIsNot502(t *testing.T) {
	sim, srv := simtest.Start(t)
	sim.FailTokenRequests(1, apicsim.Fault{Hang: 5 * time.Second})
	h := simHandler(srv.URL)
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req := httptest.NewRequest("GET", "http://localhost/api/me", nil).WithContext(ctx)
	rec := httptest.NewRecorder()
	err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Error("next called without a token")
		return nil
	}))
	var he caddyhttp.HandlerError
	if !asHandlerError(err, &he) || he.StatusCode != statusClientClosedRequest {
		t.Fatalf("error %v, want a 499 handler error", err)
	}
}

func asHandlerError(err error, he *caddyhttp.HandlerError) bool {
	h, ok := err.(caddyhttp.HandlerError)
	if ok {
		*he = h
	}
	return ok
}

// TestFailureMessages checks the 502 body for each cause of failure.
func TestFailureMessages(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()

	hang, hangSrv := simtest.Start(t)
	hang.FailTokenRequests(-1, apicsim.Fault{Hang: 10 * time.Second})

	good, goodSrv := simtest.Start(t)
	tlsSrv := httptest.NewTLSServer(good) // certificate of an unknown authority
	defer tlsSrv.Close()

	_, mismatch, other := simtest.StartTLS(t, []string{"apim.example.com"})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, other.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		h     *Handler
		wants []string
	}{
		{"unreachable", simHandler(closedURL), []string{"unreachable", "connection refused"}},
		{"timeout", func() *Handler {
			h := simHandler(hangSrv.URL)
			h.Timeout = caddy.Duration(100 * time.Millisecond)
			return h
		}(), []string{"timed out"}},
		{"untrusted", simHandler(tlsSrv.URL), []string{"is not trusted", "unknown authority", "; name its CA with tls_trusted_ca_certs (apic-proxy --ca-cert)"}},
		{"hostname mismatch", func() *Handler { h := simHandler(mismatch.URL); h.TLSTrustedCACerts = []string{caFile}; return h }(), []string{"is not trusted", "127.0.0.1", "; give the server by a name the certificate is for"}},
		{"wrong password", func() *Handler { h := simHandler(goodSrv.URL); h.Password = "wr0ng-pa55word-1"; return h }(), []string{"refused the credentials (password grant): status 401: Invalid username or password."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := provision(t, tc.h); err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			err := tc.h.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/api/me", nil), caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
				t.Error("next called without a token")
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			if rec.Code != 502 || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			if rec.Header().Get("Retry-After") == "" {
				t.Error("no Retry-After")
			}
			status, msg := simtest.APIError(t, rec.Body.Bytes())
			if status != 502 || len(msg) != 1 {
				t.Fatalf("body %s", rec.Body)
			}
			for _, w := range tc.wants {
				if !strings.Contains(msg[0], w) {
					t.Errorf("message %q lacks %q", msg[0], w)
				}
			}
			if strings.Contains(msg[0], "wr0ng-pa55word-1") || strings.Contains(msg[0], apicsim.DefaultClientSecret) {
				t.Errorf("message %q holds a secret", msg[0])
			}
		})
	}
}

// TestCaddyfileExample validates the shipped example and checks that its
// adapted JSON holds placeholders, not the secrets.
func TestCaddyfileExample(t *testing.T) {
	const password, secret = "example-Passw0rd", "example-client-secret"
	for k, v := range map[string]string{
		"APIC_SERVER": "https://apim.example.com", "APIC_REALM": "provider/default-idp-2",
		"APIC_USERNAME": "me", "APIC_PASSWORD": password,
		"APIC_CLIENT_ID": "id", "APIC_CLIENT_SECRET": secret,
	} {
		t.Setenv(k, v)
	}
	data, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(data, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{password, secret} {
		if strings.Contains(string(cfgJSON), s) {
			t.Fatalf("adapted JSON holds a secret: %s", cfgJSON)
		}
	}
	for _, s := range []string{`"password":"{env.APIC_PASSWORD}"`, `"dial":"apim.example.com:443"`, `"listen":["127.0.0.1:9080"]`} {
		if !strings.Contains(string(cfgJSON), s) {
			t.Errorf("adapted JSON lacks %s", s)
		}
	}
	if err := caddy.Validate(mustConfig(t, cfgJSON)); err != nil {
		t.Fatalf("caddy validate: %v", err)
	}
}

func mustConfig(t *testing.T, data []byte) *caddy.Config {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}
