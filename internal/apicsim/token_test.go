package apicsim_test

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"go.yaml.in/yaml/v3"
)

func TestPasswordGrant(t *testing.T) {
	s := start(t)
	for _, tc := range []struct {
		name  string
		grant map[string]string
		user  string
		realm string
	}{
		{"developer", devGrant(), apicsim.DefaultProviderUsername, apicsim.DefaultProviderRealm},
		{"admin", adminGrant(), apicsim.DefaultAdminUsername, apicsim.DefaultAdminRealm},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tokenReq(t, s.URL, tc.grant)
			wantStatus(t, r, http.StatusOK)
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			m := r.JSON(t)
			// Exactly these keys: no refresh_token unless refresh tokens are on.
			if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, []string{"access_token", "expires_in", "token_type"}) {
				t.Errorf("token response keys %v, want [access_token expires_in token_type]", got)
			}
			if m["token_type"] != "Bearer" {
				t.Errorf("token_type %v, want Bearer", m["token_type"])
			}
			if m["expires_in"] != float64(28800) {
				t.Errorf("expires_in %v, want 28800", m["expires_in"])
			}
			tok := m["access_token"].(string)
			if n := len(tok); n < 2000 || n > 3500 {
				t.Errorf("access token is %d bytes, want about 2.7 KB (2000..3500)", n)
			}
			hdr, c := decodeJWT(t, tok)
			if hdr["alg"] != "RS256" {
				t.Errorf("JWT alg %v, want RS256", hdr["alg"])
			}
			if kid, _ := hdr["kid"].(string); kid == "" {
				t.Errorf("JWT header has no kid: %v", hdr)
			}
			checkClaims(t, c, tc.user, tc.realm, "password", s.Clock.Now(), 28800)
		})
	}
}

// checkClaims checks an access token's claims against what API Connect
// puts in them.
func checkClaims(t *testing.T, c map[string]any, user, realm, grant string, now time.Time, ttl int64) {
	t.Helper()
	for _, k := range []string{"jti", "namespace", "aud", "sub", "iss", "iat", "exp", "grant_type", "user_registry_url", "realm", "username", "id_token", "scopes"} {
		if _, ok := c[k]; !ok {
			t.Errorf("claim %s is missing", k)
		}
	}
	str := func(k string) string { s, _ := c[k].(string); return s }
	if str("jti") == "" {
		t.Errorf("jti is empty")
	}
	if str("namespace") != realm {
		t.Errorf("namespace %q, want %q", str("namespace"), realm)
	}
	if !strings.HasPrefix(str("aud"), "/api/cloud/registrations/") || len(str("aud")) <= len("/api/cloud/registrations/") {
		t.Errorf("aud %q, want /api/cloud/registrations/<id>", str("aud"))
	}
	if !strings.HasPrefix(str("user_registry_url"), "/api/user-registries/") {
		t.Errorf("user_registry_url %q, want /api/user-registries/...", str("user_registry_url"))
	}
	if !strings.HasPrefix(str("sub"), str("user_registry_url")+"/users/") {
		t.Errorf("sub %q, want %s/users/<id>", str("sub"), str("user_registry_url"))
	}
	if str("iss") != "IBM API Connect" {
		t.Errorf("iss %q, want IBM API Connect", str("iss"))
	}
	iat, _ := c["iat"].(float64)
	exp, _ := c["exp"].(float64)
	if int64(iat) != now.Unix() {
		t.Errorf("iat %v, want the simulator's clock %d", iat, now.Unix())
	}
	if int64(exp-iat) != ttl {
		t.Errorf("exp-iat = %v, want %d", exp-iat, ttl)
	}
	if str("grant_type") != grant {
		t.Errorf("grant_type claim %q, want %q", str("grant_type"), grant)
	}
	if str("realm") != realm || str("username") != user {
		t.Errorf("realm/username claims %q/%q, want %q/%q", str("realm"), str("username"), realm, user)
	}
	if n := len(strings.Split(str("id_token"), ".")); n != 3 {
		t.Errorf("id_token has %d parts, want a nested JWT", n)
	}
	var scopes []string
	raw, _ := c["scopes"].([]any)
	for _, s := range raw {
		scopes = append(scopes, s.(string))
	}
	if !slices.Equal(scopes, apicsim.AllScopes) {
		t.Errorf("scopes %v, want the registration's %v", scopes, apicsim.AllScopes)
	}
}

func TestTokenTTLFromConfig(t *testing.T) {
	s := start(t, func(c *apicsim.Config) { c.TokenTTL = 90 * time.Second })
	m := loginResp(t, s.URL, devGrant())
	if m["expires_in"] != float64(90) {
		t.Errorf("expires_in %v, want 90", m["expires_in"])
	}
	_, c := decodeJWT(t, m["access_token"].(string))
	if d := c["exp"].(float64) - c["iat"].(float64); d != 90 {
		t.Errorf("exp-iat = %v, want 90", d)
	}
}

func TestTokenBodyTypesAreTheDocuments(t *testing.T) {
	s := start(t)
	wantStatus(t, tokenReq(t, s.URL, devGrant(), "Content-Type", "application/json; charset=utf-8"), http.StatusOK)
	for _, ct := range []string{"application/vnd.ibm+json", "text/yaml", "application/x-yaml"} {
		wantError(t, tokenReq(t, s.URL, devGrant(), "Content-Type", ct), http.StatusUnsupportedMediaType, ct)
	}
}

func TestClientCredentialsInHeaders(t *testing.T) {
	s := start(t)
	noClient := with(devGrant(), "client_id", "<delete>", "client_secret", "<delete>")
	for _, tc := range []struct {
		name   string
		body   map[string]string
		id     string
		secret string
		want   int
	}{
		{"headers in place of body fields", noClient, apicsim.DefaultClientID, apicsim.DefaultClientSecret, 200},
		{"wrong secret in header", noClient, apicsim.DefaultClientID, "nope", 401},
		{"unknown id in header", noClient, "nobody", apicsim.DefaultClientSecret, 401},
		{"body fields win over headers", devGrant(), "nobody", "nope", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tokenReq(t, s.URL, tc.body, "X-IBM-Client-Id", tc.id, "X-IBM-Client-Secret", tc.secret)
			if tc.want == 200 {
				wantStatus(t, r, 200)
				return
			}
			wantError(t, r, tc.want, "client")
		})
	}
	t.Run("no client anywhere", func(t *testing.T) {
		wantError(t, tokenReq(t, s.URL, noClient), 400, "client_id, client_secret")
	})
}

func TestTokenRequestErrors(t *testing.T) {
	s := start(t, func(c *apicsim.Config) {
		c.Registrations = append(c.Registrations, apicsim.Registration{Name: "off", ClientID: "disabled-id", ClientSecret: "disabled-secret", State: "disabled"})
	})
	const jsonCT = "application/json"
	dev := devGrant()
	for _, tc := range []struct {
		name        string
		body        string
		contentType string
		status      int
		contains    string
		grant       string
		outcome     string
	}{
		{"form body", "grant_type=password&username=developer&password=Passw0rd%21&realm=provider%2Fdefault-idp-2&client_id=clientID&client_secret=clientPassword",
			"application/x-www-form-urlencoded", 415, "application/json", "unknown", apicsim.OutcomeBadRequest},
		{"no content type", string(jsonOf(dev)), "", 415, "application/json", "unknown", apicsim.OutcomeBadRequest},
		{"text/plain JSON", string(jsonOf(dev)), "text/plain", 415, "text/plain", "unknown", apicsim.OutcomeBadRequest},
		{"not JSON", "grant_type=password", jsonCT, 400, "not a JSON object", "unknown", apicsim.OutcomeBadRequest},
		{"JSON array", `["password"]`, jsonCT, 400, "not a JSON object", "unknown", apicsim.OutcomeBadRequest},
		{"JSON null", `null`, jsonCT, 400, "not a JSON object", "unknown", apicsim.OutcomeBadRequest},
		{"data after object", string(jsonOf(dev)) + `{}`, jsonCT, 400, "after the JSON object", "unknown", apicsim.OutcomeBadRequest},
		{"number field", `{"grant_type":"password","username":7}`, jsonCT, 400, "username must be a string", "password", apicsim.OutcomeBadRequest},
		{"number grant_type", `{"grant_type":5}`, jsonCT, 400, "grant_type must be a string", "unknown", apicsim.OutcomeBadRequest},
		{"empty grant_type", string(jsonOf(with(dev, "grant_type", ""))), jsonCT, 400, "grant_type is required", "unknown", apicsim.OutcomeBadRequest},
		{"unknown field", string(jsonOf(with(dev, "nonce", "n-1"))), jsonCT, 400, "unknown properties are not allowed: nonce", "password", apicsim.OutcomeBadRequest},
		{"scope the registration lacks", string(jsonOf(with(dev, "scope", "my:view openid"))), jsonCT, 400, "scope openid is not granted", "password", apicsim.OutcomeBadRequest},
		{"empty scope", string(jsonOf(with(dev, "scope", " "))), jsonCT, 400, "scope must name at least one scope", "password", apicsim.OutcomeBadRequest},
		{"YAML list", "- password\n", "application/yaml", 400, "not a YAML object", "unknown", apicsim.OutcomeBadRequest},
		{"missing grant_type", string(jsonOf(with(dev, "grant_type", "<delete>"))), jsonCT, 400, "grant_type is required", "unknown", apicsim.OutcomeBadRequest},
		{"password grant missing password and realm", string(jsonOf(with(dev, "password", "<delete>", "realm", "<delete>"))), jsonCT, 400, "missing required properties: password, realm", "password", apicsim.OutcomeBadRequest},
		{"api_key grant missing api_key", `{"grant_type":"api_key","client_id":"clientID","client_secret":"clientPassword"}`, jsonCT, 400, "missing required properties: api_key", "api_key", apicsim.OutcomeBadRequest},
		{"refresh grant missing refresh_token", `{"grant_type":"refresh_token","client_id":"clientID","client_secret":"clientPassword"}`, jsonCT, 400, "missing required properties: refresh_token", "refresh_token", apicsim.OutcomeBadRequest},
		{"client_credentials grant", string(jsonOf(map[string]string{"grant_type": "client_credentials", "client_id": "clientID", "client_secret": "clientPassword"})), jsonCT, 400, "client_credentials", "client_credentials", apicsim.OutcomeBadRequest},
		{"made-up grant", `{"grant_type":"magic"}`, jsonCT, 400, `"magic" is not valid`, "magic", apicsim.OutcomeBadRequest},
		{"unknown client id", string(jsonOf(with(dev, "client_id", "nobody"))), jsonCT, 401, "Invalid client id or secret.", "password", apicsim.OutcomeBadClient},
		{"wrong client secret", string(jsonOf(with(dev, "client_secret", "wrong"))), jsonCT, 401, "Invalid client id or secret.", "password", apicsim.OutcomeBadClient},
		{"disabled registration", string(jsonOf(with(dev, "client_id", "disabled-id", "client_secret", "disabled-secret"))), jsonCT, 401, "disabled", "password", apicsim.OutcomeBadClient},
		{"user in another realm", string(jsonOf(with(dev, "realm", apicsim.DefaultAdminRealm))), jsonCT, 401, "Invalid realm admin/default-idp-1", "password", apicsim.OutcomeBadCredentials},
		{"realm without identity provider", string(jsonOf(with(dev, "realm", "provider/nope"))), jsonCT, 401, "Invalid realm provider/nope", "password", apicsim.OutcomeBadCredentials},
		{"unknown user", string(jsonOf(with(dev, "username", "mallory"))), jsonCT, 401, "Invalid username or password.", "password", apicsim.OutcomeBadCredentials},
		{"wrong password", string(jsonOf(with(dev, "password", "guess"))), jsonCT, 401, "Invalid username or password.", "password", apicsim.OutcomeBadCredentials},
		{"unknown api key", string(jsonOf(apiKeyGrant("no-such-key"))), jsonCT, 401, "Invalid API key.", "api_key", apicsim.OutcomeBadCredentials},
		{"unknown refresh token", string(jsonOf(refreshGrant("no-such-token"))), jsonCT, 401, "Invalid refresh token.", "refresh_token", apicsim.OutcomeBadCredentials},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.ResetStats()
			hdr := []string{"Accept", "application/json"}
			if tc.contentType != "" {
				hdr = append(hdr, "Content-Type", tc.contentType)
			}
			r := send(t, nil, http.MethodPost, s.URL+"/api/token", []byte(tc.body), hdr...)
			wantError(t, r, tc.status, tc.contains)
			if n := s.TokenRequests(tc.grant, tc.outcome); n != 1 {
				t.Errorf("TokenRequests(%q, %q) = %d, want 1; stats %v", tc.grant, tc.outcome, n, s.Stats().Token)
			}
			if n := s.TokenRequests("", ""); n != 1 {
				t.Errorf("TokenRequests total = %d, want 1", n)
			}
			if st := s.Stats(); st.TokensIssued != 0 {
				t.Errorf("TokensIssued = %d, want 0", st.TokensIssued)
			}
		})
	}
}

func TestTokenRejectsOtherMethods(t *testing.T) {
	s := start(t)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		t.Run(m, func(t *testing.T) {
			r := send(t, nil, m, s.URL+"/api/token", nil)
			wantError(t, r, http.StatusMethodNotAllowed, "use POST")
			if a := r.Header.Get("Allow"); a != http.MethodPost {
				t.Errorf("Allow %q, want POST", a)
			}
		})
	}
	if n := s.TokenRequests("unknown", apicsim.OutcomeBadRequest); n != 3 {
		t.Errorf("TokenRequests(unknown, bad_request) = %d, want 3", n)
	}
}

func TestRealmErrorStatusConfigurable(t *testing.T) {
	s := start(t, func(c *apicsim.Config) { c.RealmErrorStatus = 400 })
	wantError(t, tokenReq(t, s.URL, with(devGrant(), "realm", apicsim.DefaultAdminRealm)), 400, "Invalid realm")
	// A bad password in the right realm is still 401.
	wantError(t, tokenReq(t, s.URL, with(devGrant(), "password", "x")), 401, "Invalid username or password.")
	if n := s.TokenRequests("password", apicsim.OutcomeBadCredentials); n != 2 {
		t.Errorf("bad_credentials = %d, want 2", n)
	}
}

func TestAPIKeyGrant(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())

	t.Run("create needs a token", func(t *testing.T) {
		wantError(t, call(t, http.MethodPost, s.URL+"/api/cloud/api-keys", "", []byte(`{}`), "Content-Type", "application/json"), 401, "")
	})

	t.Run("create defaults", func(t *testing.T) {
		k := createAPIKey(t, s.URL, tok, nil)
		if key, _ := k["api_key"].(string); key == "" {
			t.Errorf("no api_key in %v", k)
		}
		if k["ttl"] != float64(300) || k["multiple_use"] != false || k["type"] != "api_key" {
			t.Errorf("ttl/multiple_use/type = %v/%v/%v, want 300/false/api_key", k["ttl"], k["multiple_use"], k["type"])
		}
	})

	t.Run("create rejects unknown field and bad ttl", func(t *testing.T) {
		for _, body := range []string{`{"colour":"red"}`, `{"ttl":0}`, `{"ttl":"5m"}`} {
			wantError(t, call(t, http.MethodPost, s.URL+"/api/cloud/api-keys", tok, []byte(body), "Content-Type", "application/json"), 400, "")
		}
	})

	t.Run("single use", func(t *testing.T) {
		key := createAPIKey(t, s.URL, tok, []byte(`{"client_type":"toolkit"}`))["api_key"].(string)
		m := loginResp(t, s.URL, apiKeyGrant(key))
		_, c := decodeJWT(t, m["access_token"].(string))
		checkClaims(t, c, apicsim.DefaultProviderUsername, apicsim.DefaultProviderRealm, "api_key", s.Now(), 28800)
		wantError(t, tokenReq(t, s.URL, apiKeyGrant(key)), 401, "already been used")
	})

	t.Run("multiple use", func(t *testing.T) {
		k := createAPIKey(t, s.URL, tok, []byte(`{"multiple_use":true}`))
		if k["multiple_use"] != true {
			t.Fatalf("multiple_use %v, want true", k["multiple_use"])
		}
		for range 3 {
			login(t, s.URL, apiKeyGrant(k["api_key"].(string)))
		}
	})

	t.Run("expires after its ttl", func(t *testing.T) {
		a := createAPIKey(t, s.URL, tok, []byte(`{"multiple_use":true}`))["api_key"].(string)
		b := createAPIKey(t, s.URL, tok, []byte(`{"ttl":60}`))
		if b["ttl"] != float64(60) {
			t.Fatalf("ttl %v, want 60", b["ttl"])
		}
		s.Advance(59 * time.Second)
		login(t, s.URL, apiKeyGrant(a))
		s.Advance(time.Second)
		wantError(t, tokenReq(t, s.URL, apiKeyGrant(b["api_key"].(string))), 401, "expired")
		s.Advance(239 * time.Second) // 4m59s after creation
		login(t, s.URL, apiKeyGrant(a))
		s.Advance(time.Second)
		wantError(t, tokenReq(t, s.URL, apiKeyGrant(a)), 401, "expired")
	})

	t.Run("api key of a wrong client secret", func(t *testing.T) {
		key := createAPIKey(t, s.URL, tok, nil)["api_key"].(string)
		wantError(t, tokenReq(t, s.URL, with(apiKeyGrant(key), "client_secret", "x")), 401, "client")
		login(t, s.URL, apiKeyGrant(key)) // not used up by the refused request
	})
}

func TestAPIKeyTTLFromConfig(t *testing.T) {
	s := start(t, func(c *apicsim.Config) { c.APIKeyTTL = time.Minute })
	k := createAPIKey(t, s.URL, login(t, s.URL, adminGrant()), nil)
	if k["ttl"] != float64(60) {
		t.Errorf("ttl %v, want 60", k["ttl"])
	}
}

func TestRefreshTokenGrant(t *testing.T) {
	s := start(t, func(c *apicsim.Config) {
		c.RefreshTokens = true
		c.Registrations = append(c.Registrations, apicsim.Registration{Name: "other", ClientID: "other-id", ClientSecret: "other-secret"})
	})
	first := loginResp(t, s.URL, devGrant())
	rt1, _ := first["refresh_token"].(string)
	if rt1 == "" {
		t.Fatalf("no refresh_token with refresh tokens on: %v", first)
	}
	if first["refresh_expires_in"] != float64(57600) {
		t.Errorf("refresh_expires_in %v, want 57600", first["refresh_expires_in"])
	}

	t.Run("rotates", func(t *testing.T) {
		second := loginResp(t, s.URL, refreshGrant(rt1))
		rt2, _ := second["refresh_token"].(string)
		if rt2 == "" || rt2 == rt1 {
			t.Fatalf("refresh gave refresh token %q, want a new one (old %q)", rt2, rt1)
		}
		if second["access_token"] == first["access_token"] {
			t.Errorf("refresh gave the same access token")
		}
		_, c := decodeJWT(t, second["access_token"].(string))
		checkClaims(t, c, apicsim.DefaultProviderUsername, apicsim.DefaultProviderRealm, "refresh_token", s.Now(), 28800)
		wantStatus(t, get(t, s.URL+"/api/me", second["access_token"].(string)), 200)

		wantError(t, tokenReq(t, s.URL, refreshGrant(rt1)), 401, "Invalid refresh token.")
		login(t, s.URL, refreshGrant(rt2)) // the new one works once
	})

	t.Run("with matching realm", func(t *testing.T) {
		rt := loginResp(t, s.URL, devGrant())["refresh_token"].(string)
		login(t, s.URL, with(refreshGrant(rt), "realm", apicsim.DefaultProviderRealm))
	})

	t.Run("with another realm", func(t *testing.T) {
		rt := loginResp(t, s.URL, devGrant())["refresh_token"].(string)
		wantError(t, tokenReq(t, s.URL, with(refreshGrant(rt), "realm", apicsim.DefaultAdminRealm)), 401, "Invalid realm")
	})

	t.Run("unknown", func(t *testing.T) {
		wantError(t, tokenReq(t, s.URL, refreshGrant("bogus")), 401, "Invalid refresh token.")
	})

	t.Run("of another client", func(t *testing.T) {
		rt := loginResp(t, s.URL, devGrant())["refresh_token"].(string)
		wantError(t, tokenReq(t, s.URL, with(refreshGrant(rt), "client_id", "other-id", "client_secret", "other-secret")), 401, "another client")
		login(t, s.URL, refreshGrant(rt)) // still good for its own client
	})

	t.Run("expires", func(t *testing.T) {
		a := loginResp(t, s.URL, devGrant())["refresh_token"].(string)
		b := loginResp(t, s.URL, devGrant())["refresh_token"].(string)
		s.Advance(57600*time.Second - time.Second)
		login(t, s.URL, refreshGrant(a))
		s.Advance(time.Second)
		wantError(t, tokenReq(t, s.URL, refreshGrant(b)), 401, "expired")
	})

	if n := s.TokenRequests(apicsim.GrantRefreshToken, apicsim.OutcomeBadCredentials); n != 5 {
		t.Errorf("refresh_token bad_credentials = %d, want 5; %v", n, s.Stats().Token)
	}
}

func TestRefreshTTLFromConfig(t *testing.T) {
	s := start(t, func(c *apicsim.Config) { c.RefreshTokens = true; c.RefreshTTL = time.Hour })
	m := loginResp(t, s.URL, devGrant())
	if m["refresh_expires_in"] != float64(3600) {
		t.Errorf("refresh_expires_in %v, want 3600", m["refresh_expires_in"])
	}
}

func TestRecentTokenRequestsHideValues(t *testing.T) {
	s := start(t)
	login(t, s.URL, devGrant())
	tokenReq(t, s.URL, with(devGrant(), "password", "wrong-Secret-42"))
	tokenReq(t, s.URL, with(devGrant(), "scope", "openid"))
	send(t, nil, http.MethodPost, s.URL+"/api/token", []byte("grant_type=password&password=form-Secret-9"), "Content-Type", "application/x-www-form-urlencoded", "Accept", "*/*")

	recs := s.RecentTokenRequests()
	if len(recs) != 4 {
		t.Fatalf("%d records, want 4: %+v", len(recs), recs)
	}
	allFields := []string{"client_id", "client_secret", "grant_type", "password", "realm", "username"}
	want := []apicsim.TokenRequestRecord{
		{Grant: "password", Fields: allFields, ContentType: "application/json", Accept: "application/json", Realm: apicsim.DefaultProviderRealm, Username: "developer", Status: 200, Outcome: "ok"},
		{Grant: "password", Fields: allFields, ContentType: "application/json", Accept: "application/json", Realm: apicsim.DefaultProviderRealm, Username: "developer", Status: 401, Outcome: "bad_credentials"},
		{Grant: "password", Fields: append(slices.Clone(allFields), "scope"), ContentType: "application/json", Accept: "application/json", Realm: apicsim.DefaultProviderRealm, Username: "developer", Status: 400, Outcome: "bad_request"},
		{Grant: "unknown", ContentType: "application/x-www-form-urlencoded", Accept: "*/*", Status: 415, Outcome: "bad_request"},
	}
	for i := range want {
		slices.Sort(want[i].Fields)
		g := recs[i]
		if g.Grant != want[i].Grant || !slices.Equal(g.Fields, want[i].Fields) || g.ContentType != want[i].ContentType ||
			g.Accept != want[i].Accept || g.Realm != want[i].Realm || g.Username != want[i].Username ||
			g.Status != want[i].Status || g.Outcome != want[i].Outcome {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, g, want[i])
		}
	}

	// Neither the Go records nor their JSON form carry a secret value.
	r := send(t, nil, http.MethodGet, s.URL+"/_sim/token-requests", nil)
	wantStatus(t, r, 200)
	for _, secret := range []string{apicsim.DefaultProviderPassword, "wrong-Secret-42", "form-Secret-9", apicsim.DefaultClientSecret, "openid"} {
		if strings.Contains(string(r.Body), secret) {
			t.Errorf("/_sim/token-requests shows the value %q: %s", secret, r.Body)
		}
	}
}

func TestTokenScopeNarrowsTheToken(t *testing.T) {
	s := start(t)
	m := loginResp(t, s.URL, with(devGrant(), "scope", "my:view product:view my:view"))
	_, claims := decodeJWT(t, m["access_token"].(string))
	if got := fmt.Sprint(claims["scopes"]); got != "[my:view product:view]" {
		t.Errorf("scopes %s, want [my:view product:view]", got)
	}
	tok := m["access_token"].(string)
	wantStatus(t, get(t, s.URL+"/api/me", tok), http.StatusOK)
	r := call(t, http.MethodPost, s.URL+"/api/me/sign-out", tok, nil)
	wantError(t, r, http.StatusForbidden, "my:manage")

	t.Run("a refreshed token keeps the narrower scopes", func(t *testing.T) {
		s := start(t, func(c *apicsim.Config) { c.RefreshTokens = true })
		m := loginResp(t, s.URL, with(devGrant(), "scope", "my:view"))
		m2 := loginResp(t, s.URL, refreshGrant(m["refresh_token"].(string)))
		_, claims := decodeJWT(t, m2["access_token"].(string))
		if got := fmt.Sprint(claims["scopes"]); got != "[my:view]" {
			t.Errorf("refreshed scopes %s, want [my:view]", got)
		}
		r := tokenReq(t, s.URL, with(refreshGrant(m2["refresh_token"].(string)), "scope", "my:manage"))
		wantError(t, r, http.StatusBadRequest, "scope my:manage is not granted")
		// A refused narrowing does not spend the refresh token.
		loginResp(t, s.URL, refreshGrant(m2["refresh_token"].(string)))
	})
}

func TestTokenRequestInYAML(t *testing.T) {
	s := start(t)
	body := "grant_type: password\nusername: developer\npassword: Passw0rd!\nrealm: provider/default-idp-2\nclient_id: clientID\nclient_secret: clientPassword\n"
	r := send(t, nil, http.MethodPost, s.URL+"/api/token", []byte(body), "Content-Type", "application/yaml", "Accept", "application/yaml")
	wantStatus(t, r, http.StatusOK)
	if ct := r.Header.Get("Content-Type"); ct != "application/yaml" {
		t.Fatalf("Content-Type %q, want application/yaml", ct)
	}
	var m map[string]any
	if err := yaml.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("answer is not YAML: %v\n%s", err, r.Body)
	}
	if m["token_type"] != "Bearer" || m["expires_in"] != 28800 || m["access_token"] == "" {
		t.Errorf("answer %v", m)
	}
	r = send(t, nil, http.MethodPost, s.URL+"/api/token", []byte("grant_type: password\n"), "Content-Type", "application/yaml", "Accept", "application/yaml")
	if r.Status != http.StatusBadRequest || r.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("error %d %q, want 400 in YAML: %s", r.Status, r.Header.Get("Content-Type"), r.Body)
	}
	var e struct {
		Status  int      `yaml:"status"`
		Message []string `yaml:"message"`
	}
	if err := yaml.Unmarshal(r.Body, &e); err != nil || e.Status != 400 || len(e.Message) != 1 || !strings.Contains(e.Message[0], "missing required properties") {
		t.Errorf("error %+v (%v): %s", e, err, r.Body)
	}
}
