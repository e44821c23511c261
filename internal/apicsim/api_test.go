package apicsim_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

func TestGetMe(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())

	m := get(t, s.URL+"/api/me", tok).JSON(t)
	want := map[string]any{
		"type": "me", "api_version": "2.0.0", "username": "developer", "name": "developer",
		"identity_provider": "default-idp-2", "email": "developer@example.com", "first_name": "API",
		"last_name": "Developer", "state": "enabled", "force_password_change": false,
		"last_login_at": "2026-03-01T12:00:00Z", "url": s.URL + "/api/me",
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("/api/me = %v\nwant %v", m, want)
	}

	r := get(t, s.URL+"/api/me?fields=name", tok)
	wantStatus(t, r, 200)
	if got := r.JSON(t); !reflect.DeepEqual(got, map[string]any{"name": "developer"}) {
		t.Errorf("/api/me?fields=name = %v, want only name", got)
	}
	got := get(t, s.URL+"/api/me?fields=name,%20username,nosuch", tok).JSON(t)
	if !reflect.DeepEqual(got, map[string]any{"name": "developer", "username": "developer"}) {
		t.Errorf("/api/me?fields=name,username,nosuch = %v", got)
	}
	wantError(t, call(t, http.MethodDelete, s.URL+"/api/me", tok, nil), 405, "DELETE")
}

func TestUpdateMe(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	put := func(body, ct string) response {
		return call(t, http.MethodPut, s.URL+"/api/me", tok, []byte(body), "Content-Type", ct)
	}
	r := put(`{"email":"dev@example.org","first_name":"Ada","last_name":"Lovelace","name":"ignored","type":"me"}`, "application/json")
	wantStatus(t, r, http.StatusOK)
	if m := r.JSON(t); m["email"] != "dev@example.org" || m["first_name"] != "Ada" || m["name"] != "developer" {
		t.Errorf("PUT /me answered %v", m)
	}
	if m := get(t, s.URL+"/api/me", tok).JSON(t); m["last_name"] != "Lovelace" {
		t.Errorf("GET /me after PUT: %v", m)
	}
	wantStatus(t, put("last_name: Byron\n", "application/yaml"), http.StatusOK)
	wantError(t, put(`{"realm":"provider/x"}`, "application/json"), 400, "realm")
	wantError(t, put(`{"username":"someone-else"}`, "application/json"), 400, "username cannot be changed")
	wantError(t, put(`{"state":"paused"}`, "application/json"), 400, "state must be one of enabled, disabled")
	wantError(t, put(`{"email":7}`, "application/json"), 400, "email must be a string")
	narrow := login(t, s.URL, with(devGrant(), "scope", "my:view"))
	wantError(t, call(t, http.MethodPut, s.URL+"/api/me", narrow, []byte(`{}`), "Content-Type", "application/json"), 403, "my:manage")
}

func TestListOrgs(t *testing.T) {
	s := start(t)
	for _, tc := range []struct {
		name    string
		grant   map[string]string
		org     string
		orgType string
	}{
		{"developer sees its provider org", devGrant(), "localtest", "provider"},
		{"admin sees the admin org", adminGrant(), "admin", "admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := get(t, s.URL+"/api/orgs", login(t, s.URL, tc.grant))
			wantStatus(t, r, 200)
			var body struct {
				Total   int              `json:"total_results"`
				Results []map[string]any `json:"results"`
			}
			if err := json.Unmarshal(r.Body, &body); err != nil {
				t.Fatal(err)
			}
			if body.Total != 1 || len(body.Results) != 1 {
				t.Fatalf("total_results %d, %d results, want 1: %s", body.Total, len(body.Results), r.Body)
			}
			o := body.Results[0]
			if o["type"] != "org" || o["name"] != tc.org || o["org_type"] != tc.orgType || o["url"] != s.URL+"/api/orgs/"+o["id"].(string) {
				t.Errorf("org %v, want %s of org_type %s", o, tc.org, tc.orgType)
			}
		})
	}
}

func TestCloudOrgsNeedAdmin(t *testing.T) {
	s := start(t)
	r := get(t, s.URL+"/api/cloud/orgs", login(t, s.URL, adminGrant()))
	wantStatus(t, r, 200)
	if m := r.JSON(t); m["total_results"] != float64(2) {
		t.Errorf("total_results %v, want 2 (admin and localtest)", m["total_results"])
	}
	wantError(t, get(t, s.URL+"/api/cloud/orgs", login(t, s.URL, devGrant())), 403, "Cloud Manager")
	wantError(t, get(t, s.URL+"/api/cloud/orgs", ""), 401, "")
}

func TestScopeIsChecked(t *testing.T) {
	s := start(t, func(c *apicsim.Config) {
		c.Registrations = append(c.Registrations, apicsim.Registration{Name: "narrow", ClientID: "narrow", ClientSecret: "narrow-secret", Scopes: []string{"my:view"}})
	})
	tok := login(t, s.URL, with(devGrant(), "client_id", "narrow", "client_secret", "narrow-secret"))
	wantStatus(t, get(t, s.URL+"/api/orgs", tok), 200)
	wantStatus(t, get(t, s.URL+"/api/me", tok), 200)
	wantError(t, get(t, s.URL+"/api/orgs/localtest", tok), 403, "org:view")
	wantError(t, call(t, http.MethodPost, s.URL+"/api/me/sign-out", tok, nil), 403, "my:manage")
	wantError(t, tokenReq(t, s.URL, with(devGrant(), "client_id", "narrow", "client_secret", "narrow-secret", "scope", "org:view")), 400, "org:view")
}

func TestIdentityProviderListsNeedNoToken(t *testing.T) {
	s := start(t)
	for _, tc := range []struct {
		path, name, title, realm string
	}{
		{"/api/cloud/admin/identity-providers", "default-idp-1", "Cloud Manager User Registry", "admin/default-idp-1"},
		{"/api/cloud/provider/identity-providers", "default-idp-2", "API Manager User Registry", "provider/default-idp-2"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := get(t, s.URL+tc.path, "")
			wantStatus(t, r, 200)
			want := map[string]any{
				"total_results": float64(1),
				"results": []any{map[string]any{
					"name": tc.name, "title": tc.title,
					"default": true, "registry_type": "lur", "user_managed": true, "realm": tc.realm,
				}},
			}
			if got := r.JSON(t); !reflect.DeepEqual(got, want) {
				t.Errorf("got %v\nwant %v", got, want)
			}
			wantError(t, send(t, nil, http.MethodPost, s.URL+tc.path, nil), 405, "")
		})
	}
}

const registrationYAML = `type: registration
api_version: 2.0.0
name: ci-pipeline
title: CI pipeline
summary: made by a test
state: enabled
client_type: toolkit
client_id: ci-id
client_secret: ci-secret
scopes:
  - my:view
  - org:view
`

func TestRegistrations(t *testing.T) {
	s := start(t)
	adm := login(t, s.URL, adminGrant())
	dev := login(t, s.URL, devGrant())
	post := func(token, body, ct string) response {
		return call(t, http.MethodPost, s.URL+"/api/cloud/registrations", token, []byte(body), "Content-Type", ct)
	}

	t.Run("list masks secrets", func(t *testing.T) {
		r := get(t, s.URL+"/api/cloud/registrations", adm)
		wantStatus(t, r, 200)
		m := r.JSON(t)
		res := m["results"].([]any)
		if m["total_results"] != float64(1) || len(res) != 1 {
			t.Fatalf("want the one built-in registration: %s", r.Body)
		}
		reg := res[0].(map[string]any)
		if reg["client_id"] != apicsim.DefaultClientID || reg["client_secret"] != "********" {
			t.Errorf("registration %v, want client_id %s and a masked secret", reg, apicsim.DefaultClientID)
		}
	})

	t.Run("create from YAML", func(t *testing.T) {
		r := post(adm, registrationYAML, "application/yaml")
		wantStatus(t, r, http.StatusCreated)
		m := r.JSON(t)
		for k, v := range map[string]any{
			"type": "registration", "name": "ci-pipeline", "title": "CI pipeline", "state": "enabled",
			"client_type": "toolkit", "client_id": "ci-id", "client_secret": "********",
		} {
			if m[k] != v {
				t.Errorf("%s = %v, want %v", k, m[k], v)
			}
		}
		if id, _ := m["id"].(string); id == "" || m["url"] != s.URL+"/api/cloud/registrations/"+id {
			t.Errorf("id %v url %v", m["id"], m["url"])
		}
		// The new client can log in at once, with its own scopes.
		tokResp := loginResp(t, s.URL, with(devGrant(), "client_id", "ci-id", "client_secret", "ci-secret"))
		_, c := decodeJWT(t, tokResp["access_token"].(string))
		if c["aud"] != "/api/cloud/registrations/"+m["id"].(string) {
			t.Errorf("aud %v, want the new registration", c["aud"])
		}
		if got := c["scopes"].([]any); len(got) != 2 || got[0] != "my:view" || got[1] != "org:view" {
			t.Errorf("scopes %v, want [my:view org:view]", got)
		}
		wantError(t, tokenReq(t, s.URL, with(devGrant(), "client_id", "ci-id", "client_secret", "wrong")), 401, "client")
	})

	t.Run("duplicate name", func(t *testing.T) {
		wantError(t, post(adm, "name: ci-pipeline\nclient_id: another\nclient_secret: x\n", "application/yaml"), 409, "ci-pipeline")
	})
	t.Run("duplicate client id", func(t *testing.T) {
		wantError(t, post(adm, `{"name":"fresh","client_id":"ci-id","client_secret":"x"}`, "application/json"), 409, "")
	})
	t.Run("developer token", func(t *testing.T) {
		wantError(t, post(dev, registrationYAML, "application/yaml"), 403, "")
	})
	t.Run("unknown field", func(t *testing.T) {
		wantError(t, post(adm, "name: x\ncolour: red\n", "application/yaml"), 400, "colour")
	})
	t.Run("no name", func(t *testing.T) {
		wantError(t, post(adm, "title: x\n", "application/yaml"), 400, "missing required properties: name")
	})
	t.Run("bad state", func(t *testing.T) {
		wantError(t, post(adm, "name: x\nstate: paused\n", "application/yaml"), 400, "paused")
	})
	t.Run("unsupported content type", func(t *testing.T) {
		wantError(t, post(adm, "name: x\n", "application/xml"), 415, "application/xml")
	})

	t.Run("generated secret is shown once", func(t *testing.T) {
		r := post(adm, `{"name":"generated"}`, "application/json")
		wantStatus(t, r, http.StatusCreated)
		m := r.JSON(t)
		id, _ := m["client_id"].(string)
		secret, _ := m["client_secret"].(string)
		if id == "" || secret == "" || secret == "********" {
			t.Fatalf("generated client %q secret %q, want both shown", id, secret)
		}
		login(t, s.URL, with(adminGrant(), "client_id", id, "client_secret", secret))
	})

	t.Run("disabled registration", func(t *testing.T) {
		wantStatus(t, post(adm, "name: parked\nstate: disabled\nclient_id: parked\nclient_secret: parked-secret\n", "application/yaml"), http.StatusCreated)
		wantError(t, tokenReq(t, s.URL, with(devGrant(), "client_id", "parked", "client_secret", "parked-secret")), 401, "disabled")
	})

	t.Run("list has them all", func(t *testing.T) {
		m := get(t, s.URL+"/api/cloud/registrations", adm).JSON(t)
		var names []string
		for _, r := range m["results"].([]any) {
			reg := r.(map[string]any)
			names = append(names, reg["name"].(string))
			if reg["client_secret"] != "********" {
				t.Errorf("list shows secret of %v", reg["name"])
			}
		}
		if want := []string{"apic-auth-proxy", "ci-pipeline", "generated", "parked"}; !slices.Equal(names, want) {
			t.Errorf("registrations %v, want %v", names, want)
		}
		wantError(t, get(t, s.URL+"/api/cloud/registrations", dev), 403, "")
	})
}

func TestUnknownPath(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	for _, p := range []string{"/api/nope", "/api/catalogs/localtest/sandbox/unpublish", "/api/catalogs//sandbox/publish", "/api", "/"} {
		t.Run(p, func(t *testing.T) {
			wantError(t, get(t, s.URL+p, tok), 404, "is not a valid API path")
		})
	}
	wantError(t, get(t, s.URL+"/_sim/nope", ""), 404, "no simulator control")
}

func TestAPICallsCountedByStatus(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	get(t, s.URL+"/api/me", tok)
	get(t, s.URL+"/api/orgs", tok)
	get(t, s.URL+"/api/me", "")
	get(t, s.URL+"/api/cloud/orgs", tok)
	get(t, s.URL+"/api/nope", tok)
	call(t, http.MethodPost, s.URL+"/api/me/sign-out", tok, nil)
	send(t, nil, http.MethodGet, s.URL+"/_sim/stats", nil) // controls are not counted

	want := map[int]int{200: 2, 401: 1, 403: 1, 404: 1, 204: 1}
	if got := s.Stats().API; !maps.Equal(got, want) {
		t.Errorf("Stats().API = %v, want %v", got, want)
	}
	if s.APICalls(0) != 6 || s.APICalls(200) != 2 || s.APICalls(500) != 0 {
		t.Errorf("APICalls(0/200/500) = %d/%d/%d, want 6/2/0", s.APICalls(0), s.APICalls(200), s.APICalls(500))
	}
	if n := s.TokenRequests("", ""); n != 1 {
		t.Errorf("TokenRequests = %d, want 1 (API calls are not token requests)", n)
	}
}
