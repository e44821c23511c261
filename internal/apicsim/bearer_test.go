package apicsim_test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

func TestBearerTokenRejected(t *testing.T) {
	s := start(t)
	other := start(t)
	good := login(t, s.URL, devGrant())
	foreign := login(t, other.URL, devGrant())

	// The same token with a claim changed: the signature no longer matches.
	parts := strings.Split(good, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(payload), `"username":"developer"`, `"username":"admin"`, 1)
	if forged == string(payload) {
		t.Fatalf("username claim not found in %s", payload)
	}
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2]

	for _, tc := range []struct {
		name, auth, contains string
	}{
		{"no header", "", "bearer token is required"},
		{"basic auth", "Basic ZGV2ZWxvcGVyOlBhc3N3MHJkIQ==", "bearer token is required"},
		{"bearer without token", "Bearer ", "bearer token is required"},
		{"garbage", "Bearer garbage", "Invalid token."},
		{"three garbage parts", "Bearer a.b.c", "Invalid token."},
		{"tampered claims", "Bearer " + tampered, "Invalid token."},
		{"signed by another simulator", "Bearer " + foreign, "Invalid token."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.auth != "" {
				hdr = []string{"Authorization", tc.auth}
			}
			wantError(t, send(t, nil, http.MethodGet, s.URL+"/api/me", nil, hdr...), 401, tc.contains)
		})
	}
	// The good token works, also with a lower-case scheme.
	wantStatus(t, get(t, s.URL+"/api/me", good), 200)
	wantStatus(t, send(t, nil, http.MethodGet, s.URL+"/api/me", nil, "Authorization", "bearer "+good), 200)
	// And the foreign token works where it was issued.
	wantStatus(t, get(t, other.URL+"/api/me", foreign), 200)
	if n := s.APICalls(401); n != 7 {
		t.Errorf("APICalls(401) = %d, want 7", n)
	}
}

func TestExpiredTokenRejected(t *testing.T) {
	t.Run("Advance", func(t *testing.T) {
		s := start(t)
		tok := login(t, s.URL, devGrant())
		s.Advance(28800*time.Second - time.Second)
		wantStatus(t, get(t, s.URL+"/api/me", tok), 200)
		s.Advance(time.Second)
		wantError(t, get(t, s.URL+"/api/me", tok), 401, "expired")
	})
	t.Run("Config.Now", func(t *testing.T) {
		s := start(t, func(c *apicsim.Config) { c.TokenTTL = time.Minute })
		tok := login(t, s.URL, devGrant())
		s.Clock.Advance(59 * time.Second)
		wantStatus(t, get(t, s.URL+"/api/me", tok), 200)
		s.Clock.Advance(time.Second)
		wantError(t, get(t, s.URL+"/api/me", tok), 401, "expired")
	})
}

func TestRevokeAll(t *testing.T) {
	s := start(t)
	dev := login(t, s.URL, devGrant())
	adm := login(t, s.URL, adminGrant())
	s.RevokeAll()
	wantError(t, get(t, s.URL+"/api/me", dev), 401, "revoked")
	wantError(t, get(t, s.URL+"/api/me", adm), 401, "revoked")
	after := login(t, s.URL, devGrant())
	wantStatus(t, get(t, s.URL+"/api/me", after), 200)
}

func TestRevokeAllRevokesRefreshTokens(t *testing.T) {
	s := start(t, func(c *apicsim.Config) { c.RefreshTokens = true })
	rt := loginResp(t, s.URL, devGrant())["refresh_token"].(string)
	s.RevokeAll()
	wantError(t, tokenReq(t, s.URL, refreshGrant(rt)), 401, "Invalid refresh token.")
}

func TestRevokeUser(t *testing.T) {
	s := start(t, func(c *apicsim.Config) { c.RefreshTokens = true })
	adm := login(t, s.URL, adminGrant())
	// The developer's token is the last one issued before the revocation.
	devResp := loginResp(t, s.URL, devGrant())
	if !s.RevokeUser(apicsim.DefaultProviderRealm, apicsim.DefaultProviderUsername) {
		t.Fatal("RevokeUser(developer) = false, want true")
	}
	wantError(t, get(t, s.URL+"/api/me", devResp["access_token"].(string)), 401, "revoked")
	wantError(t, tokenReq(t, s.URL, refreshGrant(devResp["refresh_token"].(string))), 401, "Invalid refresh token.")
	wantStatus(t, get(t, s.URL+"/api/me", adm), 200)
	wantStatus(t, get(t, s.URL+"/api/me", login(t, s.URL, devGrant())), 200)

	if s.RevokeUser(apicsim.DefaultAdminRealm, apicsim.DefaultProviderUsername) {
		t.Error("RevokeUser of a user in the wrong realm = true, want false")
	}
	if s.RevokeUser(apicsim.DefaultProviderRealm, "nobody") {
		t.Error("RevokeUser(nobody) = true, want false")
	}
}

func TestRevokeEndpoint(t *testing.T) {
	s := start(t)
	dev := login(t, s.URL, devGrant())
	adm := login(t, s.URL, adminGrant())

	r := send(t, nil, http.MethodPost, s.URL+"/_sim/revoke", []byte(`{"realm":"provider/default-idp-2","username":"developer"}`))
	wantStatus(t, r, http.StatusNoContent)
	wantError(t, get(t, s.URL+"/api/me", dev), 401, "revoked")
	wantStatus(t, get(t, s.URL+"/api/me", adm), 200)

	wantError(t, send(t, nil, http.MethodPost, s.URL+"/_sim/revoke", []byte(`{"realm":"provider/default-idp-2","username":"nobody"}`)), 404, "nobody")
	wantError(t, send(t, nil, http.MethodPost, s.URL+"/_sim/revoke", []byte(`{"realm":`)), 400, "")

	wantStatus(t, send(t, nil, http.MethodPost, s.URL+"/_sim/revoke", nil), http.StatusNoContent)
	wantError(t, get(t, s.URL+"/api/me", adm), 401, "revoked")
}

func TestSignOut(t *testing.T) {
	s := start(t, func(c *apicsim.Config) { c.RefreshTokens = true })
	one := loginResp(t, s.URL, devGrant())
	two := login(t, s.URL, devGrant())
	tok := one["access_token"].(string)

	r := call(t, http.MethodPost, s.URL+"/api/me/sign-out", tok, nil)
	wantStatus(t, r, http.StatusNoContent)
	if len(r.Body) != 0 {
		t.Errorf("sign-out body %q, want none", r.Body)
	}
	wantError(t, get(t, s.URL+"/api/me", tok), 401, "revoked")
	wantError(t, call(t, http.MethodPost, s.URL+"/api/me/sign-out", tok, nil), 401, "")
	wantError(t, tokenReq(t, s.URL, refreshGrant(one["refresh_token"].(string))), 401, "Invalid refresh token.")
	wantStatus(t, get(t, s.URL+"/api/me", two), 200)

	wantError(t, get(t, s.URL+"/api/me/sign-out", two), 405, "")
	wantError(t, call(t, http.MethodPost, s.URL+"/api/me/sign-out", "", nil), 401, "")
}

func TestSignOutEndsRefreshedSession(t *testing.T) {
	s := start(t, func(c *apicsim.Config) { c.RefreshTokens = true })
	first := loginResp(t, s.URL, devGrant())
	second := loginResp(t, s.URL, refreshGrant(first["refresh_token"].(string)))
	// Signing out with the refreshed token ends the whole session,
	// including the token it was refreshed from.
	wantStatus(t, call(t, http.MethodPost, s.URL+"/api/me/sign-out", second["access_token"].(string), nil), http.StatusNoContent)
	wantError(t, get(t, s.URL+"/api/me", first["access_token"].(string)), 401, "revoked")
	wantError(t, tokenReq(t, s.URL, refreshGrant(second["refresh_token"].(string))), 401, "")
}
