package conformance_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/conformance"
)

// driver makes calls to a simulator served through a checker.
type driver struct {
	t     *testing.T
	url   string
	token string
}

// do makes a call and returns the status and the body decoded as JSON (nil
// when it is not JSON).
func (d *driver) do(method, path, ct, body string, hdr ...string) (int, map[string]any) {
	d.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, d.url+path, rd)
	if err != nil {
		d.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	return resp.StatusCode, m
}

// want makes a call that must answer status.
func (d *driver) want(status int, method, path, ct, body string, hdr ...string) map[string]any {
	d.t.Helper()
	got, m := d.do(method, path, ct, body, hdr...)
	if got != status {
		d.t.Fatalf("%s %s: status %d, want %d: %v", method, path, got, status, m)
	}
	return m
}

func (d *driver) login(grant string) {
	d.t.Helper()
	d.token = ""
	m := d.want(200, "POST", "/api/token", "application/json", grant)
	d.token = m["access_token"].(string)
}

const (
	jsonCT = "application/json"
	yamlCT = "application/yaml"
)

// indent indents each line of s by two spaces, to nest a YAML document.
func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}

func grant(user, password, realm, extra string) string {
	return `{"grant_type":"password","username":"` + user + `","password":"` + password + `","realm":"` + realm +
		`","client_id":"` + apicsim.DefaultClientID + `","client_secret":"` + apicsim.DefaultClientSecret + `"` + extra + `}`
}

// TestSimulatorConforms drives every operation the fixture restates, with
// successes and refusals, through the checker, and requires every answer
// to validate and every operation to have answered a success.
func TestSimulatorConforms(t *testing.T) {
	c, err := conformance.Load()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := apicsim.New(apicsim.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(c.Wrap(sim))
	defer ts.Close()
	d := &driver{t: t, url: ts.URL}
	dev := grant(apicsim.DefaultProviderUsername, apicsim.DefaultProviderPassword, apicsim.DefaultProviderRealm, "")
	adm := grant(apicsim.DefaultAdminUsername, apicsim.DefaultAdminPassword, apicsim.DefaultAdminRealm, "")

	// No token needed.
	d.want(200, "GET", "/api/cloud/admin/identity-providers", "", "")
	d.want(200, "GET", "/api/cloud/provider/identity-providers?fields=name,realm&limit=1", "", "", "Accept", yamlCT)
	d.want(200, "POST", "/api/token", yamlCT, "grant_type: password\nusername: developer\npassword: Passw0rd!\nrealm: provider/default-idp-2\nclient_id: clientID\nclient_secret: clientPassword\nscope: my:view\n", "Accept", yamlCT)
	d.want(400, "POST", "/api/token", jsonCT, `{"grant_type":"password","nonce":"x"}`)
	d.want(400, "POST", "/api/token", jsonCT, `{"grant_type":"magic"}`, "Accept", yamlCT)
	d.want(401, "POST", "/api/token", jsonCT, grant("developer", "wrong", apicsim.DefaultProviderRealm, ""))
	d.want(401, "GET", "/api/me", "", "")

	d.login(dev)
	d.want(200, "GET", "/api/me", "", "")
	d.want(200, "GET", "/api/me?fields=name,email", "", "", "Accept", yamlCT)
	d.want(200, "PUT", "/api/me", jsonCT, `{"email":"dev@example.org","first_name":"Ada"}`)
	d.want(200, "PUT", "/api/me", yamlCT, "last_name: Lovelace\n")
	d.want(400, "PUT", "/api/me", jsonCT, `{"realm":"x"}`)
	orgs := d.want(200, "GET", "/api/orgs", "", "")
	org := orgs["results"].([]any)[0].(map[string]any)
	d.want(200, "GET", "/api/orgs/localtest", "", "")
	d.want(200, "GET", strings.TrimPrefix(org["url"].(string), ts.URL), "", "")
	d.want(404, "GET", "/api/orgs/nope", "", "")

	d.want(200, "GET", "/api/orgs/localtest/catalogs", "", "")
	d.want(201, "POST", "/api/orgs/localtest/catalogs", yamlCT, "name: prod\ntitle: Production\n")
	d.want(400, "POST", "/api/orgs/localtest/catalogs", jsonCT, `{"name":"x","colour":"red"}`)
	d.want(200, "GET", "/api/catalogs/localtest/prod", "", "")
	d.want(200, "PATCH", "/api/catalogs/localtest/prod", jsonCT, `{"summary":"live"}`)
	d.want(200, "DELETE", "/api/catalogs/localtest/prod", "", "")

	const api = "swagger: \"2.0\"\ninfo:\n  title: Orders\n  x-ibm-name: orders\n  version: 1.0.0\npaths: {}\n"
	d.want(400, "POST", "/api/orgs/localtest/drafts/draft-apis", yamlCT, api)
	const boundary = "b0undary"
	form := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"openapi\"; filename=\"orders.yaml\"\r\n\r\n" + api + "\r\n--" + boundary + "--\r\n"
	formCT := "multipart/form-data; boundary=" + boundary
	da := d.want(201, "POST", "/api/orgs/localtest/drafts/draft-apis", formCT, form)
	d.want(201, "POST", "/api/orgs/localtest/drafts/draft-apis", jsonCT, `{"draft_api":{"openapi":"3.0.3","info":{"title":"Orders","x-ibm-name":"orders","version":"2.0.0"},"paths":{}}}`)
	d.want(400, "POST", "/api/orgs/localtest/drafts/draft-apis", jsonCT, `{"draft_api":{"swagger":"2.0","info":{"title":"x","version":"1"}},"api_type":"soap"}`)
	d.want(200, "GET", "/api/orgs/localtest/drafts/draft-apis?limit=1&offset=1", "", "")
	d.want(200, "GET", "/api/orgs/localtest/drafts/draft-apis/orders", "", "")
	d.want(200, "GET", "/api/orgs/localtest/drafts/draft-apis/"+da["id"].(string), "", "")
	d.want(200, "PATCH", "/api/orgs/localtest/drafts/draft-apis/"+da["id"].(string), jsonCT, `{"summary":"first"}`)
	d.want(200, "GET", "/api/orgs/localtest/drafts/draft-apis/orders/2.0.0", "", "", "Accept", yamlCT)
	d.want(200, "PATCH", "/api/orgs/localtest/drafts/draft-apis/orders/2.0.0", yamlCT, "title: Orders two\n")
	d.want(200, "DELETE", "/api/orgs/localtest/drafts/draft-apis/orders/2.0.0", "", "")
	d.want(200, "DELETE", "/api/orgs/localtest/drafts/draft-apis/"+da["id"].(string), "", "")
	d.want(201, "POST", "/api/orgs/localtest/drafts/draft-apis", yamlCT, "draft_api:\n"+indent(api))
	d.want(204, "DELETE", "/api/orgs/localtest/drafts/draft-apis/orders", "", "")

	const product = `{"product":"1.0.0","info":{"name":"shop","title":"Shop","version":"1.0.0"},"apis":{"orders":{"$ref":"orders.yaml"}}}`
	dp := d.want(201, "POST", "/api/orgs/localtest/drafts/draft-products", jsonCT, `{"draft_product":`+product+`}`)
	d.want(400, "POST", "/api/orgs/localtest/drafts/draft-products", jsonCT, product)
	d.want(201, "POST", "/api/orgs/localtest/drafts/draft-products", jsonCT, `{"draft_product":`+strings.Replace(product, `"version":"1.0.0"`, `"version":"2.0.0"`, 1)+`}`)
	d.want(200, "GET", "/api/orgs/localtest/drafts/draft-products", "", "")
	d.want(200, "GET", "/api/orgs/localtest/drafts/draft-products/shop", "", "")
	d.want(200, "GET", "/api/orgs/localtest/drafts/draft-products/"+dp["id"].(string), "", "")
	d.want(200, "PATCH", "/api/orgs/localtest/drafts/draft-products/"+dp["id"].(string), jsonCT, `{"title":"Shop one"}`)
	d.want(200, "GET", "/api/orgs/localtest/drafts/draft-products/shop/2.0.0", "", "")
	d.want(200, "PATCH", "/api/orgs/localtest/drafts/draft-products/shop/2.0.0", jsonCT, `{"summary":"two"}`)
	d.want(200, "DELETE", "/api/orgs/localtest/drafts/draft-products/shop/2.0.0", "", "")
	d.want(200, "DELETE", "/api/orgs/localtest/drafts/draft-products/"+dp["id"].(string), "", "")
	d.want(201, "POST", "/api/orgs/localtest/drafts/draft-products", jsonCT, `{"draft_product":`+product+`}`)
	d.want(204, "DELETE", "/api/orgs/localtest/drafts/draft-products/shop", "", "")

	body, _, ct := apicsim.PublishUpload("shop", "1.0.0", bytes.NewReader(make([]byte, 4096)), 4096)
	upload, _ := io.ReadAll(body)
	p := d.want(201, "POST", "/api/catalogs/localtest/sandbox/publish", ct, string(upload))
	d.want(400, "POST", "/api/catalogs/localtest/sandbox/publish", ct, strings.Replace(string(upload), `name="wsdl"`, `name="extra"`, 1))
	d.want(200, "GET", "/api/catalogs/localtest/sandbox/products", "", "")
	d.want(200, "GET", "/api/catalogs/localtest/sandbox/products/shop", "", "", "Accept", yamlCT)
	d.want(200, "GET", "/api/catalogs/localtest/sandbox/products/"+p["id"].(string), "", "")
	d.want(200, "GET", "/api/catalogs/localtest/sandbox/products/shop/1.0.0?fields=name,state", "", "")
	apis := d.want(200, "GET", "/api/catalogs/localtest/sandbox/apis", "", "")
	a := apis["results"].([]any)[0].(map[string]any)
	d.want(200, "GET", "/api/catalogs/localtest/sandbox/apis/shop-api", "", "")
	d.want(200, "GET", "/api/catalogs/localtest/sandbox/apis/"+a["id"].(string), "", "")
	d.want(200, "GET", "/api/catalogs/localtest/sandbox/apis/shop-api/1.0.0", "", "")
	d.want(200, "DELETE", "/api/catalogs/localtest/sandbox/products/shop/1.0.0", "", "")
	p = d.want(201, "POST", "/api/catalogs/localtest/sandbox/publish", ct, string(upload))
	d.want(200, "DELETE", "/api/catalogs/localtest/sandbox/products/"+p["id"].(string), "", "")

	k := d.want(201, "POST", "/api/cloud/api-keys", jsonCT, `{"client_type":"toolkit","description":"acme api key","name":"acme-apikey","token_exp":3719,"ttl":4150}`)
	d.want(201, "POST", "/api/cloud/api-keys", yamlCT, "client_type: atm\ndescription: robot\nmultiple_use: true\n")
	d.want(400, "POST", "/api/cloud/api-keys", jsonCT, `{"client_type":"robot","description":"x"}`)
	d.want(200, "GET", "/api/cloud/api-keys", "", "")
	d.want(200, "GET", "/api/cloud/api-keys/"+k["id"].(string), "", "")
	d.want(200, "DELETE", "/api/cloud/api-keys/acme-apikey", "", "")
	d.want(200, "GET", "/api/cloud/settings/toolkit-credentials", "", "", "Accept", yamlCT)
	d.want(403, "GET", "/api/cloud/registrations", "", "")

	d.login(adm)
	d.want(200, "GET", "/api/cloud/orgs", "", "")
	reg := d.want(201, "POST", "/api/cloud/registrations", yamlCT, "name: ci\nclient_type: toolkit\nscopes: [my:view]\nmetadata: {team: ci}\n")
	d.want(400, "POST", "/api/cloud/registrations", jsonCT, `{"name":"x","client_type":"robot"}`)
	d.want(200, "GET", "/api/cloud/registrations", "", "")
	d.want(200, "GET", "/api/cloud/registrations/ci", "", "")
	d.want(200, "PATCH", "/api/cloud/registrations/"+reg["id"].(string), jsonCT, `{"title":"CI"}`)
	d.want(200, "DELETE", "/api/cloud/registrations/ci", "", "")

	d.login(grant(apicsim.DefaultProviderUsername, apicsim.DefaultProviderPassword, apicsim.DefaultProviderRealm, `,"scope":"my:view"`))
	d.want(403, "POST", "/api/me/sign-out", "", "")
	d.login(dev)
	d.want(204, "POST", "/api/me/sign-out", "", "")
	d.want(401, "GET", "/api/me", "", "", "Accept", yamlCT)

	for _, m := range c.Mismatches() {
		t.Error(m)
	}
	all, served := c.Operations(), c.Served()
	for _, op := range all {
		if !slices.Contains(served, op) {
			t.Errorf("operation %s was never answered with a success", op)
		}
	}
	if file := os.Getenv(conformance.LogEnv); file != "" {
		r := c.Report()
		r.Test = t.Name()
		if err := conformance.AppendLog(file, r); err != nil {
			t.Error(err)
		}
	}
	n := c.Counts()
	t.Logf("operations served %d of %d, answers validated %d, skipped %d, mismatches %d", len(served), len(all), n.Answers, n.Skipped, n.Mismatches)
}
