package apicsim_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

func TestLockout(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(t *testing.T, s *simEnv)
	}{
		{"SetLockout", func(t *testing.T, s *simEnv) { s.SetLockout(3, 15*time.Minute) }},
		{"/_sim/lockout", func(t *testing.T, s *simEnv) {
			wantStatus(t, send(t, nil, http.MethodPost, s.URL+"/_sim/lockout", []byte(`{"attempts":3,"duration":"15m"}`)), http.StatusNoContent)
		}},
		{"Config.Lockout", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s *simEnv
			if tc.set == nil {
				s = start(t, func(c *apicsim.Config) { c.Lockout = apicsim.Lockout{Attempts: 3, Duration: 15 * time.Minute} })
			} else {
				s = start(t)
				tc.set(t, s)
			}
			wrong := with(devGrant(), "password", "guess")
			for range 3 {
				wantError(t, tokenReq(t, s.URL, wrong), 401, "Invalid username or password.")
			}
			wantError(t, tokenReq(t, s.URL, devGrant()), 401, "locked")
			if n := s.TokenRequests("password", apicsim.OutcomeLocked); n != 1 {
				t.Errorf("locked outcomes = %d, want 1", n)
			}
			// Other users are not locked.
			login(t, s.URL, adminGrant())

			s.Advance(15*time.Minute - time.Second)
			wantError(t, tokenReq(t, s.URL, devGrant()), 401, "locked")
			s.Advance(time.Minute + time.Second) // 16m after the lock
			login(t, s.URL, devGrant())
		})
	}
}

func TestLockoutCountsFailuresInARow(t *testing.T) {
	s := start(t)
	s.SetLockout(3, 15*time.Minute)
	wrong := with(devGrant(), "password", "guess")
	tokenReq(t, s.URL, wrong)
	tokenReq(t, s.URL, wrong)
	login(t, s.URL, devGrant()) // a success starts the count again
	tokenReq(t, s.URL, wrong)
	tokenReq(t, s.URL, wrong)
	login(t, s.URL, devGrant())
	if n := s.TokenRequests("", apicsim.OutcomeLocked); n != 0 {
		t.Errorf("locked outcomes = %d, want 0", n)
	}
}

func TestLockoutOff(t *testing.T) {
	s := start(t)
	s.SetLockout(2, time.Hour)
	s.SetLockout(0, 0)
	for range 10 {
		tokenReq(t, s.URL, with(devGrant(), "password", "guess"))
	}
	login(t, s.URL, devGrant())

	wantStatus(t, send(t, nil, http.MethodPost, s.URL+"/_sim/lockout", []byte(`{"attempts":0}`)), http.StatusNoContent)
	wantError(t, send(t, nil, http.MethodPost, s.URL+"/_sim/lockout", []byte(`{"attempts":3,"duration":"a while"}`)), 400, "duration")
}

func TestClockEndpoint(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())

	r := send(t, nil, http.MethodGet, s.URL+"/_sim/clock", nil)
	wantStatus(t, r, 200)
	if got := r.JSON(t)["now"]; got != s.Clock.Now().Format(time.RFC3339Nano) {
		t.Errorf("GET /_sim/clock now %v, want %v", got, s.Clock.Now().Format(time.RFC3339Nano))
	}

	r = send(t, nil, http.MethodPost, s.URL+"/_sim/clock", []byte(`{"advance":"9h"}`), "Content-Type", "application/json")
	wantStatus(t, r, 200)
	want := s.Clock.Now().Add(9 * time.Hour)
	if got := r.JSON(t)["now"]; got != want.Format(time.RFC3339Nano) {
		t.Errorf("POST /_sim/clock now %v, want %v", got, want.Format(time.RFC3339Nano))
	}
	if !s.Now().Equal(want) {
		t.Errorf("Server.Now() = %v, want %v", s.Now(), want)
	}
	wantError(t, get(t, s.URL+"/api/me", tok), 401, "expired")

	_, c := decodeJWT(t, login(t, s.URL, devGrant()))
	if int64(c["iat"].(float64)) != want.Unix() {
		t.Errorf("new token iat %v, want the advanced clock %d", c["iat"], want.Unix())
	}
	wantError(t, send(t, nil, http.MethodPost, s.URL+"/_sim/clock", []byte(`{"advance":"later"}`)), 400, "advance")
	wantError(t, send(t, nil, http.MethodPut, s.URL+"/_sim/clock", nil), 404, "")
}

func TestAdvanceBackwards(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	s.Advance(9 * time.Hour)
	wantError(t, get(t, s.URL+"/api/me", tok), 401, "expired")
	s.Advance(-9 * time.Hour)
	wantStatus(t, get(t, s.URL+"/api/me", tok), 200)
}

func TestSettingsEndpoint(t *testing.T) {
	s := start(t)
	old := login(t, s.URL, devGrant())

	wantStatus(t, send(t, nil, http.MethodPost, s.URL+"/_sim/settings", []byte(`{"token_ttl":"2s"}`)), http.StatusNoContent)
	m := loginResp(t, s.URL, devGrant())
	if m["expires_in"] != float64(2) {
		t.Fatalf("expires_in %v after token_ttl 2s, want 2", m["expires_in"])
	}
	if _, ok := m["refresh_token"]; ok {
		t.Errorf("refresh_token appeared though refresh tokens were not turned on")
	}
	s.Advance(2 * time.Second)
	wantError(t, get(t, s.URL+"/api/me", m["access_token"].(string)), 401, "expired")
	wantStatus(t, get(t, s.URL+"/api/me", old), 200) // issued under the old TTL

	wantStatus(t, send(t, nil, http.MethodPost, s.URL+"/_sim/settings", []byte(`{"refresh_tokens":true,"refresh_ttl":"3600","api_key_ttl":"1m"}`)), http.StatusNoContent)
	m = loginResp(t, s.URL, devGrant())
	if m["refresh_expires_in"] != float64(3600) || m["expires_in"] != float64(2) {
		t.Errorf("after refresh settings: %v", m)
	}
	if k := createAPIKey(t, s.URL, m["access_token"].(string), nil); k["ttl"] != float64(60) {
		t.Errorf("api key ttl %v, want 60", k["ttl"])
	}

	for _, bad := range []string{`{"token_ttl":"soon"}`, `{"token_ttl":"0"}`, `{"token_ttl":"-5s"}`, `{"refresh_tokens":"yes"}`} {
		wantError(t, send(t, nil, http.MethodPost, s.URL+"/_sim/settings", []byte(bad)), 400, "")
	}
	if m := loginResp(t, s.URL, devGrant()); m["expires_in"] != float64(2) {
		t.Errorf("a refused settings change changed expires_in to %v", m["expires_in"])
	}
}

func TestUpdateSettings(t *testing.T) {
	s := start(t)
	ttl, on := 45*time.Second, true
	s.UpdateSettings(apicsim.Settings{TokenTTL: &ttl, RefreshTokens: &on})
	m := loginResp(t, s.URL, devGrant())
	if m["expires_in"] != float64(45) || m["refresh_expires_in"] != float64(57600) {
		t.Errorf("after UpdateSettings: %v", m)
	}
}
