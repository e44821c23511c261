package apic_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// lastRequest returns the one token request the simulator saw.
func lastRequest(t *testing.T, e *simEnv) apicsim.TokenRequestRecord {
	t.Helper()
	recs := e.sim.RecentTokenRequests()
	if len(recs) == 0 {
		t.Fatal("the simulator saw no token request")
	}
	return recs[len(recs)-1]
}

// checkRequest checks the body fields and headers of a token request.
func checkRequest(t *testing.T, rec apicsim.TokenRequestRecord, grant string, fields ...string) {
	t.Helper()
	slices.Sort(fields)
	if rec.Grant != grant {
		t.Errorf("grant = %q, want %q", rec.Grant, grant)
	}
	if !slices.Equal(rec.Fields, fields) {
		t.Errorf("body fields = %q, want exactly %q", rec.Fields, fields)
	}
	if rec.ContentType != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", rec.ContentType)
	}
	if rec.Accept != "application/json" {
		t.Errorf("Accept = %q, want application/json", rec.Accept)
	}
	if rec.Status != http.StatusOK || rec.Outcome != apicsim.OutcomeOK {
		t.Errorf("request ended %d %s, want 200 ok", rec.Status, rec.Outcome)
	}
}

func TestLoginPassword(t *testing.T) {
	e := startSim(t)
	tok, err := e.client(developer()).Login(testCtx(t))
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	if n := e.sim.TokenRequests("", ""); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
	checkRequest(t, lastRequest(t, e), apic.GrantPassword,
		"grant_type", "username", "password", "realm", "client_id", "client_secret")
	if rec := lastRequest(t, e); rec.Username != apicsim.DefaultProviderUsername || rec.Realm != apicsim.DefaultProviderRealm {
		t.Errorf("request for %q in %q, want developer in the provider realm", rec.Username, rec.Realm)
	}
	if tok.TokenType != "Bearer" {
		t.Errorf("TokenType = %q, want Bearer", tok.TokenType)
	}
	if tok.AccessToken == "" {
		t.Error("AccessToken is empty")
	}
	if want := t0.Add(28800 * time.Second); !tok.Expiry.Equal(want) {
		t.Errorf("Expiry = %v, want %v", tok.Expiry, want)
	}
	if tok.ExpiresIn != 28800 {
		t.Errorf("ExpiresIn = %d, want 28800", tok.ExpiresIn)
	}
	if exp, err := apic.JWTExpiry(tok.AccessToken); err != nil || !exp.Equal(tok.Expiry) {
		t.Errorf("the JWT's exp is %v (%v), want the Expiry %v", exp, err, tok.Expiry)
	}
	if tok.RefreshToken != "" || !tok.RefreshExpiry.IsZero() {
		t.Errorf("refresh token %q expiring %v without refresh_token_enabled", tok.RefreshToken, tok.RefreshExpiry)
	}
	// The token works on the API.
	if status := getMe(t, e, tok.AccessToken); status != http.StatusOK {
		t.Errorf("GET /api/me with the token: %d, want 200", status)
	}
}

// getMe calls GET /api/me with a bearer token and returns the status.
func getMe(t *testing.T, e *simEnv, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, e.ts.URL+"/api/me", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// createAPIKey creates an API key of the developer with a password token.
func createAPIKey(t *testing.T, e *simEnv) string {
	t.Helper()
	tok, err := e.client(developer()).Login(testCtx(t))
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodPost, e.ts.URL+"/api/cloud/api-keys",
		strings.NewReader(`{"client_type":"toolkit","description":"test"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		APIKey string `json:"api_key"`
	}
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&body) != nil || body.APIKey == "" {
		t.Fatalf("POST /api/cloud/api-keys: status %d, no api_key", resp.StatusCode)
	}
	return body.APIKey
}

func TestLoginAPIKey(t *testing.T) {
	e := startSim(t)
	key := createAPIKey(t, e)
	e.sim.ResetStats()
	c := e.client(apic.Credentials{APIKey: key, ClientID: apicsim.DefaultClientID, ClientSecret: apicsim.DefaultClientSecret})
	tok, err := c.Login(testCtx(t))
	if err != nil {
		t.Fatalf("Login with an API key: %v", err)
	}
	checkRequest(t, lastRequest(t, e), apic.GrantAPIKey, "grant_type", "api_key", "client_id", "client_secret")
	if want := t0.Add(28800 * time.Second); tok.TokenType != "Bearer" || tok.AccessToken == "" || !tok.Expiry.Equal(want) {
		t.Errorf("token %q %q expiring %v, want a Bearer token expiring %v", tok.TokenType, tok.AccessToken, tok.Expiry, want)
	}
	// The simulator's keys are single-use: a second login is refused.
	_, err = c.Login(testCtx(t))
	if ae := asAPICError(t, err); ae.Kind != apic.KindRefused || ae.Grant != apic.GrantAPIKey {
		t.Errorf("second login with a single-use key: %v (kind %v), want refused api_key grant", err, ae.Kind)
	}
	checkErrorText(t, err.Error(), key, apicsim.DefaultClientSecret)
}

func TestRefresh(t *testing.T) {
	e := startSim(t, func(c *apicsim.Config) { c.RefreshTokens = true })
	c := e.client(developer())
	first, err := c.Login(testCtx(t))
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	if first.RefreshToken == "" {
		t.Fatal("no refresh token with refresh_token_enabled")
	}
	if want := t0.Add(57600 * time.Second); !first.RefreshExpiry.Equal(want) {
		t.Errorf("RefreshExpiry = %v, want %v", first.RefreshExpiry, want)
	}

	e.clock.Advance(time.Hour)
	now := e.clock.Now()
	tok, err := c.Refresh(testCtx(t), first.RefreshToken)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	checkRequest(t, lastRequest(t, e), apic.GrantRefreshToken, "grant_type", "refresh_token", "client_id", "client_secret")
	if tok.AccessToken == "" || tok.AccessToken == first.AccessToken {
		t.Error("Refresh did not return a new access token")
	}
	if want := now.Add(28800 * time.Second); !tok.Expiry.Equal(want) {
		t.Errorf("Expiry = %v, want %v", tok.Expiry, want)
	}
	if want := now.Add(57600 * time.Second); !tok.RefreshExpiry.Equal(want) {
		t.Errorf("RefreshExpiry = %v, want %v", tok.RefreshExpiry, want)
	}
	if tok.RefreshToken == "" || tok.RefreshToken == first.RefreshToken {
		t.Error("the simulator's refresh tokens rotate: want a new one")
	}

	// A used refresh token is refused, and the error does not quote it.
	_, err = c.Refresh(testCtx(t), first.RefreshToken)
	ae := asAPICError(t, err)
	if ae.Kind != apic.KindRefused || ae.Status != 401 || ae.Grant != apic.GrantRefreshToken {
		t.Errorf("reused refresh token: kind %v status %d grant %q, want refused 401 refresh_token", ae.Kind, ae.Status, ae.Grant)
	}
	checkErrorText(t, err.Error(), first.RefreshToken, apicsim.DefaultClientSecret)
}

// errCase is one way a token request fails.
type errCase struct {
	name string
	// setup returns the client and the context of the request.
	setup      func(t *testing.T) (*apic.Client, context.Context)
	kind       apic.Kind
	status     int
	message    string        // a substring of one of Messages; "" for no messages
	cause      string        // a substring of Error()
	end        string        // the end of Error(), when set
	retryAfter time.Duration // from the fake now; 0 for none
	// check, when set, checks more of the error.
	check func(t *testing.T, e *apic.Error)
}

// errIs checks that an Error's cause is (or wraps) an error of type T.
func errIs[T error](t *testing.T, e *apic.Error) {
	t.Helper()
	var target T
	if !errors.As(e.Err, &target) {
		t.Errorf("cause %T %v is not a %T", e.Err, e.Err, target)
	}
}

func TestErrorClassification(t *testing.T) {
	// simClient is a client of a fresh simulator with faults queued.
	simClient := func(cr apic.Credentials, faults ...apicsim.Fault) func(t *testing.T) (*apic.Client, context.Context) {
		return func(t *testing.T) (*apic.Client, context.Context) {
			e := startSim(t)
			for _, f := range faults {
				e.sim.FailTokenRequests(1, f)
			}
			return e.client(cr), testCtx(t)
		}
	}
	wrongPassword := developer()
	wrongPassword.Password = "not-the-pa55word"
	unknownClient := developer()
	unknownClient.ClientID = "no-such-client"
	wrongSecret := developer()
	wrongSecret.ClientSecret = "not-the-secret"
	wrongRealm := developer()
	wrongRealm.Realm = "provider/no-such-idp"

	cases := []errCase{
		{
			name: "wrong password", setup: simClient(wrongPassword),
			kind: apic.KindRefused, status: 401, message: "Invalid username or password.",
			cause: "refused the credentials (password grant): status 401",
		},
		{
			name: "unknown client", setup: simClient(unknownClient),
			kind: apic.KindRefused, status: 401, message: "Invalid client id or secret.",
			cause: "refused the credentials (password grant): status 401",
		},
		{
			name: "wrong client secret", setup: simClient(wrongSecret),
			kind: apic.KindRefused, status: 401, message: "Invalid client id or secret.",
			cause: "refused the credentials (password grant): status 401",
		},
		{
			name: "wrong realm", setup: simClient(wrongRealm),
			kind: apic.KindRefused, status: 401, message: "Invalid realm provider/no-such-idp",
			cause: "refused the credentials (password grant): status 401",
		},
		{
			name: "500", setup: simClient(developer(), apicsim.Fault{Status: 500}),
			kind: apic.KindServer, status: 500, message: "simulated failure with status 500",
			cause: "failed: status 500",
		},
		{
			name: "503 with Retry-After", setup: simClient(developer(), apicsim.Fault{Status: 503, RetryAfter: "30"}),
			kind: apic.KindServer, status: 503, message: "simulated failure with status 503",
			cause: "failed: status 503", retryAfter: 30 * time.Second,
		},
		{
			name: "408", setup: simClient(developer(), apicsim.Fault{Status: 408}),
			kind: apic.KindServer, status: 408, message: "simulated failure with status 408",
			cause: "failed: status 408",
		},
		{
			name: "429 with Retry-After", setup: simClient(developer(), apicsim.Fault{Status: 429, RetryAfter: "7"}),
			kind: apic.KindRateLimited, status: 429, message: "simulated failure with status 429",
			cause: "is rate limiting: status 429", retryAfter: 7 * time.Second,
		},
		{
			name: "connection refused",
			setup: func(t *testing.T) (*apic.Client, context.Context) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := ln.Addr().String()
				ln.Close()
				return &apic.Client{Server: "http://" + addr, Credentials: developer(), HTTP: newHTTPClient(t, nil)}, testCtx(t)
			},
			kind: apic.KindUnreachable, cause: "unreachable: ", check: errIs[*net.OpError],
		},
		{
			name: "hang past the deadline",
			setup: func(t *testing.T) (*apic.Client, context.Context) {
				c, _ := simClient(developer(), apicsim.Fault{Hang: time.Minute})(t)
				ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
				t.Cleanup(cancel)
				return c, ctx
			},
			kind: apic.KindTimeout, cause: "timed out",
			check: func(t *testing.T, e *apic.Error) {
				if want := "token endpoint " + e.URL + " timed out"; e.Error() != want {
					t.Errorf("Error() = %q, want exactly %q", e.Error(), want)
				}
			},
		},
		{
			name: "connection closed", setup: simClient(developer(), apicsim.Fault{Close: true}),
			kind: apic.KindUnreachable, cause: "unreachable",
		},
		{
			name: "untrusted certificate",
			setup: func(t *testing.T) (*apic.Client, context.Context) {
				_, ts, _ := simtest.StartTLS(t, []string{"127.0.0.1"})
				// The system roots, which do not hold the simulator's authority.
				return &apic.Client{Server: ts.URL, Credentials: developer(), HTTP: newHTTPClient(t, nil)}, testCtx(t)
			},
			kind: apic.KindTLS, cause: ": the certificate of 127.0.0.1:", check: errIs[x509.UnknownAuthorityError],
			end: "is not trusted: x509: certificate signed by unknown authority; trust its CA",
		},
		{
			name: "certificate for another host",
			setup: func(t *testing.T) (*apic.Client, context.Context) {
				return tlsSimClient(t, "otherhost"), testCtx(t)
			},
			kind: apic.KindTLS, cause: ": the certificate of 127.0.0.1:", check: errIs[x509.HostnameError],
			end: "is not trusted: x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs; give the server by a name the certificate is for",
		},
		{
			name: "200 with HTML", setup: simClient(developer(), apicsim.Fault{Body: "<html><body>Gateway</body></html>", ContentType: "text/html"}),
			kind: apic.KindBadResponse, status: 200, cause: "answered without a usable token: the body is not a JSON token response (looks like HTML or XML)",
		},
		{
			name: "200 without expires_in or exp", setup: simClient(developer(), apicsim.Fault{Omit: []string{"expires_in"}, Set: map[string]any{"access_token": "opaque"}}),
			kind: apic.KindBadResponse, status: 200, cause: "no sane lifetime: expires_in is missing",
		},
		{
			name: "200 with token_type mac", setup: simClient(developer(), apicsim.Fault{Set: map[string]any{"token_type": "mac"}}),
			kind: apic.KindBadResponse, status: 200, cause: `token_type is "mac", want Bearer`,
		},
	}
	secrets := []string{apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret, "not-the-pa55word", "not-the-secret"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, ctx := tc.setup(t)
			start := time.Now()
			tok, err := c.Login(ctx)
			if tok != nil {
				t.Errorf("got a token with the error %v", err)
			}
			ae := asAPICError(t, err)
			if ae.Kind != tc.kind {
				t.Errorf("Kind = %v, want %v (error: %v)", ae.Kind, tc.kind, err)
			}
			if ae.Status != tc.status {
				t.Errorf("Status = %d, want %d", ae.Status, tc.status)
			}
			if want := tc.kind == apic.KindRefused; ae.Refused() != want {
				t.Errorf("Refused() = %v, want %v", ae.Refused(), want)
			}
			if want := tc.kind == apic.KindRefused || tc.kind == apic.KindTLS; ae.Lasting() != want {
				t.Errorf("Lasting() = %v, want %v", ae.Lasting(), want)
			}
			if ae.Grant != apic.GrantPassword {
				t.Errorf("Grant = %q, want password", ae.Grant)
			}
			if want := c.Server + "/api/token"; ae.URL != want {
				t.Errorf("URL = %q, want %q", ae.URL, want)
			}
			switch {
			case tc.message == "" && len(ae.Messages) != 0:
				t.Errorf("Messages = %q, want none", ae.Messages)
			case tc.message != "" && !slices.ContainsFunc(ae.Messages, func(m string) bool { return strings.Contains(m, tc.message) }):
				t.Errorf("Messages = %q, want one with %q", ae.Messages, tc.message)
			}
			var wantRetry time.Time
			if tc.retryAfter > 0 {
				wantRetry = c.Now().Add(tc.retryAfter)
			}
			if !ae.RetryAt.Equal(wantRetry) {
				t.Errorf("RetryAt = %v, want %v", ae.RetryAt, wantRetry)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.cause) {
				t.Errorf("Error() = %q, want it to say %q", msg, tc.cause)
			}
			if tc.end != "" && !strings.HasSuffix(msg, tc.end) {
				t.Errorf("Error() = %q, want it to end with %q", msg, tc.end)
			}
			if !strings.HasPrefix(msg, "token endpoint "+ae.URL+" ") && !strings.HasPrefix(msg, "token endpoint "+ae.URL+": ") {
				t.Errorf("Error() = %q, want it to name the endpoint first", msg)
			}
			checkErrorText(t, msg, secrets...)
			if tc.check != nil {
				tc.check(t, ae)
			}
			if tc.kind == apic.KindTimeout && time.Since(start) > 5*time.Second {
				t.Errorf("the timeout took %v, want about 100 ms", time.Since(start))
			}
		})
	}
}

// quietLog drops the TLS handshake errors that the failing cases cause.
var quietLog = log.New(io.Discard, "", 0)

// newHTTPClient returns a client of its own transport trusting roots (nil:
// the system's), closed with the test.
func newHTTPClient(t *testing.T, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// tlsSimClient serves a simulator on 127.0.0.1 over TLS with a certificate
// for hosts, and returns a client that trusts the certificate's authority.
func tlsSimClient(t *testing.T, hosts ...string) *apic.Client {
	t.Helper()
	clock := newFakeClock()
	_, ts, certs := simtest.StartTLS(t, hosts, func(c *apicsim.Config) { c.Now = clock.Now })
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(certs.CAPEM) {
		t.Fatal("bad CA PEM")
	}
	return &apic.Client{Server: ts.URL, Credentials: developer(), HTTP: newHTTPClient(t, roots), Now: clock.Now}
}

// TestTLSTrusted is the control of the TLS cases: the same set-up with a
// certificate for 127.0.0.1 works.
func TestTLSTrusted(t *testing.T) {
	c := tlsSimClient(t, "127.0.0.1")
	if !strings.HasPrefix(c.Server, "https://127.0.0.1:") {
		t.Fatalf("server %q is not https on 127.0.0.1", c.Server)
	}
	tok, err := c.Login(testCtx(t))
	if err != nil {
		t.Fatalf("Login over trusted TLS: %v", err)
	}
	if want := t0.Add(28800 * time.Second); !tok.Expiry.Equal(want) {
		t.Errorf("Expiry = %v, want %v", tok.Expiry, want)
	}
}

// echoServer answers every token request 401 with a message that quotes
// every secret the request held.
func echoServer(t *testing.T) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]string
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &req)
		msgs := []string{
			"bad password " + req["password"],
			"bad client secret " + req["client_secret"],
			"bad api key " + req["api_key"],
			"bad refresh token " + req["refresh_token"],
			"the whole request was " + string(body),
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": 401, "message": msgs, "errors": []string{req["password"] + req["api_key"]}})
	}))
	t.Cleanup(ts.Close)
	return ts
}

func TestErrorsNeverHoldSecrets(t *testing.T) {
	const (
		password     = "hunter2-pa55word"
		clientSecret = "client-secret-value"
		apiKey       = "api-key-value-1234"
		refreshToken = "refresh-token-value"
	)
	ts := echoServer(t)
	cases := []struct {
		name  string
		creds apic.Credentials
		call  func(*apic.Client) error
		grant string
	}{
		{"password", apic.Credentials{Realm: "provider/default-idp-2", Username: "developer", Password: password, ClientID: "id", ClientSecret: clientSecret},
			func(c *apic.Client) error { _, err := c.Login(testCtx(t)); return err }, apic.GrantPassword},
		{"api key", apic.Credentials{APIKey: apiKey, ClientID: "id", ClientSecret: clientSecret},
			func(c *apic.Client) error { _, err := c.Login(testCtx(t)); return err }, apic.GrantAPIKey},
		{"refresh token", apic.Credentials{Realm: "provider/default-idp-2", Username: "developer", Password: password, ClientID: "id", ClientSecret: clientSecret},
			func(c *apic.Client) error { _, err := c.Refresh(testCtx(t), refreshToken); return err }, apic.GrantRefreshToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &apic.Client{Server: ts.URL, Credentials: tc.creds, HTTP: ts.Client()}
			err := tc.call(c)
			ae := asAPICError(t, err)
			if ae.Kind != apic.KindRefused || ae.Status != 401 || ae.Grant != tc.grant {
				t.Errorf("kind %v status %d grant %q, want refused 401 %s", ae.Kind, ae.Status, ae.Grant, tc.grant)
			}
			msg := err.Error()
			checkErrorText(t, msg, password, clientSecret, apiKey, refreshToken)
			for _, m := range ae.Messages {
				checkNoSecrets(t, m, password, clientSecret, apiKey, refreshToken)
			}
			if !strings.Contains(msg, "[REDACTED]") {
				t.Errorf("Error() = %q, want the echoed secrets replaced by [REDACTED]", msg)
			}
			if !strings.Contains(msg, "bad password") {
				t.Errorf("Error() = %q, want the server's messages kept", msg)
			}
		})
	}
}

func TestRequestHeaders(t *testing.T) {
	type seen struct {
		method, path, contentType, accept, userAgent string
		body                                         map[string]any
	}
	got := make(chan seen, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"),
			accept: r.Header.Get("Accept"), userAgent: r.Header.Get("User-Agent")}
		_ = json.NewDecoder(r.Body).Decode(&s.body)
		got <- s
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"abc","token_type":"Bearer","expires_in":60}`)
	}))
	t.Cleanup(ts.Close)
	clock := newFakeClock()
	// A path prefix, as Cloud Pak for Integration has, with a trailing slash.
	c := &apic.Client{Server: ts.URL + "/integration/apis/ns/inst/", Credentials: developer(), HTTP: ts.Client(), Now: clock.Now}
	tok, err := c.Login(testCtx(t))
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	s := <-got
	if s.method != http.MethodPost || s.path != "/integration/apis/ns/inst/api/token" {
		t.Errorf("request %s %s, want POST /integration/apis/ns/inst/api/token", s.method, s.path)
	}
	if s.contentType != "application/json" || s.accept != "application/json" || !strings.HasPrefix(s.userAgent, "apic-auth-proxy") {
		t.Errorf("headers Content-Type %q Accept %q User-Agent %q", s.contentType, s.accept, s.userAgent)
	}
	want := map[string]any{
		"grant_type": "password", "username": "developer", "password": apicsim.DefaultProviderPassword,
		"realm": "provider/default-idp-2", "client_id": "clientID", "client_secret": "clientPassword",
	}
	if len(s.body) != len(want) {
		t.Errorf("body %v, want %v", s.body, want)
	}
	for k, v := range want {
		if s.body[k] != v {
			t.Errorf("body[%q] = %v, want %v", k, s.body[k], v)
		}
	}
	if tok.AccessToken != "abc" || !tok.Expiry.Equal(t0.Add(time.Minute)) {
		t.Errorf("token %q expiring %v", tok.AccessToken, tok.Expiry)
	}
}

// TestCallHeaders: the platform calls send the headers the token
// request does, and the bearer token when they have one.
func TestCallHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
		_, _ = io.WriteString(w, `{"name":"x","results":[]}`)
	}))
	t.Cleanup(ts.Close)
	c := &apic.Client{Server: ts.URL, Credentials: developer(), HTTP: ts.Client()}
	tok := &apic.Token{Token: oauth2.Token{AccessToken: "the-bearer-token"}}
	doc, err := apic.ParseRegistrationDocument([]byte("name: x\nclient_id: y\nclient_secret: a-long-random-secret\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		call        func() error
		auth, ctype string
	}{
		{"identity providers", func() error { _, err := c.IdentityProviders(testCtx(t), "admin"); return err }, "", ""},
		{"create registration", func() error { _, err := c.CreateRegistration(testCtx(t), tok, doc); return err }, "Bearer the-bearer-token", "application/json"},
	} {
		if err := tc.call(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		h := <-got
		if h.Get("Accept") != "application/json" || !strings.HasPrefix(h.Get("User-Agent"), "apic-auth-proxy") ||
			h.Get("Authorization") != tc.auth || h.Get("Content-Type") != tc.ctype {
			t.Errorf("%s: Accept %q User-Agent %q Authorization %q Content-Type %q, want application/json, apic-auth-proxy..., %q, %q",
				tc.name, h.Get("Accept"), h.Get("User-Agent"), h.Get("Authorization"), h.Get("Content-Type"), tc.auth, tc.ctype)
		}
	}
}

func TestCredentialsGrant(t *testing.T) {
	if g := (apic.Credentials{Username: "u", Password: "p"}).Grant(); g != apic.GrantPassword {
		t.Errorf("Grant() = %q, want password", g)
	}
	if g := (apic.Credentials{APIKey: "k"}).Grant(); g != apic.GrantAPIKey {
		t.Errorf("Grant() = %q, want api_key", g)
	}
}

// TestTLSHints: each TLS failure of a real handshake names the host and
// ends with what fixes it.
func TestTLSHints(t *testing.T) {
	trusted := func(t *testing.T, at time.Time) *apic.Client {
		c := tlsSimClient(t, "127.0.0.1")
		tr := c.HTTP.Transport.(*http.Transport)
		tr.TLSClientConfig.Time = func() time.Time { return at }
		return c
	}
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	for _, tc := range []struct {
		name   string
		client func(t *testing.T) *apic.Client
		say    []string
		hint   string
	}{
		{"unknown authority", func(t *testing.T) *apic.Client {
			_, ts, _ := simtest.StartTLS(t, []string{"127.0.0.1"})
			return &apic.Client{Server: ts.URL, Credentials: developer(), HTTP: newHTTPClient(t, nil), CAOption: "--ca-cert"}
		}, []string{"is not trusted: x509: certificate signed by unknown authority"}, "; name its CA with --ca-cert"},
		{"expired", func(t *testing.T) *apic.Client { return trusted(t, time.Now().AddDate(30, 0, 0)) },
			[]string{"is not trusted: x509: certificate has expired or is not yet valid"}, "; renew the server's certificate, or set this machine's clock right"},
		{"not yet valid", func(t *testing.T) *apic.Client { return trusted(t, time.Now().AddDate(-30, 0, 0)) },
			[]string{"is not trusted: x509: certificate has expired or is not yet valid"}, "; renew the server's certificate, or set this machine's clock right"},
		{"plain HTTP", func(t *testing.T) *apic.Client {
			return &apic.Client{Server: "https://" + plain.Listener.Addr().String(), Credentials: developer(), HTTP: newHTTPClient(t, nil)}
		}, []string{plain.Listener.Addr().String() + " does not answer in TLS: http: server gave HTTP response to HTTPS client"}, "; if it speaks plain HTTP, give the server as http://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.client(t)
			_, err := c.Login(testCtx(t))
			ae := asAPICError(t, err)
			if ae.Kind != apic.KindTLS || !ae.Lasting() || ae.Refused() {
				t.Fatalf("%v: kind %v, Lasting %v, Refused %v; want a lasting TLS failure, not a refusal", err, ae.Kind, ae.Lasting(), ae.Refused())
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "token endpoint "+c.Server+"/api/token: ") || !strings.HasSuffix(msg, tc.hint) {
				t.Errorf("Error() = %q, want the endpoint first and %q last", msg, tc.hint)
			}
			for _, s := range tc.say {
				if !strings.Contains(msg, s) {
					t.Errorf("Error() = %q, want it to say %q", msg, s)
				}
			}
			if strings.Contains(msg, "tls: failed to verify certificate") {
				t.Errorf("Error() = %q repeats Go's wrapping", msg)
			}
			checkErrorText(t, msg, apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret)
		})
	}
}
