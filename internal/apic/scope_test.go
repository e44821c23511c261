package apic_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

func TestKnownScopes(t *testing.T) {
	if !slices.IsSorted(apic.KnownScopes) || len(slices.Compact(slices.Clone(apic.KnownScopes))) != len(apic.KnownScopes) {
		t.Fatalf("KnownScopes is not sorted without duplicates: %q", apic.KnownScopes)
	}
	// Every scope the simulator gives a registration, which follows the
	// scopes seen in real ones, is known.
	for _, s := range apicsim.AllScopes {
		if !apic.KnownScope(s) {
			t.Errorf("KnownScope(%q) = false", s)
		}
	}
	for _, s := range []string{"my:veiw", "my", "", "product:view "} {
		if apic.KnownScope(s) {
			t.Errorf("KnownScope(%q) = true", s)
		}
	}
	if !apic.KnownScope(apic.ScopeSignOut) {
		t.Errorf("ScopeSignOut %q is not known", apic.ScopeSignOut)
	}
}

func TestCheckScope(t *testing.T) {
	for _, s := range []string{"my:view", "app:view:all", "product-drafts:edit", "x-new-scope:read"} {
		if err := apic.CheckScope(s); err != nil {
			t.Errorf("CheckScope(%q): %v", s, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "an empty scope name"},
		{"my:view product:view", `"my:view product:view" holds a space: give each scope as a value of its own`},
		{"my:view\tx", "holds a space"},
		{"{env.APIC_SCOPE}", "is a placeholder, which scope does not resolve"},
		{`my"view`, "has a character no scope name holds"},
		{`my\view`, "has a character no scope name holds"},
		{"my:vïew", "has a character no scope name holds"},
		{"my:\x00view", "has a character no scope name holds"},
	} {
		err := apic.CheckScope(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckScope(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestCanonicalScopes(t *testing.T) {
	in := []string{"product:view", "my:view", "product:view", "child:view"}
	got := apic.CanonicalScopes(in)
	if want := []string{"child:view", "my:view", "product:view"}; !slices.Equal(got, want) {
		t.Errorf("CanonicalScopes(%q) = %q, want %q", in, got, want)
	}
	if in[0] != "product:view" {
		t.Errorf("CanonicalScopes changed its argument: %q", in)
	}
	if got := apic.CanonicalScopes(nil); got != nil {
		t.Errorf("CanonicalScopes(nil) = %q, want nil", got)
	}
}

func TestTokenScopes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		token  string
		want   []string
		wantOK bool
	}{
		{"scopes claim", makeJWT(t, map[string]any{"scopes": []string{"my:view", "org:view"}}), []string{"my:view", "org:view"}, true},
		{"RFC 9068 scope claim", makeJWT(t, map[string]any{"scope": "my:view org:view"}), []string{"my:view", "org:view"}, true},
		{"empty scopes", makeJWT(t, map[string]any{"scopes": []string{}}), []string{}, true},
		{"no claim", makeJWT(t, map[string]any{"exp": 1}), nil, false},
		{"scopes not a list", makeJWT(t, map[string]any{"scopes": 7}), nil, false},
		{"not a JWT", "opaque-token", nil, false},
	} {
		got, ok := apic.TokenScopes(tc.token)
		if ok != tc.wantOK || !slices.Equal(got, tc.want) {
			t.Errorf("%s: TokenScopes = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestCompareScopes(t *testing.T) {
	extra, missing := apic.CompareScopes([]string{"my:view", "product:view"}, []string{"product:view", "my:view"})
	if extra != nil || missing != nil {
		t.Errorf("same set: extra %q missing %q, want none", extra, missing)
	}
	extra, missing = apic.CompareScopes([]string{"my:view", "product:view", "my:view"}, []string{"my:manage", "my:view", "cloud:manage"})
	if !slices.Equal(extra, []string{"cloud:manage", "my:manage"}) || !slices.Equal(missing, []string{"product:view"}) {
		t.Errorf("extra %q missing %q, want [cloud:manage my:manage] and [product:view]", extra, missing)
	}
}

// TestLoginScope: the password grant and its refreshes carry the scope,
// and the token has exactly those scopes: it reads, and cannot write.
func TestLoginScope(t *testing.T) {
	e := startSim(t, func(c *apicsim.Config) { c.RefreshTokens = true })
	c := e.client(developer())
	c.Scope = []string{"product:view", "my:view", "product:view"}
	tok, err := c.Login(testCtx(t))
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	checkRequest(t, lastRequest(t, e), apic.GrantPassword,
		"grant_type", "username", "password", "realm", "client_id", "client_secret", "scope")
	checkScopes := func(what, token string) {
		t.Helper()
		got, ok := apic.TokenScopes(token)
		if want := []string{"my:view", "product:view"}; !ok || !slices.Equal(apic.CanonicalScopes(got), want) {
			t.Errorf("%s: the token's scopes are %q (%v), want %q", what, got, ok, want)
		}
		if status := getMe(t, e, token); status != http.StatusOK {
			t.Errorf("%s: GET /api/me with my:view: %d", what, status)
		}
	}
	checkScopes("login", tok.AccessToken)

	e.clock.Advance(time.Hour)
	next, err := c.Refresh(testCtx(t), tok.RefreshToken)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	checkRequest(t, lastRequest(t, e), apic.GrantRefreshToken, "grant_type", "refresh_token", "client_id", "client_secret", "scope")
	checkScopes("refresh", next.AccessToken)
}

// TestLoginScopeAPIKey: the api_key grant carries the scope too.
func TestLoginScopeAPIKey(t *testing.T) {
	e := startSim(t)
	key := createAPIKey(t, e)
	c := e.client(apic.Credentials{APIKey: key, ClientID: apicsim.DefaultClientID, ClientSecret: apicsim.DefaultClientSecret})
	c.Scope = []string{"my:view"}
	tok, err := c.Login(testCtx(t))
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	checkRequest(t, lastRequest(t, e), apic.GrantAPIKey, "grant_type", "api_key", "client_id", "client_secret", "scope")
	if got, _ := apic.TokenScopes(tok.AccessToken); !slices.Equal(got, []string{"my:view"}) {
		t.Errorf("the token's scopes are %q, want [my:view]", got)
	}
}

// TestScopeSentSorted: the scope is the set, sorted and space-separated,
// whatever the order it was given in; without Scope no scope is sent.
func TestScopeSentSorted(t *testing.T) {
	got := make(chan map[string]any, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		got <- body
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"abc","token_type":"Bearer","expires_in":60}`))
	}))
	t.Cleanup(ts.Close)
	c := &apic.Client{Server: ts.URL, Credentials: developer(), HTTP: ts.Client()}
	if _, err := c.Login(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if body := <-got; body["scope"] != nil {
		t.Errorf("without Scope the request sent scope %v", body["scope"])
	}
	c.Scope = []string{"product:view", "my:view", "my:view"}
	if _, err := c.Refresh(testCtx(t), "a-refresh-token"); err != nil {
		t.Fatal(err)
	}
	if body := <-got; body["scope"] != "my:view product:view" {
		t.Errorf("scope = %v, want \"my:view product:view\"", body["scope"])
	}
}

// TestScopeRefused: a scope the registration lacks is refused with 400;
// the error names the scope, lasts (no token request until the
// configuration changes), and says what to fix.
func TestScopeRefused(t *testing.T) {
	e := startSim(t, func(c *apicsim.Config) {
		c.Registrations[0].Scopes = []string{"my:view", "org:view"}
	})
	c := e.client(developer())
	c.Scope, c.ScopeOption = []string{"my:view", "product:view"}, "--scope"
	_, err := c.Login(testCtx(t))
	ae := asAPICError(t, err)
	if ae.Kind != apic.KindRefused || ae.Status != http.StatusBadRequest || !ae.Lasting() {
		t.Fatalf("kind %v status %d lasting %v, want a lasting refusal with 400: %v", ae.Kind, ae.Status, ae.Lasting(), err)
	}
	for _, want := range []string{
		"refused the password token request: status 400: scope product:view is not granted to this client registration",
		`; the request asked for scope "my:view product:view": name in --scope only scopes the client registration has`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	checkErrorText(t, err.Error(), apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret)
	if hint := apic.LoginHint(err, e.ts.URL, apic.HintSettings{}); hint != "" {
		t.Errorf("LoginHint = %q, want none: the error carries its own", hint)
	}

	// Another 400 is not about the scope: no scope hint.
	c.Credentials.Realm = ""
	_, err = c.Login(testCtx(t))
	if ae := asAPICError(t, err); ae.Status != http.StatusBadRequest || ae.Hint != "" {
		t.Errorf("a 400 for a missing realm: status %d hint %q, want 400 without a hint", ae.Status, ae.Hint)
	}
}
