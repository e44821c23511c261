package conformance_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/conformance"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

const goodMe = `{"type":"me","api_version":"2.0.0","name":"developer","username":"developer","state":"enabled","identity_provider":"default-idp-2","url":"https://apim.example.com/api/me"}`

// TestCheckerFindsEveryKindOfMismatch checks hand-made answers: each bad
// one gives a mismatch whose reason names what is wrong, each good one
// none.
func TestCheckerFindsEveryKindOfMismatch(t *testing.T) {
	c, err := conformance.Load()
	if err != nil {
		t.Fatal(err)
	}
	jsonH := hdr("Content-Type", "application/json")
	form := "--b\r\nContent-Disposition: form-data; name=\"product\"; filename=\"p.yaml\"\r\n\r\nproduct: 1.0.0\r\n" +
		"--b\r\nContent-Disposition: form-data; name=\"openapi\"; filename=\"a.yaml\"\r\n\r\nswagger: '2.0'\r\n--b--\r\n"
	product := `{"type":"product","api_version":"2.0.0","id":"p1","name":"shop","version":"1.0.0","state":"published","url":"https://h/api/catalogs/o/c/products/p1"}`
	for _, tc := range []struct {
		name string
		a    conformance.Answer
		want string // "" for no mismatch
	}{
		{"a good Me", conformance.Answer{Method: "GET", Path: "/api/me", Status: 200, Header: jsonH, Body: []byte(goodMe)}, ""},
		{"Me with an id", conformance.Answer{Method: "GET", Path: "/api/me", Status: 200, Header: jsonH, Body: []byte(strings.Replace(goodMe, `{`, `{"id":"x",`, 1))}, `undeclared property "id"`},
		{"Me in YAML", conformance.Answer{Method: "GET", Path: "/api/me", Status: 200, Header: hdr("Content-Type", "application/yaml"), Body: []byte("type: me\nname: developer\nforce_password_change: false\n")}, ""},
		{"YAML with a realm", conformance.Answer{Method: "GET", Path: "/api/me", Status: 200, Header: hdr("Content-Type", "application/yaml"), Body: []byte("type: me\nrealm: provider/x\n")}, `"realm"`},
		{"an enum value outside the list", conformance.Answer{Method: "GET", Path: "/api/me", Status: 200, Header: jsonH, Body: []byte(`{"type":"me","state":"paused"}`)}, "/state"},
		{"a wrong type", conformance.Answer{Method: "GET", Path: "/api/me", Status: 200, Header: jsonH, Body: []byte(`{"type":"me","force_password_change":"no"}`)}, "/force_password_change"},
		{"a token answer without expires_in", conformance.Answer{Method: "POST", Path: "/api/token", ReqHeader: jsonH, ReqBody: []byte(`{"grant_type":"password"}`), Status: 200, Header: jsonH, Body: []byte(`{"access_token":"x","token_type":"Bearer"}`)}, "expires_in"},
		{"an undeclared status", conformance.Answer{Method: "GET", Path: "/api/me", Status: 201, Header: jsonH, Body: []byte(goodMe)}, "status 201"},
		{"an undeclared content type", conformance.Answer{Method: "GET", Path: "/api/me", Status: 200, Header: hdr("Content-Type", "text/plain"), Body: []byte(goodMe)}, "text/plain"},
		{"an error in API Connect's shape", conformance.Answer{Method: "GET", Path: "/api/me", Status: 401, Header: jsonH, Body: []byte(`{"status":401,"message":["Invalid token."]}`)}, ""},
		{"an error with an extra field", conformance.Answer{Method: "GET", Path: "/api/me", Status: 401, Header: jsonH, Body: []byte(`{"status":401,"message":["x"],"code":"E1"}`)}, `"code"`},
		{"a 204 with a body", conformance.Answer{Method: "POST", Path: "/api/me/sign-out", Status: 204, Header: jsonH, Body: []byte(`{}`)}, "204"},
		{"a 204 without", conformance.Answer{Method: "POST", Path: "/api/me/sign-out", Status: 204, Header: http.Header{}}, ""},
		{"a request with an undeclared property accepted", conformance.Answer{Method: "PUT", Path: "/api/me", ReqHeader: jsonH, ReqBody: []byte(`{"realm":"x"}`), Status: 200, Header: jsonH, Body: []byte(goodMe)}, `request body`},
		{"the same request refused", conformance.Answer{Method: "PUT", Path: "/api/me", ReqHeader: jsonH, ReqBody: []byte(`{"realm":"x"}`), Status: 400, Header: jsonH, Body: []byte(`{"status":400,"message":["unknown property"]}`)}, ""},
		{"a publish with the declared parts", conformance.Answer{Method: "POST", Path: "/api/catalogs/o/c/publish", ReqHeader: hdr("Content-Type", "multipart/form-data; boundary=b"), ReqBody: []byte(form), Status: 201, Header: jsonH, Body: []byte(product)}, ""},
		{"a publish with an undeclared part accepted", conformance.Answer{Method: "POST", Path: "/api/catalogs/o/c/publish", ReqHeader: hdr("Content-Type", "multipart/form-data; boundary=b"), ReqBody: []byte(strings.Replace(form, `name="openapi"`, `name="extra"`, 1)), Status: 201, Header: jsonH, Body: []byte(product)}, "extra"},
		{"an unknown path answered 404", conformance.Answer{Method: "GET", Path: "/api/nope", Status: 404, Header: jsonH, Body: []byte(`{"status":404,"message":["not found"]}`)}, ""},
		{"an unknown path answered 200", conformance.Answer{Method: "GET", Path: "/api/nope", Status: 200, Header: jsonH, Body: []byte(`{}`)}, "no operation"},
		{"an answer shaped by a fault", conformance.Answer{Method: "POST", Path: "/api/token", Status: 200, Header: hdr("Content-Type", "text/plain", apicsim.FaultHeader, "1"), Body: []byte("garbage")}, ""},
		{"a list by name where a get by id is too", conformance.Answer{Method: "GET", Path: "/api/orgs/o/drafts/draft-apis/orders", Status: 200, Header: jsonH, Body: []byte(`{"total_results":0,"results":[]}`)}, ""},
		{"a draft API where either is", conformance.Answer{Method: "GET", Path: "/api/orgs/o/drafts/draft-apis/d1", Status: 200, Header: jsonH, Body: []byte(`{"type":"draft_api","id":"d1","name":"orders","version":"1.0.0"}`)}, ""},
		{"neither", conformance.Answer{Method: "GET", Path: "/api/orgs/o/drafts/draft-apis/d1", Status: 200, Header: jsonH, Body: []byte(`{"type":"draft_api","colour":"red"}`)}, "colour"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := c.Check(tc.a)
			var reasons []string
			for _, m := range ms {
				reasons = append(reasons, m.String())
			}
			all := strings.Join(reasons, "\n")
			switch {
			case tc.want == "" && len(ms) > 0:
				t.Errorf("mismatches for a conforming answer:\n%s", all)
			case tc.want != "" && !strings.Contains(all, tc.want):
				t.Errorf("mismatches %q, want one naming %q", all, tc.want)
			}
		})
	}
	if n := c.Counts(); n.Skipped != 1 {
		t.Errorf("skipped %d, want the one fault-marked answer", n.Skipped)
	}
}
