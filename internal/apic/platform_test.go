package apic_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// registrationYAML is the blog-style document of `apic registrations:create`.
const registrationYAML = `type: registration
api_version: 2.0.0
name: apic-auth-proxy-ci
title: apic-auth-proxy CI
client_type: toolkit
client_id: apic-auth-proxy-ci
client_secret: a-long-random-secret
scopes:
  - cloud:view
  - cloud:manage
  - provider-org:view
  - org:view
  - org:manage
  - my:view
  - my:manage
`

// admin are the simulator's built-in Cloud Manager credentials.
func admin() apic.Credentials {
	return apic.Credentials{
		Realm:        apicsim.DefaultAdminRealm,
		Username:     apicsim.DefaultAdminUsername,
		Password:     apicsim.DefaultAdminPassword,
		ClientID:     apicsim.DefaultClientID,
		ClientSecret: apicsim.DefaultClientSecret,
	}
}

// login logs in with cr and returns the client and its token.
func login(t *testing.T, e *simEnv, cr apic.Credentials) (*apic.Client, *apic.Token) {
	t.Helper()
	c := e.client(cr)
	tok, err := c.Login(testCtx(t))
	if err != nil {
		t.Fatalf("Login as %s: %v", cr.Username, err)
	}
	return c, tok
}

func TestMe(t *testing.T) {
	e := startSim(t)
	c, tok := login(t, e, developer())
	me, err := c.Me(testCtx(t), tok)
	if err != nil {
		t.Fatalf("Me: %v", err)
	}
	// The document's Me has no realm; the token's claim tells it.
	if me.Username != "developer" || me.Realm != "" || me.Email != "developer@example.com" {
		t.Errorf("Me = %+v, want developer with developer@example.com and no realm", me)
	}
	if got := apic.TokenRealm(tok.AccessToken); got != apicsim.DefaultProviderRealm {
		t.Errorf("TokenRealm = %q, want %q", got, apicsim.DefaultProviderRealm)
	}
	for _, bad := range []string{"", "a.b", "a.!!!.c", "a." + jwtWithPayload("[]") + ".c"} {
		if got := apic.TokenRealm(bad); got != "" {
			t.Errorf("TokenRealm(%q) = %q, want empty", bad, got)
		}
	}
}

func TestMeRefusedToken(t *testing.T) {
	e := startSim(t)
	c := e.client(developer())
	_, err := c.Me(testCtx(t), &apic.Token{Token: oauth2.Token{AccessToken: "not-a-token"}})
	ce := asAPICError(t, err)
	if ce.Kind != apic.KindRefused || ce.Status != 401 || ce.ServerMessage() != "Invalid token." {
		t.Fatalf("kind %v status %d message %q, want refused 401 Invalid token.", ce.Kind, ce.Status, ce.ServerMessage())
	}
	want := "GET " + e.ts.URL + "/api/me: status 401: Invalid token."
	if ce.Error() != want {
		t.Errorf("Error() = %q, want %q", ce.Error(), want)
	}
	checkNoSecrets(t, ce.Error(), "not-a-token")
}

func TestSignOut(t *testing.T) {
	e := startSim(t)
	c, tok := login(t, e, developer())
	if err := c.SignOut(testCtx(t), tok); err != nil {
		t.Fatalf("SignOut: %v", err)
	}
	// The token is revoked: a second sign-out is refused, as a call.
	err := c.SignOut(testCtx(t), tok)
	ae := asAPICError(t, err)
	want := "POST " + e.ts.URL + "/api/me/sign-out: status 401"
	if ae.Kind != apic.KindRefused || ae.Grant != "" || ae.Method != http.MethodPost || !strings.HasPrefix(ae.Error(), want) {
		t.Errorf("second sign-out: kind %v grant %q %q, want refused, no grant, starting %q", ae.Kind, ae.Grant, ae.Error(), want)
	}
	checkNoSecrets(t, ae.Error(), tok.AccessToken)
}

func TestCallErrorsNeverHoldSecrets(t *testing.T) {
	const token = "the-bearer-token-value"
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"status":400,"message":["you sent %s with %s"]}`,
			strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), "a-long-random-secret")
	}))
	defer ts.Close()
	doc, err := apic.ParseRegistrationDocument([]byte(registrationYAML))
	if err != nil {
		t.Fatal(err)
	}
	c := &apic.Client{Server: ts.URL, Credentials: developer(), HTTP: ts.Client()}
	_, err = c.CreateRegistration(testCtx(t), &apic.Token{Token: oauth2.Token{AccessToken: token}}, doc)
	ce := asAPICError(t, err)
	checkNoSecrets(t, ce.Error(), token, "a-long-random-secret")
	if !strings.Contains(ce.Error(), "you sent [REDACTED] with [REDACTED]") {
		t.Errorf("Error() = %q, want the server's message with the secrets redacted", ce.Error())
	}
}

func TestCallErrorKinds(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	c := &apic.Client{Server: closed.URL}
	_, err := c.IdentityProviders(testCtx(t), "provider")
	if ce := asAPICError(t, err); ce.Kind != apic.KindUnreachable || !strings.Contains(ce.Error(), "/api/cloud/provider/identity-providers: unreachable") {
		t.Errorf("closed server: kind %v, %q", ce.Kind, ce.Error())
	}

	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "<html>login page</html>")
	}))
	defer html.Close()
	c = &apic.Client{Server: html.URL, HTTP: html.Client()}
	_, err = c.IdentityProviders(testCtx(t), "admin")
	if ce := asAPICError(t, err); ce.Kind != apic.KindBadResponse || !strings.Contains(ce.Error(), "looks like HTML") {
		t.Errorf("HTML answer: kind %v, %q", ce.Kind, ce.Error())
	}

	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"status":503,"message":["down for maintenance"]}`, http.StatusServiceUnavailable)
	}))
	defer busy.Close()
	c = &apic.Client{Server: busy.URL, HTTP: busy.Client()}
	_, err = c.Me(testCtx(t), &apic.Token{Token: oauth2.Token{AccessToken: "x"}})
	if ce := asAPICError(t, err); ce.Kind != apic.KindServer || ce.ServerMessage() != "down for maintenance" {
		t.Errorf("503: kind %v, %q", ce.Kind, ce.Error())
	}

	if _, err := c.IdentityProviders(testCtx(t), "consumer"); err == nil || !strings.Contains(err.Error(), "want the scope admin or provider") {
		t.Errorf("scope consumer: %v", err)
	}
}

func TestIdentityProviders(t *testing.T) {
	e := startSim(t)
	c := e.client(apic.Credentials{})
	for scope, want := range map[string]apic.IdentityProvider{
		"admin":    {Name: "default-idp-1", Title: "Cloud Manager User Registry", Default: true, RegistryType: "lur", UserManaged: true, Realm: "admin/default-idp-1"},
		"provider": {Name: "default-idp-2", Title: "API Manager User Registry", Default: true, RegistryType: "lur", UserManaged: true, Realm: "provider/default-idp-2"},
	} {
		list, err := c.IdentityProviders(testCtx(t), scope)
		if err != nil {
			t.Fatalf("%s: %v", scope, err)
		}
		if list.Scope != scope || len(list.Providers) != 1 || list.Providers[0] != want {
			t.Errorf("%s: %+v, want %+v", scope, list.Providers, want)
		}
		var raw map[string]any
		if err := json.Unmarshal(list.Raw, &raw); err != nil || raw["total_results"] != 1.0 {
			t.Errorf("%s: raw %s, %v", scope, list.Raw, err)
		}
	}
	if n := e.sim.TokenRequests("", ""); n != 0 {
		t.Errorf("%d token requests, want none", n)
	}
}

func TestIdentityProvidersRealmFromName(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"total_results":1,"results":[{"name":"corp-ldap","title":"Corporate LDAP","registry_type":"ldap"}]}`)
	}))
	defer ts.Close()
	c := &apic.Client{Server: ts.URL, HTTP: ts.Client()}
	list, err := c.IdentityProviders(testCtx(t), "provider")
	if err != nil || len(list.Providers) != 1 || list.Providers[0].Realm != "provider/corp-ldap" {
		t.Fatalf("got %+v, %v; want the realm provider/corp-ldap", list, err)
	}
}

func TestCreateRegistration(t *testing.T) {
	e := startSim(t)
	c, tok := login(t, e, admin())
	doc, err := apic.ParseRegistrationDocument([]byte(registrationYAML))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := c.CreateRegistration(testCtx(t), tok, doc)
	if err != nil {
		t.Fatalf("CreateRegistration: %v", err)
	}
	if reg.Name != "apic-auth-proxy-ci" || reg.State != "enabled" || reg.ClientID != "apic-auth-proxy-ci" ||
		reg.ClientType != "toolkit" || !strings.HasPrefix(reg.URL, e.ts.URL+"/api/cloud/registrations/") || reg.ID == "" {
		t.Errorf("registration %+v", reg)
	}
	if !slices.Equal(reg.Scopes, []string{"cloud:view", "cloud:manage", "provider-org:view", "org:view", "org:manage", "my:view", "my:manage"}) {
		t.Errorf("scopes %q", reg.Scopes)
	}
	// The new client id and secret get a token.
	cr := developer()
	cr.ClientID, cr.ClientSecret = doc.ClientID, doc.ClientSecret()
	if _, err := e.client(cr).Login(testCtx(t)); err != nil {
		t.Fatalf("Login with the new registration: %v", err)
	}

	// A second time: 409.
	_, err = c.CreateRegistration(testCtx(t), tok, doc)
	ce := asAPICError(t, err)
	if ce.Status != http.StatusConflict || ce.Kind != apic.KindRefused || !strings.Contains(ce.ServerMessage(), "already exists") {
		t.Errorf("duplicate: %v", ce)
	}
	checkNoSecrets(t, ce.Error(), "a-long-random-secret")
}

func TestCreateRegistrationNeedsCloudManager(t *testing.T) {
	e := startSim(t)
	c, tok := login(t, e, developer())
	doc, err := apic.ParseRegistrationDocument([]byte(registrationYAML))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateRegistration(testCtx(t), tok, doc)
	ce := asAPICError(t, err)
	if ce.Status != http.StatusForbidden || !strings.Contains(ce.ServerMessage(), "Cloud Manager") {
		t.Errorf("developer: %v", ce)
	}
}

// TestCreateRegistrationSendsJSON checks the body: JSON, the writable
// fields as given, the read-only ones left out, unknown ones kept.
func TestCreateRegistrationSendsJSON(t *testing.T) {
	var got map[string]any
	var contentType string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		contentType = r.Header.Get("Content-Type")
		_ = json.NewDecoder(r.Body).Decode(&got)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"name":"n","state":"enabled","url":"u","client_secret":"********"}`)
	}))
	defer ts.Close()
	doc, err := apic.ParseRegistrationDocument([]byte(registrationYAML + "id: abc\nurl: https://old/api/cloud/registrations/abc\nredirect_endpoint: https://x/cb\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := &apic.Client{Server: ts.URL, HTTP: ts.Client()}
	if _, err := c.CreateRegistration(testCtx(t), &apic.Token{Token: oauth2.Token{AccessToken: "t"}}, doc); err != nil {
		t.Fatal(err)
	}
	if contentType != "application/json" {
		t.Errorf("Content-Type %q", contentType)
	}
	for _, k := range []string{"type", "api_version", "id", "url"} {
		if _, ok := got[k]; ok {
			t.Errorf("the read-only field %s was sent", k)
		}
	}
	for k, v := range map[string]any{"name": "apic-auth-proxy-ci", "title": "apic-auth-proxy CI", "client_type": "toolkit",
		"client_id": "apic-auth-proxy-ci", "client_secret": "a-long-random-secret", "redirect_endpoint": "https://x/cb"} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if s, _ := got["scopes"].([]any); len(s) != 7 {
		t.Errorf("scopes %v", got["scopes"])
	}
}

func TestParseRegistrationDocument(t *testing.T) {
	doc, err := apic.ParseRegistrationDocument([]byte(registrationYAML))
	if err != nil {
		t.Fatal(err)
	}
	if doc.Name != "apic-auth-proxy-ci" || doc.ClientID != "apic-auth-proxy-ci" || doc.ClientSecret() != "a-long-random-secret" {
		t.Errorf("doc %v", doc)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(format, doc); strings.Contains(s, "a-long-random-secret") {
			t.Errorf("%s prints the secret: %s", format, s)
		}
		if s := fmt.Sprintf(format, *doc); strings.Contains(s, "a-long-random-secret") {
			t.Errorf("%s of the value prints the secret: %s", format, s)
		}
	}

	// JSON is YAML; a numeric secret is a string.
	js := `{"name":"j","client_id":"j-id","client_secret":12345678,"scopes":["my:view"]}`
	if doc, err := apic.ParseRegistrationDocument([]byte(js)); err != nil || doc.ClientSecret() != "12345678" {
		t.Errorf("JSON: %v, %v", doc, err)
	}

	const secret = "a-long-random-secret"
	for _, tc := range []struct{ in, want string }{
		{"", "the document is empty"},
		{"- a\n- b\n", "want a mapping of registration fields"},
		{"name: [unclosed\n", "not YAML or JSON"},
		{"name: a\n---\nname: b\n", "want one registration document"},
		{"type: user\nname: a\nclient_id: b\nclient_secret: " + secret + "\n", `type: want registration, got "user"`},
		{"name: a\nclient_id: b\n", "missing client_secret"},
		{"title: t\n", "missing name, client_id, client_secret"},
		{"name: a\nname: b\nclient_id: b\nclient_secret: " + secret + "\n", "name: the field appears twice"},
		{"name: [a]\nclient_id: b\nclient_secret: " + secret + "\n", "name: want a string"},
		{"name: a\nclient_id: b\nclient_secret: {x: " + secret + "}\n", "client_secret: want a string"},
		{"name: a\nclient_id:\nclient_secret: " + secret + "\n", "client_id: want a string"},
		{"name: a\nclient_id: b\nclient_secret: " + secret + "\nscopes: cloud:view\n", "scopes: want a list of scope names"},
		{"name: a\nclient_id: b\nclient_secret: " + secret + "\nscopes: [cloud:view, [x]]\n", "scopes: want a list of scope names such as cloud:view, line 4"},
		{"name: a\nclient_id: b\nclient_secret: " + secret + "\nstate: on\n", `state: want enabled or disabled, got "on"`},
		{"name: a\nclient_id: b\nclient_secret: " + secret + "\nextra: {1: " + secret + "}\n", "extra: want a value JSON can carry"},
	} {
		_, err := apic.ParseRegistrationDocument([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
			continue
		}
		checkErrorText(t, err.Error(), secret)
	}
	big := strings.Repeat("#", apic.MaxRegistrationDocument+1)
	if _, err := apic.ParseRegistrationDocument([]byte(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big document: %v", err)
	}
}

func TestNewHTTPClient(t *testing.T) {
	_, ts, certs := simtest.StartTLS(t, []string{"127.0.0.1"})
	dir := t.TempDir()
	caFile := writeFile(t, dir, "ca.pem", string(certs.CAPEM))

	get := func(hc *http.Client) error {
		_, err := (&apic.Client{Server: ts.URL, HTTP: hc}).IdentityProviders(testCtx(t), "provider")
		return err
	}
	closeIdle := func(hc *http.Client) { t.Cleanup(hc.CloseIdleConnections) }
	hc, err := apic.NewHTTPClient(false, []string{caFile})
	closeIdle(hc)
	if err != nil {
		t.Fatal(err)
	}
	if err := get(hc); err != nil {
		t.Errorf("with the CA: %v", err)
	}
	hc, _ = apic.NewHTTPClient(false, nil)
	closeIdle(hc)
	if ce := asAPICError(t, get(hc)); ce.Kind != apic.KindTLS {
		t.Errorf("without the CA: %v, want a TLS error", ce)
	}
	hc, _ = apic.NewHTTPClient(true, nil)
	closeIdle(hc)
	if err := get(hc); err != nil {
		t.Errorf("insecure: %v", err)
	}
	if _, err := apic.NewHTTPClient(false, []string{writeFile(t, dir, "empty.pem", "nothing")}); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("empty CA file: %v", err)
	}
	if _, err := apic.NewHTTPClient(false, []string{dir + "/missing.pem"}); err == nil {
		t.Error("missing CA file accepted")
	}

	// No redirect is followed.
	redirect := httptest.NewServer(http.RedirectHandler(ts.URL+"/api/cloud/provider/identity-providers", http.StatusFound))
	defer redirect.Close()
	hc, _ = apic.NewHTTPClient(false, nil)
	closeIdle(hc)
	_, err = (&apic.Client{Server: redirect.URL, HTTP: hc}).IdentityProviders(testCtx(t), "provider")
	if ce := asAPICError(t, err); ce.Status != http.StatusFound {
		t.Errorf("redirect: %v, want the 302 itself", ce)
	}
}

// writeFile writes a file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
