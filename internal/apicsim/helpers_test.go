package apicsim_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
	"github.com/apic-tools/apic-auth-proxy/internal/testclock"
)

// fakeClock is the shared settable clock of the tests.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock {
	return testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

// simEnv is a simulator served on a loopback httptest server with a fake
// clock. The embedded Server gives the Go controls (Advance, Stats, ...).
type simEnv struct {
	*apicsim.Server
	URL   string
	Clock *fakeClock
	TS    *httptest.Server
}

// start runs a simulator with DefaultConfig, a fake clock, and the given
// changes to the config (after the clock is set). The server is closed
// when the test ends.
func start(t *testing.T, changes ...func(*apicsim.Config)) *simEnv {
	t.Helper()
	clock := newFakeClock()
	setClock := func(c *apicsim.Config) { c.Now = clock.Now }
	sim, ts := simtest.Start(t, slices.Concat([]func(*apicsim.Config){setClock}, changes)...)
	return &simEnv{Server: sim, URL: ts.URL, Clock: clock, TS: ts}
}

// response is a fully read HTTP response.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body as a JSON object.
func (r response) JSON(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response body is not a JSON object: %v\n%s", err, r.Body)
	}
	return m
}

// send makes a request with the given body and header pairs (key, value,
// key, value, ...; later pairs override earlier ones) and reads the whole
// response. A nil client means http.DefaultClient.
func send(t *testing.T, c *http.Client, method, url string, body []byte, hdr ...string) response {
	t.Helper()
	r, err := trySend(c, method, url, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

func trySend(c *http.Client, method, url string, body []byte, hdr ...string) (response, error) {
	if c == nil {
		c = http.DefaultClient
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return response{}, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// jsonOf encodes v, which must be encodable.
func jsonOf(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// decodeObject decodes a JSON object, or returns nil.
func decodeObject(b []byte) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// tokenReq posts fields as JSON to /api/token, as the apic toolkit does.
func tokenReq(t *testing.T, base string, fields map[string]string, hdr ...string) response {
	t.Helper()
	h := append([]string{"Content-Type", "application/json", "Accept", "application/json"}, hdr...)
	return send(t, nil, http.MethodPost, base+"/api/token", jsonOf(fields), h...)
}

// login makes a token request that must succeed and returns the access
// token.
func login(t *testing.T, base string, fields map[string]string) string {
	t.Helper()
	return loginResp(t, base, fields)["access_token"].(string)
}

// loginResp makes a token request that must succeed and returns the
// decoded response.
func loginResp(t *testing.T, base string, fields map[string]string) map[string]any {
	t.Helper()
	r := tokenReq(t, base, fields)
	if r.Status != http.StatusOK {
		t.Fatalf("token request %v: status %d, want 200: %s", fieldNames(fields), r.Status, r.Body)
	}
	m := r.JSON(t)
	if _, ok := m["access_token"].(string); !ok {
		t.Fatalf("token response has no access_token: %s", r.Body)
	}
	return m
}

func fieldNames(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// passwordGrant returns the body of a password grant with the default
// client registration.
func passwordGrant(username, password, realm string) map[string]string {
	return map[string]string{
		"grant_type": "password", "username": username, "password": password, "realm": realm,
		"client_id": apicsim.DefaultClientID, "client_secret": apicsim.DefaultClientSecret,
	}
}

func devGrant() map[string]string {
	return passwordGrant(apicsim.DefaultProviderUsername, apicsim.DefaultProviderPassword, apicsim.DefaultProviderRealm)
}

func adminGrant() map[string]string {
	return passwordGrant(apicsim.DefaultAdminUsername, apicsim.DefaultAdminPassword, apicsim.DefaultAdminRealm)
}

// with returns a copy of m with the key/value pairs set; a value of
// "<delete>" removes the key.
func with(m map[string]string, kv ...string) map[string]string {
	out := maps.Clone(m)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<delete>" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

// call makes a request to the simulator with a bearer token ("" for none).
func call(t *testing.T, method, url, token string, body []byte, hdr ...string) response {
	t.Helper()
	if token != "" {
		hdr = append([]string{"Authorization", "Bearer " + token}, hdr...)
	}
	return send(t, nil, method, url, body, hdr...)
}

// get is a GET with a bearer token ("" for none).
func get(t *testing.T, url, token string) response {
	t.Helper()
	return call(t, http.MethodGet, url, token, nil)
}

// wantStatus fails the test unless r has the status.
func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body: %s", r.Status, status, r.Body)
	}
}

// wantError checks that r is an error in API Connect's shape with the
// status (see checkError).
func wantError(t *testing.T, r response, status int, contains string) {
	t.Helper()
	if err := checkError(r, status, contains); err != nil {
		t.Fatal(err)
	}
}

// checkError reports whether r is an error in API Connect's shape with the
// status: Content-Type application/json and a JSON object
// {"status":N,"message":["...", ...]} (with at most an "errors" array
// besides), whose message mentions contains (if not ""). It is safe to call
// from any goroutine.
func checkError(r response, status int, contains string) error {
	if r.Status != status {
		return fmt.Errorf("status %d, want %d; body: %s", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("error Content-Type %q, want application/json", ct)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		return fmt.Errorf("error body is not a JSON object: %v: %s", err, r.Body)
	}
	for k := range raw {
		if k != "status" && k != "message" && k != "errors" {
			return fmt.Errorf("error body has unexpected key %q: %s", k, r.Body)
		}
	}
	var got struct {
		Status  *int      `json:"status"`
		Message *[]string `json:"message"`
		Errors  *[]string `json:"errors"`
	}
	if err := json.Unmarshal(r.Body, &got); err != nil {
		return fmt.Errorf("error body %s: %v (message must be an array of strings)", r.Body, err)
	}
	if got.Status == nil || *got.Status != status {
		return fmt.Errorf("error body status %v, want %d: %s", got.Status, status, r.Body)
	}
	if got.Message == nil || len(*got.Message) == 0 {
		return fmt.Errorf("error body has no message array: %s", r.Body)
	}
	if contains != "" && !strings.Contains(strings.Join(*got.Message, "\n"), contains) {
		return fmt.Errorf("error message %q does not mention %q", *got.Message, contains)
	}
	return nil
}

// decodeJWT splits a JWT and decodes its header and claims, without
// checking the signature.
func decodeJWT(t *testing.T, tok string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3: %.40s...", len(parts), tok)
	}
	dec := func(s string) map[string]any {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("token part is not base64url: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("token part is not a JSON object: %v", err)
		}
		return m
	}
	if _, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil || parts[2] == "" {
		t.Fatalf("token signature is not base64url: %v", err)
	}
	return dec(parts[0]), dec(parts[1])
}

// createAPIKey asks for an API key with the body's properties (nil for
// none) and the two the operation requires, client_type and description,
// when the body lacks them, and returns the decoded 201 response.
func createAPIKey(t *testing.T, base, token string, body []byte) map[string]any {
	t.Helper()
	props := map[string]any{}
	if body != nil {
		if err := json.Unmarshal(body, &props); err != nil {
			t.Fatalf("API key body %s: %v", body, err)
		}
	}
	for k, v := range map[string]string{"client_type": "toolkit", "description": "made by a test"} {
		if _, ok := props[k]; !ok {
			props[k] = v
		}
	}
	r := call(t, http.MethodPost, base+"/api/cloud/api-keys", token, jsonOf(props), "Content-Type", "application/json")
	wantStatus(t, r, http.StatusCreated)
	return r.JSON(t)
}

// apiKeyGrant is the body of an api_key grant with the default client.
func apiKeyGrant(key string) map[string]string {
	return map[string]string{
		"grant_type": "api_key", "api_key": key,
		"client_id": apicsim.DefaultClientID, "client_secret": apicsim.DefaultClientSecret,
	}
}

// refreshGrant is the body of a refresh_token grant with the default client.
func refreshGrant(rt string) map[string]string {
	return map[string]string{
		"grant_type": "refresh_token", "refresh_token": rt,
		"client_id": apicsim.DefaultClientID, "client_secret": apicsim.DefaultClientSecret,
	}
}
