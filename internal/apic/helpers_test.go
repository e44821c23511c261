package apic_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
	"github.com/apic-tools/apic-auth-proxy/internal/testclock"
)

// t0 is when every fake clock starts: whole seconds, so that JWT exp
// claims (whole seconds) compare exactly.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is the shared settable clock of the tests.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock { return testclock.New(t0) }

// simEnv is a simulator on a loopback server with a fake clock shared by
// the simulator and the clients made with client.
type simEnv struct {
	sim   *apicsim.Server
	ts    *httptest.Server
	clock *fakeClock
}

// startSim serves a simulator on a new fake clock, with DefaultConfig
// changed by changes (after the clock is set).
func startSim(t *testing.T, changes ...func(*apicsim.Config)) *simEnv {
	t.Helper()
	clock := newFakeClock()
	setClock := func(c *apicsim.Config) { c.Now = clock.Now }
	sim, ts := simtest.Start(t, slices.Concat([]func(*apicsim.Config){setClock}, changes)...)
	return &simEnv{sim: sim, ts: ts, clock: clock}
}

// client returns a Client of the simulator with the given credentials.
func (e *simEnv) client(cr apic.Credentials) *apic.Client {
	return &apic.Client{Server: e.ts.URL, Credentials: cr, HTTP: e.ts.Client(), Now: e.clock.Now}
}

// developer are the simulator's built-in API Manager credentials.
func developer() apic.Credentials {
	return apic.Credentials{
		Realm:        apicsim.DefaultProviderRealm,
		Username:     apicsim.DefaultProviderUsername,
		Password:     apicsim.DefaultProviderPassword,
		ClientID:     apicsim.DefaultClientID,
		ClientSecret: apicsim.DefaultClientSecret,
	}
}

// testCtx is a context that ends with the test, or after 10 s.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// asAPICError unwraps err into an *apic.Error or fails the test.
func asAPICError(t *testing.T, err error) *apic.Error {
	t.Helper()
	if err == nil {
		t.Fatal("got no error")
	}
	var ae *apic.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %T %q is not an *apic.Error", err, err)
	}
	return ae
}

// checkErrorText checks the conventions of an error string: lowercase
// first letter, and none of the secrets.
func checkErrorText(t *testing.T, msg string, secrets ...string) {
	t.Helper()
	r, _ := utf8.DecodeRuneInString(msg)
	if !unicode.IsLower(r) {
		t.Errorf("error %q does not start with a lowercase letter", msg)
	}
	checkNoSecrets(t, msg, secrets...)
}

// checkNoSecrets checks that msg holds none of the secrets.
func checkNoSecrets(t *testing.T, msg string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			t.Errorf("error %q contains the secret %q", msg, s)
		}
	}
}

// makeJWT builds an unsigned JWT with the given claims.
func makeJWT(t testing.TB, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return jwtWithPayload(string(payload))
}

// jwtWithPayload builds a JWT of a raw payload text.
func jwtWithPayload(payload string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString([]byte("signature"))
}

// tokenBody marshals a token response.
func tokenBody(t testing.TB, fields map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// simTokenBody asks a fresh simulator (clock at t0) on a loopback server
// for a token and returns the raw response body.
func simTokenBody(t testing.TB, refreshTokens bool) []byte {
	t.Helper()
	_, ts := simtest.Start(t, func(c *apicsim.Config) {
		c.Now = func() time.Time { return t0 }
		c.RefreshTokens = refreshTokens
	})
	body := `{"grant_type":"password","username":"developer","password":"Passw0rd!",` +
		`"realm":"provider/default-idp-2","client_id":"clientID","client_secret":"clientPassword"}`
	resp, err := ts.Client().Post(ts.URL+"/api/token", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("simulator token request: status %d, %v: %s", resp.StatusCode, err, data)
	}
	return data
}
