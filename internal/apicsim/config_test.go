package apicsim_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

const fullConfigYAML = `
token_ttl: 1h
refresh_tokens: true
refresh_ttl: "7200"
api_key_ttl: 90s
realm_error_status: 400
lockout:
  attempts: 3
  duration: 15m
users:
  - {username: alice, password: secret, realm: provider/default-idp-2, email: alice@example.com}
  - {username: root, password: toor, realm: admin/default-idp-1}
registrations:
  - {name: ci, client_id: ci-id, client_secret: ci-secret, scopes: [my:view, org:view]}
`

func TestParseConfig(t *testing.T) {
	cfg, err := apicsim.ParseConfig([]byte(fullConfigYAML))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if cfg.TokenTTL != time.Hour || !cfg.RefreshTokens || cfg.RefreshTTL != 2*time.Hour || cfg.APIKeyTTL != 90*time.Second || cfg.RealmErrorStatus != 400 {
		t.Errorf("settings: ttl %v refresh %v/%v api key %v realm status %d", cfg.TokenTTL, cfg.RefreshTokens, cfg.RefreshTTL, cfg.APIKeyTTL, cfg.RealmErrorStatus)
	}
	if cfg.Lockout != (apicsim.Lockout{Attempts: 3, Duration: 15 * time.Minute}) {
		t.Errorf("lockout %+v", cfg.Lockout)
	}
	wantUsers := []apicsim.User{
		{Username: "alice", Password: "secret", Realm: "provider/default-idp-2", Email: "alice@example.com"},
		{Username: "root", Password: "toor", Realm: "admin/default-idp-1"},
	}
	if !reflect.DeepEqual(cfg.Users, wantUsers) {
		t.Errorf("users %+v, want %+v", cfg.Users, wantUsers)
	}
	wantRegs := []apicsim.Registration{{Name: "ci", ClientID: "ci-id", ClientSecret: "ci-secret", Scopes: []string{"my:view", "org:view"}}}
	if !reflect.DeepEqual(cfg.Registrations, wantRegs) {
		t.Errorf("registrations %+v, want %+v", cfg.Registrations, wantRegs)
	}
	// Lists not given keep the built-in ones.
	def := apicsim.DefaultConfig()
	if !reflect.DeepEqual(cfg.IdentityProviders, def.IdentityProviders) || !reflect.DeepEqual(cfg.Orgs, def.Orgs) {
		t.Errorf("identity providers or orgs changed though the file names none")
	}

	// The parsed config runs: the file's users and client, not the built-in ones.
	s := start(t, func(c *apicsim.Config) { now := c.Now; *c = cfg; c.Now = now })
	ci := map[string]string{"grant_type": "password", "username": "alice", "password": "secret", "realm": "provider/default-idp-2", "client_id": "ci-id", "client_secret": "ci-secret"}
	m := loginResp(t, s.URL, ci)
	if m["expires_in"] != float64(3600) || m["refresh_expires_in"] != float64(7200) {
		t.Errorf("token response %v, want expires_in 3600 and refresh_expires_in 7200", m)
	}
	wantError(t, tokenReq(t, s.URL, devGrant()), 401, "client")
	wantError(t, tokenReq(t, s.URL, with(ci, "realm", "admin/default-idp-1")), 400, "Invalid realm")
	// The registration's scopes hold: no my:manage, no API keys.
	wantError(t, call(t, http.MethodPost, s.URL+"/api/cloud/api-keys", m["access_token"].(string), nil), 403, "my:manage")
}

func TestParseConfigEmptyIsDefault(t *testing.T) {
	for _, doc := range []string{"", "# nothing\n", "{}\n"} {
		cfg, err := apicsim.ParseConfig([]byte(doc))
		if err != nil {
			t.Fatalf("ParseConfig(%q): %v", doc, err)
		}
		if !reflect.DeepEqual(cfg, apicsim.DefaultConfig()) {
			t.Errorf("ParseConfig(%q) differs from DefaultConfig", doc)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, contains string
	}{
		{"unknown key", "tokens_ttl: 1h\n", "tokens_ttl"},
		{"unknown user key", "users:\n  - {username: a, password: b, realm: provider/default-idp-2, role: x}\n", "role"},
		{"unknown lockout key", "lockout: {attempts: 3, period: 15m}\n", "period"},
		{"not YAML", "users: [\n", "simulator config"},
		{"user realm without identity provider", "users:\n  - {username: a, password: b, realm: provider/nope}\n", "has no identity provider"},
		{"user realm of a dropped identity provider", "identity_providers:\n  - {name: corp, scope: provider}\nusers:\n  - {username: a, password: b, realm: provider/default-idp-2}\n", "has no identity provider"},
		{"duplicate client id", "registrations:\n  - {name: a, client_id: x, client_secret: s}\n  - {name: b, client_id: x, client_secret: t}\n", `client_id "x" appears twice`},
		{"registration without secret", "registrations:\n  - {name: a, client_id: x}\n", "client_id and client_secret are required"},
		{"user without password", "users:\n  - {username: a, realm: provider/default-idp-2}\n", "required"},
		{"duplicate user", "users:\n  - {username: a, password: b, realm: provider/default-idp-2}\n  - {username: a, password: c, realm: provider/default-idp-2}\n", "appears twice"},
		{"identity provider scope", "identity_providers:\n  - {name: corp, scope: consumer}\n", "scope must be admin or provider"},
		{"bad token_ttl", "token_ttl: soon\n", "token_ttl"},
		{"negative refresh_ttl", "refresh_ttl: -5s\n", "positive"},
		{"bad lockout duration", "lockout: {attempts: 3, duration: forever}\n", "lockout.duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := apicsim.ParseConfig([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("ParseConfig accepted:\n%s", tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %q does not mention %q", err, tc.contains)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		change   func(*apicsim.Config)
		contains string
	}{
		{"user realm without identity provider", func(c *apicsim.Config) {
			c.Users = append(c.Users, apicsim.User{Username: "a", Password: "b", Realm: "provider/nope"})
		}, "has no identity provider"},
		{"duplicate client id", func(c *apicsim.Config) {
			c.Registrations = append(c.Registrations, apicsim.Registration{Name: "again", ClientID: apicsim.DefaultClientID, ClientSecret: "x"})
		}, "appears twice"},
		{"negative token TTL", func(c *apicsim.Config) { c.TokenTTL = -time.Second }, "positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := apicsim.DefaultConfig()
			tc.change(&cfg)
			_, err := apicsim.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("New: error %v, want one mentioning %q", err, tc.contains)
			}
		})
	}
}

func TestNewFillsZeroSettings(t *testing.T) {
	// A Config with only users, providers and a registration takes the
	// default settings.
	def := apicsim.DefaultConfig()
	clock := newFakeClock()
	s, err := apicsim.New(apicsim.Config{IdentityProviders: def.IdentityProviders, Users: def.Users, Registrations: def.Registrations, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Now().Equal(clock.Now()) {
		t.Errorf("Now() = %v, want the fake clock %v", s.Now(), clock.Now())
	}
	ts := httptest.NewServer(s)
	defer ts.Close()
	m := loginResp(t, ts.URL, devGrant())
	if m["expires_in"] != float64(28800) {
		t.Errorf("expires_in %v, want the default 28800", m["expires_in"])
	}
	wantError(t, tokenReq(t, ts.URL, with(devGrant(), "realm", apicsim.DefaultAdminRealm)), 401, "realm")
	if k := createAPIKey(t, ts.URL, m["access_token"].(string), nil); k["ttl"] != float64(300) {
		t.Errorf("api key ttl %v, want 300", k["ttl"])
	}
}

func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sim.yaml")
	if err := os.WriteFile(path, []byte(fullConfigYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := apicsim.LoadConfigFile(path)
	if err != nil {
		t.Fatalf("LoadConfigFile: %v", err)
	}
	if cfg.TokenTTL != time.Hour || len(cfg.Users) != 2 {
		t.Errorf("LoadConfigFile did not read the file: ttl %v, %d users", cfg.TokenTTL, len(cfg.Users))
	}
	if _, err := apicsim.LoadConfigFile(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("LoadConfigFile of a missing file: no error")
	}
}
