package apicsim_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"go.yaml.in/yaml/v3"
)

// jsonCall makes a call with a JSON body and the token.
func jsonCall(t *testing.T, method, url, token, body string) response {
	t.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	return call(t, method, url, token, b, "Content-Type", "application/json")
}

// results returns a list answer's results, checking total_results.
func results(t *testing.T, r response, total int) []map[string]any {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	m := r.JSON(t)
	if m["total_results"] != float64(total) {
		t.Fatalf("total_results %v, want %d: %s", m["total_results"], total, r.Body)
	}
	var out []map[string]any
	for _, it := range m["results"].([]any) {
		out = append(out, it.(map[string]any))
	}
	return out
}

// names returns each result's name.
func names(res []map[string]any) []string {
	var out []string
	for _, r := range res {
		out = append(out, fmt.Sprint(r["name"]))
	}
	return out
}

// resolves checks that a url field answers the same resource.
func resolves(t *testing.T, token string, obj map[string]any) {
	t.Helper()
	u, _ := obj["url"].(string)
	r := get(t, u, token)
	wantStatus(t, r, http.StatusOK)
	if got := r.JSON(t); got["id"] != obj["id"] || (obj["type"] != nil && got["type"] != obj["type"]) {
		t.Errorf("%s answered %v %v, want %v %v", u, got["type"], got["id"], obj["type"], obj["id"])
	}
}

func TestCatalogs(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	org := get(t, s.URL+"/api/orgs/localtest", tok).JSON(t)
	resolves(t, tok, org)

	cats := results(t, get(t, s.URL+"/api/orgs/localtest/catalogs", tok), 1)
	if cats[0]["name"] != "sandbox" || cats[0]["org_url"] != org["url"] {
		t.Fatalf("catalogs %v, want the sandbox of %s", cats, org["url"])
	}
	resolves(t, tok, cats[0])

	r := jsonCall(t, http.MethodPost, s.URL+"/api/orgs/localtest/catalogs", tok, `{"name":"prod","title":"Production","summary":"live","type":"catalog"}`)
	wantStatus(t, r, http.StatusCreated)
	prod := r.JSON(t)
	resolves(t, tok, prod)
	wantError(t, jsonCall(t, http.MethodPost, s.URL+"/api/orgs/localtest/catalogs", tok, `{"name":"prod"}`), 409, "prod")
	wantError(t, jsonCall(t, http.MethodPost, s.URL+"/api/orgs/localtest/catalogs", tok, `{"title":"x"}`), 400, "name")
	wantError(t, jsonCall(t, http.MethodPost, s.URL+"/api/orgs/localtest/catalogs", tok, `{"name":"x","colour":"red"}`), 400, "colour")
	wantError(t, jsonCall(t, http.MethodPost, s.URL+"/api/orgs/localtest/catalogs", tok, `{"name":"Not A Name"}`), 400, "name")

	r = jsonCall(t, http.MethodPatch, s.URL+"/api/catalogs/localtest/prod", tok, `{"title":"Live"}`)
	wantStatus(t, r, http.StatusOK)
	if m := r.JSON(t); m["title"] != "Live" || m["id"] != prod["id"] {
		t.Errorf("PATCH answered %v", m)
	}
	if got := names(results(t, get(t, s.URL+"/api/orgs/localtest/catalogs?limit=1&offset=1", tok), 2)); !slices.Equal(got, []string{"prod"}) {
		t.Errorf("limit=1&offset=1 gave %v, want [prod]", got)
	}
	wantError(t, get(t, s.URL+"/api/orgs/localtest/catalogs?limit=-1", tok), 400, "limit")
	wantStatus(t, jsonCall(t, http.MethodDelete, s.URL+"/api/catalogs/localtest/prod", tok, ""), http.StatusOK)
	wantError(t, get(t, s.URL+"/api/catalogs/localtest/prod", tok), 404, "prod")

	t.Run("an org the user is not a member of is not found", func(t *testing.T) {
		wantError(t, get(t, s.URL+"/api/orgs/admin", tok), 404, "admin")
		adm := login(t, s.URL, adminGrant())
		wantError(t, get(t, s.URL+"/api/orgs/localtest/catalogs", adm), 404, "localtest")
	})
	t.Run("scopes", func(t *testing.T) {
		view := login(t, s.URL, with(devGrant(), "scope", "child:view"))
		wantStatus(t, get(t, s.URL+"/api/orgs/localtest/catalogs", view), http.StatusOK)
		wantError(t, jsonCall(t, http.MethodPost, s.URL+"/api/orgs/localtest/catalogs", view, `{"name":"x"}`), 403, "child:create")
		wantError(t, jsonCall(t, http.MethodDelete, s.URL+"/api/catalogs/localtest/sandbox", view, ""), 403, "child:manage")
	})
}

const draftAPIYAML = `swagger: "2.0"
info:
  title: Orders
  x-ibm-name: orders
  version: 1.0.0
basePath: /orders
paths: {}
`

func TestDraftAPIs(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	base := s.URL + "/api/orgs/localtest/drafts/draft-apis"

	// The document's example sends the bare OpenAPI document, which its
	// schema refuses; the openapi part of a multipart form holds it.
	wantError(t, call(t, http.MethodPost, base, tok, []byte(draftAPIYAML), "Content-Type", "application/yaml"), 400, "draft_api")
	form, ct := openapiForm(t, draftAPIYAML)
	r := call(t, http.MethodPost, base, tok, form, "Content-Type", ct)
	wantStatus(t, r, http.StatusCreated)
	d := r.JSON(t)
	if d["type"] != "draft_api" || d["name"] != "orders" || d["version"] != "1.0.0" || d["title"] != "Orders" || d["oai_version"] != "openapi2" {
		t.Fatalf("created %v", d)
	}
	resolves(t, tok, d)
	// The schema's form, in JSON: a second version.
	r = jsonCall(t, http.MethodPost, base, tok, `{"draft_api":{"openapi":"3.0.0","info":{"title":"Orders","x-ibm-name":"orders","version":"2.0.0"},"paths":{}},"summary":"v2"}`)
	wantStatus(t, r, http.StatusCreated)
	v2 := r.JSON(t)
	if v2["oai_version"] != "openapi3" || v2["summary"] != "v2" {
		t.Errorf("created %v", v2)
	}
	wantError(t, call(t, http.MethodPost, base, tok, form, "Content-Type", ct), 409, "orders")
	wantError(t, jsonCall(t, http.MethodPost, base, tok, `{"draft_api":{"swagger":"2.0","info":{"title":"x"}}}`), 400, "info.version")
	wantError(t, jsonCall(t, http.MethodPost, base, tok, `{"draft_api":{"swagger":"2.0","info":{"title":"x","version":"1"}},"gateway_type":"nginx"}`), 400, "gateway_type")
	wantError(t, jsonCall(t, http.MethodPost, base, tok, `{"title":"no document"}`), 400, "draft_api")

	results(t, get(t, base, tok), 2)
	if got := results(t, get(t, base+"/orders", tok), 2); got[0]["version"] != "1.0.0" {
		t.Errorf("by name: %v", got)
	}
	wantStatus(t, get(t, base+"/orders/2.0.0", tok), http.StatusOK)
	r = jsonCall(t, http.MethodPatch, base+"/"+d["id"].(string), tok, `{"title":"Orders v1"}`)
	wantStatus(t, r, http.StatusOK)
	if m := r.JSON(t); m["title"] != "Orders v1" || m["version"] != "1.0.0" {
		t.Errorf("PATCH answered %v", m)
	}
	wantStatus(t, jsonCall(t, http.MethodDelete, base+"/orders/2.0.0", tok, ""), http.StatusOK)
	wantStatus(t, jsonCall(t, http.MethodDelete, base+"/"+d["id"].(string), tok, ""), http.StatusOK)
	results(t, get(t, base, tok), 0)
	wantError(t, get(t, base+"/orders", tok), 404, "orders")

	t.Run("multipart openapi part", func(t *testing.T) {
		body, size, ct := apicsim.PublishUpload("stock", "1.0.0", nil, 0)
		data, _ := io.ReadAll(body)
		if int64(len(data)) != size {
			t.Fatalf("PublishUpload size %d, body %d bytes", size, len(data))
		}
		// A publish upload has a product part, which a draft API does not take.
		wantError(t, call(t, http.MethodPost, base, tok, data, "Content-Type", ct), 400, "product")
	})
	t.Run("clear by name answers no content", func(t *testing.T) {
		wantStatus(t, call(t, http.MethodPost, base, tok, form, "Content-Type", ct), http.StatusCreated)
		wantStatus(t, jsonCall(t, http.MethodDelete, base+"/orders", tok, ""), http.StatusNoContent)
	})
	t.Run("scopes", func(t *testing.T) {
		view := login(t, s.URL, with(devGrant(), "scope", "api-drafts:view"))
		wantStatus(t, get(t, base, view), http.StatusOK)
		wantError(t, call(t, http.MethodPost, base, view, form, "Content-Type", ct), 403, "api-drafts:edit")
	})
}

// openapiForm is a multipart form of one openapi part holding doc.
func openapiForm(t *testing.T, doc string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	w, err := mw.CreateFormFile("openapi", "api.yaml")
	if err == nil {
		_, err = io.WriteString(w, doc)
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

func TestDraftProducts(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	base := s.URL + "/api/orgs/localtest/drafts/draft-products"
	const product = `{"product":"1.0.0","info":{"name":"shop","title":"Shop","version":"1.0.0"},"apis":{"orders":{"name":"orders:1.0.0"}},"plans":{"default-plan":{"title":"Default"}}}`
	wantError(t, jsonCall(t, http.MethodPost, base, tok, product), 400, "draft_product")
	r := jsonCall(t, http.MethodPost, base, tok, `{"draft_product":`+product+`}`)
	wantStatus(t, r, http.StatusCreated)
	d := r.JSON(t)
	if d["type"] != "draft_product" || d["name"] != "shop" || d["version"] != "1.0.0" {
		t.Fatalf("created %v", d)
	}
	resolves(t, tok, d)
	wantError(t, jsonCall(t, http.MethodPost, base, tok, `{"draft_product":{"product":"1.0.0","info":{"version":"1.0.0"}}}`), 400, "info.name")
	wantError(t, call(t, http.MethodPost, base, tok, []byte("product: 1.0.0\n"), "Content-Type", "application/yaml"), 415, "application/yaml")
	results(t, get(t, base+"/shop", tok), 1)
	wantStatus(t, jsonCall(t, http.MethodDelete, base+"/shop/1.0.0", tok, ""), http.StatusOK)
	results(t, get(t, base, tok), 0)
}

func TestPublish(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	url := s.URL + "/api/catalogs/localtest/sandbox/publish"
	pad := bytes.Repeat([]byte{0xa5}, 3<<20)
	body, size, ct := apicsim.PublishUpload("shop", "1.0.0", bytes.NewReader(pad), int64(len(pad)))
	data, _ := io.ReadAll(body)
	if int64(len(data)) != size {
		t.Fatalf("PublishUpload size %d, body %d bytes", size, len(data))
	}
	sum := sha256.Sum256(data)

	r := call(t, http.MethodPost, url, tok, data, "Content-Type", ct)
	wantStatus(t, r, http.StatusCreated)
	if r.Header.Get(apicsim.ReceivedBytesHeader) != strconv.Itoa(len(data)) || r.Header.Get(apicsim.ReceivedSHA256) != hex.EncodeToString(sum[:]) {
		t.Errorf("received %s bytes, SHA-256 %s; sent %d, %x", r.Header.Get(apicsim.ReceivedBytesHeader), r.Header.Get(apicsim.ReceivedSHA256), len(data), sum)
	}
	p := r.JSON(t)
	if p["type"] != "product" || p["name"] != "shop" || p["version"] != "1.0.0" || p["state"] != "published" {
		t.Fatalf("publish answered %v", p)
	}
	resolves(t, tok, p)
	apis := p["apis"].([]any)
	if len(apis) != 1 || apis[0].(map[string]any)["name"] != "shop-api" {
		t.Fatalf("product apis %v", apis)
	}
	resolves(t, tok, apis[0].(map[string]any))
	plans := p["plans"].([]any)
	if len(plans) != 1 || plans[0].(map[string]any)["name"] != "default-plan" || len(plans[0].(map[string]any)["apis"].([]any)) != 1 {
		t.Errorf("plans %v", plans)
	}

	prods := results(t, get(t, s.URL+"/api/catalogs/localtest/sandbox/products", tok), 1)
	if prods[0]["id"] != p["id"] {
		t.Errorf("products %v", prods)
	}
	results(t, get(t, s.URL+"/api/catalogs/localtest/sandbox/products/shop", tok), 1)
	wantStatus(t, get(t, s.URL+"/api/catalogs/localtest/sandbox/products/shop/1.0.0", tok), http.StatusOK)
	api := results(t, get(t, s.URL+"/api/catalogs/localtest/sandbox/apis", tok), 1)[0]
	if api["name"] != "shop-api" || api["base_paths"].([]any)[0] != "/shop" || len(api["product_urls"].([]any)) != 1 {
		t.Errorf("api %v", api)
	}
	wantStatus(t, get(t, s.URL+"/api/catalogs/localtest/sandbox/apis/shop-api/1.0.0", tok), http.StatusOK)
	if c := get(t, s.URL+"/api/catalogs/localtest/sandbox", tok).JSON(t); c["num_products"] != float64(1) || c["num_apis"] != float64(1) {
		t.Errorf("catalog counts %v %v", c["num_products"], c["num_apis"])
	}

	t.Run("publishing again replaces the version", func(t *testing.T) {
		body, _, ct := apicsim.PublishUpload("shop", "1.0.0", nil, 0)
		data, _ := io.ReadAll(body)
		r := call(t, http.MethodPost, url, tok, data, "Content-Type", ct)
		wantStatus(t, r, http.StatusCreated)
		if r.JSON(t)["id"] != p["id"] {
			t.Errorf("republished with another id")
		}
		results(t, get(t, s.URL+"/api/catalogs/localtest/sandbox/products", tok), 1)
	})
	t.Run("the epilogue is counted", func(t *testing.T) {
		withEpilogue := append(slices.Clip(data), "epilogue"...)
		r := call(t, http.MethodPost, url, tok, withEpilogue, "Content-Type", ct)
		wantStatus(t, r, http.StatusCreated)
		if r.Header.Get(apicsim.ReceivedBytesHeader) != strconv.Itoa(len(withEpilogue)) {
			t.Errorf("received %s bytes, sent %d", r.Header.Get(apicsim.ReceivedBytesHeader), len(withEpilogue))
		}
	})
	t.Run("errors", func(t *testing.T) {
		wantError(t, jsonCall(t, http.MethodPost, url, tok, `{"product":"x"}`), 400, "multipart/form-data")
		wantError(t, call(t, http.MethodPost, url, tok, data, "Content-Type", "multipart/form-data"), 400, "boundary")
		wantError(t, call(t, http.MethodPost, url, tok, data[:len(data)/2], "Content-Type", ct), 400, "malformed multipart")
		wantError(t, call(t, http.MethodPost, url, "", data, "Content-Type", ct), 401, "")
		wantError(t, call(t, http.MethodGet, url, tok, nil), 405, "")
		wantError(t, call(t, http.MethodPost, s.URL+"/api/catalogs/localtest/nope/publish", tok, data, "Content-Type", ct), 404, "nope")
		bad := strings.Replace(string(data), "$ref: shop-api.yaml", "$ref: other.yaml", 1)
		wantError(t, call(t, http.MethodPost, url, tok, []byte(bad), "Content-Type", ct), 400, "other.yaml")
		undeclared := strings.Replace(string(data), `name="wsdl"`, `name="extra"`, 1)
		wantError(t, call(t, http.MethodPost, url, tok, []byte(undeclared), "Content-Type", ct), 400, `"extra"`)
		stage := login(t, s.URL, with(devGrant(), "scope", "product:view product:stage"))
		wantError(t, call(t, http.MethodPost, url, stage, data, "Content-Type", ct), 403, "product:manage")
	})
	t.Run("delete", func(t *testing.T) {
		wantStatus(t, jsonCall(t, http.MethodDelete, s.URL+"/api/catalogs/localtest/sandbox/products/"+p["id"].(string), tok, ""), http.StatusOK)
		results(t, get(t, s.URL+"/api/catalogs/localtest/sandbox/products", tok), 0)
		results(t, get(t, s.URL+"/api/catalogs/localtest/sandbox/apis", tok), 0)
	})
}

func TestAPIKeys(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	base := s.URL + "/api/cloud/api-keys"
	// The document's own example.
	r := jsonCall(t, http.MethodPost, base, tok, `{"client_type":"toolkit","description":"acme api key","name":"acme-apikey","token_exp":3719,"ttl":4150}`)
	wantStatus(t, r, http.StatusCreated)
	k := r.JSON(t)
	if k["name"] != "acme-apikey" || k["ttl"] != float64(4150) || k["realm"] != apicsim.DefaultProviderRealm || k["api_key"] == nil || k["expires_at"] == nil {
		t.Fatalf("created %v", k)
	}
	multi := createAPIKey(t, s.URL, tok, []byte(`{"multiple_use":true,"client_type":"atm"}`))
	wantError(t, jsonCall(t, http.MethodPost, base, tok, ""), 400, "client_type, description")
	wantError(t, jsonCall(t, http.MethodPost, base, tok, `{"client_type":"robot","description":"x"}`), 400, "client_type must be one of toolkit, atm, ai")

	list := results(t, get(t, base, tok), 2)
	for _, it := range list {
		if it["api_key"] != nil {
			t.Errorf("the list shows a key's secret: %v", it)
		}
	}
	got := get(t, base+"/acme-apikey", tok).JSON(t)
	if got["id"] != k["id"] || got["api_key"] != nil {
		t.Errorf("GET by name answered %v", got)
	}
	resolves(t, tok, k)
	results(t, get(t, base, login(t, s.URL, adminGrant())), 0) // another user's keys are not listed

	// A single-use key leaves the list when it is used.
	loginResp(t, s.URL, apiKeyGrant(k["api_key"].(string)))
	if got := results(t, get(t, base, tok), 1); got[0]["id"] != multi["id"] {
		t.Errorf("after use: %v", got)
	}
	wantStatus(t, jsonCall(t, http.MethodDelete, base+"/"+multi["id"].(string), tok, ""), http.StatusOK)
	wantError(t, tokenReq(t, s.URL, apiKeyGrant(multi["api_key"].(string))), 401, "Invalid API key")
	wantError(t, get(t, base+"/"+multi["id"].(string), tok), 404, "")
	view := login(t, s.URL, with(devGrant(), "scope", "my:view"))
	wantError(t, jsonCall(t, http.MethodPost, base, view, `{"client_type":"toolkit","description":"x"}`), 403, "my:manage")
}

func TestRegistrationCRUD(t *testing.T) {
	s := start(t)
	adm := login(t, s.URL, adminGrant())
	base := s.URL + "/api/cloud/registrations"
	r := call(t, http.MethodPost, base, adm, []byte(registrationYAML+"metadata:\n  team: ci\n"), "Content-Type", "application/yaml")
	wantStatus(t, r, http.StatusCreated)
	reg := r.JSON(t)
	resolves(t, adm, reg)
	if got := get(t, base+"/ci-pipeline", adm).JSON(t); got["id"] != reg["id"] || got["metadata"].(map[string]any)["team"] != "ci" {
		t.Errorf("GET by name answered %v", got)
	}
	wantError(t, call(t, http.MethodPost, base, adm, []byte("name: x\nclient_type: robot\n"), "Content-Type", "application/yaml"), 400, "client_type")
	r = jsonCall(t, http.MethodPatch, base+"/ci-pipeline", adm, `{"title":"CI","scopes":["my:view"]}`)
	wantStatus(t, r, http.StatusOK)
	if m := r.JSON(t); m["title"] != "CI" || fmt.Sprint(m["scopes"]) != "[my:view]" || m["client_secret"] != "********" {
		t.Errorf("PATCH answered %v", m)
	}
	wantError(t, jsonCall(t, http.MethodPatch, base+"/ci-pipeline", adm, `{"client_id":"other"}`), 400, "client_id")
	wantStatus(t, jsonCall(t, http.MethodDelete, base+"/"+reg["id"].(string), adm, ""), http.StatusOK)
	wantError(t, get(t, base+"/ci-pipeline", adm), 404, "ci-pipeline")
	wantError(t, tokenReq(t, s.URL, with(devGrant(), "client_id", "ci-id", "client_secret", "ci-secret")), 401, "client")
}

func TestToolkitCredentials(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	m := get(t, s.URL+"/api/cloud/settings/toolkit-credentials", tok).JSON(t)
	tk, _ := m["toolkit"].(map[string]any)
	if m["cloud_id"] == "" || tk["endpoint"] != s.URL+"/api" || tk["client_id"] != apicsim.DefaultClientID || tk["client_secret"] != apicsim.DefaultClientSecret {
		t.Errorf("toolkit credentials %v", m)
	}
	wantError(t, get(t, s.URL+"/api/cloud/settings/toolkit-credentials", ""), 401, "")
}

func TestAnswersInYAML(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	for _, tc := range []struct {
		path, accept string
		yaml         bool
	}{
		{"/api/me", "application/yaml", true},
		{"/api/me", "application/json, application/yaml;q=0.5", false},
		{"/api/me", "application/yaml, application/json;q=0.9", true},
		{"/api/me", "*/*", false},
		{"/api/nope", "application/yaml", true},
		{"/api/orgs?fields=name&limit=1", "application/yaml", true},
	} {
		r := call(t, http.MethodGet, s.URL+tc.path, tok, nil, "Accept", tc.accept)
		want := "application/json"
		if tc.yaml {
			want = "application/yaml"
		}
		if ct := r.Header.Get("Content-Type"); ct != want {
			t.Errorf("%s with Accept %q: Content-Type %q, want %q", tc.path, tc.accept, ct, want)
			continue
		}
		var v map[string]any
		if err := yaml.Unmarshal(r.Body, &v); err != nil || len(v) == 0 {
			t.Errorf("%s: %v: %s", tc.path, err, r.Body)
		}
	}
	r := call(t, http.MethodGet, s.URL+"/api/orgs?fields=name", tok, nil, "Accept", "application/yaml")
	if want := "results:\n    - name: localtest\ntotal_results: 1\n"; string(r.Body) != want {
		t.Errorf("YAML list %q, want %q", r.Body, want)
	}
}
