package caddymodule

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/oauth2"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
	"github.com/apic-tools/apic-auth-proxy/internal/shared"
)

// readOnlyScope is a read-only proxy's scope, in no particular order.
var readOnlyScope = []string{"product:view", "my:view", "org:view"}

// tokenScopes are the scopes of an access token, as its claim has them.
func tokenScopes(t *testing.T, token string) []string {
	t.Helper()
	s, ok := apic.TokenScopes(token)
	if !ok {
		t.Fatalf("the token names no scopes")
	}
	return apic.CanonicalScopes(s)
}

func TestScopeJSON(t *testing.T) {
	var h Handler
	if err := json.Unmarshal([]byte(`{"server":"https://apim.example.com","scope":["my:view","product:view"]}`), &h); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.Scope, []string{"my:view", "product:view"}) {
		t.Fatalf("Scope = %q", h.Scope)
	}
	out, err := json.Marshal(Handler{Server: "https://apim.example.com"})
	if err != nil || strings.Contains(string(out), "scope") {
		t.Fatalf("a handler without scope marshals to %s (%v), want no scope", out, err)
	}
}

func TestScopeProvisionErrors(t *testing.T) {
	on := true
	for _, tc := range []struct {
		name string
		mod  func(h *Handler)
		want string
	}{
		{"empty name", func(h *Handler) { h.Scope = []string{"my:view", ""} }, "scope: an empty scope name"},
		{"names in one value", func(h *Handler) { h.Scope = []string{"my:view product:view"} }, `scope: "my:view product:view" holds a space: give each scope as a value of its own`},
		{"placeholder", func(h *Handler) { h.Scope = []string{"{env.APIC_SCOPE}"} }, `scope: "{env.APIC_SCOPE}" is a placeholder`},
		{"sign-out without my:manage", func(h *Handler) { h.Scope, h.SignOutOnStop = readOnlyScope, &on },
			"sign_out_on_stop on and scope my:view org:view product:view exclude each other: POST /api/me/sign-out needs the scope my:manage, which scope leaves out; add my:manage to scope, or set sign_out_on_stop off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := simHandler("https://apim.example.com")
			tc.mod(h)
			err := provision(t, h)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestScopeSignOutOnStop: a token without my:manage cannot sign out, so
// none is attempted unless sign_out_on_stop asks, which is an error.
func TestScopeSignOutOnStop(t *testing.T) {
	on, off := true, false
	for _, tc := range []struct {
		scope  []string
		shared *SharedSession
		set    *bool
		want   bool
		why    bool // the sign-out is left out because of the scope
	}{
		{nil, nil, nil, true, false},
		{readOnlyScope, nil, nil, false, true},
		{readOnlyScope, nil, &off, false, false},
		{append([]string{"my:manage"}, readOnlyScope...), nil, nil, true, false},
		{append([]string{"my:manage"}, readOnlyScope...), nil, &on, true, false},
		{readOnlyScope, &SharedSession{}, nil, false, false},
	} {
		h := simHandler("https://apim.example.com")
		h.Scope, h.SharedSession, h.SignOutOnStop = tc.scope, tc.shared, tc.set
		cfg, err := h.resolve()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.signOutOnStop != tc.want || (cfg.noSignOut != "") != tc.why {
			t.Errorf("scope %q, shared_session %v, sign_out_on_stop %v: signs out %v (%q), want %v", tc.scope, tc.shared != nil, tc.set, cfg.signOutOnStop, cfg.noSignOut, tc.want)
		}
	}
}

// TestScopeNoSignOutAtStop: when the last handler of an identity whose
// token lacks my:manage stops, no sign-out is sent (it would be refused);
// with my:manage it is.
func TestScopeNoSignOutAtStop(t *testing.T) {
	for _, tc := range []struct {
		scope    []string
		signOuts int
	}{
		{readOnlyScope, 0},
		{append([]string{"my:manage"}, readOnlyScope...), 1},
	} {
		sim, srv := simtest.Start(t)
		h := simHandler(srv.URL)
		h.Scope = tc.scope
		if err := provision(t, h); err != nil {
			t.Fatal(err)
		}
		token(t, h)
		if err := h.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if n := sim.Stats().Paths["/api/me/sign-out"]; n != tc.signOuts {
			t.Errorf("scope %q: %d sign-outs at stop, want %d", tc.scope, n, tc.signOuts)
		}
	}
}

// TestScopeSeparatesTokens: a handler of a narrower scope never shares the
// token of a handler of the same user without it; the same set in another
// order is the same identity.
func TestScopeSeparatesTokens(t *testing.T) {
	sim, srv := simtest.Start(t)
	full, readOnly, again := simHandler(srv.URL), simHandler(srv.URL), simHandler(srv.URL)
	readOnly.Scope = readOnlyScope
	again.Scope = []string{"org:view", "my:view", "product:view", "my:view"}
	off := false
	for _, h := range []*Handler{full, readOnly, again} {
		// The scope alone tells them apart (a read-only token does not
		// sign out by default).
		h.SignOutOnStop = &off
		if err := provision(t, h); err != nil {
			t.Fatal(err)
		}
	}
	if full.key == readOnly.key || full.id == readOnly.id {
		t.Fatal("the read-only handler shares the full handler's identity")
	}
	if again.key != readOnly.key || again.id != readOnly.id {
		t.Fatal("the same scopes in another order make another identity")
	}
	fullTok, roTok, againTok := token(t, full), token(t, readOnly), token(t, again)
	if fullTok == roTok {
		t.Fatal("the read-only handler got the full token")
	}
	if againTok != roTok {
		t.Fatal("the same scopes in another order got another token")
	}
	if n := sim.TokenRequests("", ""); n != 2 {
		t.Fatalf("token requests = %d, want 2", n)
	}
	want := apic.CanonicalScopes(readOnlyScope)
	if got := tokenScopes(t, roTok); !slices.Equal(got, want) {
		t.Errorf("the read-only token's scopes are %q, want %q", got, want)
	}
	if got := tokenScopes(t, fullTok); !slices.Contains(got, "my:manage") || !slices.Contains(got, "cloud:manage") {
		t.Errorf("the full token's scopes are %q, want the registration's", got)
	}

	// The status says what was asked for and what the token has; the
	// default name tells the two identities apart.
	st := readOnly.id.status()
	if !slices.Equal(st.Scope, want) || !slices.Equal(apic.CanonicalScopes(st.TokenScopes), want) {
		t.Errorf("status scope %q, token_scopes %q, want %q for both", st.Scope, st.TokenScopes, want)
	}
	if wantName := full.id.name + " (scope my:view org:view product:view)"; st.Name != wantName {
		t.Errorf("name %q, want %q", st.Name, wantName)
	}
	if st := full.id.status(); st.Scope != nil || len(st.TokenScopes) != len(apicsim.AllScopes) {
		t.Errorf("the full identity's status: scope %q, token_scopes %q", st.Scope, st.TokenScopes)
	}
}

// TestScopeSharedSessionSeparates: in a fleet's storage, a narrower scope
// has a record of its own and never adopts the full token.
func TestScopeSharedSessionSeparates(t *testing.T) {
	sim, srv := simtest.Start(t)
	dir := t.TempDir()
	full, readOnly := simHandler(srv.URL), simHandler(srv.URL)
	full.SharedSession, readOnly.SharedSession = fileShared(dir), fileShared(dir)
	readOnly.Scope = readOnlyScope
	for _, h := range []*Handler{full, readOnly} {
		if err := provision(t, h); err != nil {
			t.Fatal(err)
		}
	}
	fullTok := token(t, full)
	roTok := token(t, readOnly)
	if roTok == fullTok || sim.TokenRequests("", "") != 2 {
		t.Fatalf("the read-only proxy adopted the full token (%d token requests)", sim.TokenRequests("", ""))
	}
	if got := tokenScopes(t, roTok); !slices.Equal(got, apic.CanonicalScopes(readOnlyScope)) {
		t.Errorf("the read-only token's scopes are %q", got)
	}
	files, err := filepath.Glob(filepath.Join(dir, shared.Prefix+"*"))
	if err != nil || len(files) != 2 {
		t.Fatalf("records %v (%v), want one for each scope", files, err)
	}
	if full.id.shared.store.Key() == readOnly.id.shared.store.Key() {
		t.Fatal("one record key for both scopes")
	}
}

// TestScopeTokenFiles: two handlers of one user but other scopes are two
// identities, and may not keep one token file.
func TestScopeTokenFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	full, readOnly := simHandler("https://apim.example.com"), simHandler("https://apim.example.com")
	full.TokenFile, readOnly.TokenFile = path, path
	readOnly.Scope = readOnlyScope
	off := false
	full.SignOutOnStop, readOnly.SignOutOnStop = &off, &off // the scope alone differs
	cfg := &caddy.Config{}
	if err := json.Unmarshal(handlersConfig(t, full, readOnly), cfg); err != nil {
		t.Fatal(err)
	}
	err := caddy.Validate(cfg)
	if want := "token_file: " + path + " is kept for another identity already"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want %q", err, want)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("validating wrote %s: %v", path, err)
	}
}

// TestScopeRefused: a scope the registration lacks answers the client 502
// in API Connect's shape naming the scope and what to fix, and is not
// asked again before the cool-down.
func TestScopeRefused(t *testing.T) {
	sim, srv := simtest.Start(t, func(c *apicsim.Config) {
		c.Registrations[0].Scopes = []string{"my:view", "org:view"}
	})
	h := simHandler(srv.URL)
	h.Scope = []string{"my:view", "product:view"}
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		rec := httptest.NewRecorder()
		err := h.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/api/me", nil), caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			t.Error("next called without a token")
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		status, msg := simtest.APIError(t, rec.Body.Bytes())
		if rec.Code != http.StatusBadGateway || status != http.StatusBadGateway || len(msg) != 1 || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("request %d: %d %v %s, want 502 with Retry-After", i, rec.Code, rec.Header(), rec.Body)
		}
		for _, want := range []string{
			"refused the password token request: status 400: scope product:view is not granted to this client registration",
			`; the request asked for scope "my:view product:view": name in scope (apic-proxy --scope) only scopes the client registration has`,
		} {
			if !strings.Contains(msg[0], want) {
				t.Errorf("request %d: message %q lacks %q", i, msg[0], want)
			}
		}
	}
	if n := sim.TokenRequests("", ""); n != 1 {
		t.Errorf("%d token requests for 3 requests, want 1: the refusal lasts", n)
	}
	if st := h.id.status(); st.State != string(session.StateCoolingDown) || st.Cause != "refused" {
		t.Errorf("state %q cause %q, want cooling_down refused", st.State, st.Cause)
	}
}

func TestUnknownScopes(t *testing.T) {
	got := unknownScopes([]string{"my:view", "my:veiw", "prodcut:view", "brand-new:scope"})
	want := []string{"my:veiw (did you mean my:view?)", "prodcut:view (did you mean product:view?)", "brand-new:scope"}
	if !slices.Equal(got, want) {
		t.Errorf("unknownScopes = %q, want %q", got, want)
	}
	core, logs := observer.New(zap.InfoLevel)
	h := &Handler{logger: zap.New(core)}
	h.warnUnknownScopes(apic.CanonicalScopes(readOnlyScope))
	if logs.Len() != 0 {
		t.Fatalf("known scopes logged %v", logs.All())
	}
	h.warnUnknownScopes([]string{"my:veiw"})
	entries := logs.All()
	if len(entries) != 1 || entries[0].Level != zap.WarnLevel || !strings.Contains(entries[0].Message, "not known to have") {
		t.Fatalf("logged %v, want one warning", entries)
	}
	if u := entries[0].ContextMap()["unknown"]; !slices.Equal(anyStrings(u), []string{"my:veiw (did you mean my:view?)"}) {
		t.Errorf("unknown = %v", u)
	}
}

// anyStrings reads a zap.Strings field as the observer gives it.
func anyStrings(v any) []string {
	var out []string
	if list, ok := v.([]any); ok {
		for _, s := range list {
			out = append(out, s.(string))
		}
	}
	return out
}

// testJWT is an unsigned JWT with the given claims.
func testJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256"}`)) + "." + enc.EncodeToString(payload) + "." + enc.EncodeToString([]byte("sig"))
}

// TestCheckTokenScopes: a token broader than scope asked for (the server
// ignored the narrowing), narrower, or silent about its scopes is warned
// of, once until the difference changes.
func TestCheckTokenScopes(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	id := &identity{name: "ro", scope: []string{"my:view", "product:view"}}
	id.env.Store(&provisionEnv{logger: zap.New(core)})
	tok := func(access string) *session.Token {
		return &session.Token{Token: &apic.Token{Token: oauth2.Token{AccessToken: access}}}
	}
	for i, tc := range []struct {
		token string
		want  string // the warning's start; "" for none
	}{
		{testJWT(t, map[string]any{"scopes": []string{"product:view", "my:view"}}), ""},
		{testJWT(t, map[string]any{"scopes": []string{"my:view", "my:manage", "product:view"}}), "the API Connect token has scopes that scope did not ask for"},
		{testJWT(t, map[string]any{"scopes": []string{"my:manage", "my:view", "product:view"}}), ""}, // the same again
		{testJWT(t, map[string]any{"scopes": []string{"my:view"}}), "the API Connect token lacks scopes that scope asked for"},
		{"opaque", "the API Connect token does not name its scopes"},
		{testJWT(t, map[string]any{"scopes": []string{"my:view", "product:view"}}), ""},
	} {
		before := logs.Len()
		id.checkTokenScopes(tok(tc.token))
		got := logs.All()[before:]
		switch {
		case tc.want == "" && len(got) != 0:
			t.Errorf("token %d: logged %v, want nothing", i, got)
		case tc.want != "" && (len(got) != 1 || got[0].Level != zap.WarnLevel || !strings.HasPrefix(got[0].Message, tc.want)):
			t.Errorf("token %d: logged %v, want one warning %q", i, got, tc.want)
		}
	}
	if extra := logs.FilterField(zap.Strings("not_asked_for", []string{"my:manage"})).Len(); extra != 1 {
		t.Errorf("%d warnings name my:manage as not asked for, want 1", extra)
	}

	// Without scope nothing is compared.
	all := &identity{name: "full"}
	all.env.Store(&provisionEnv{logger: zap.New(core)})
	before := logs.Len()
	all.checkTokenScopes(tok("opaque"))
	if logs.Len() != before {
		t.Errorf("an identity without scope logged %v", logs.All()[before:])
	}
}
