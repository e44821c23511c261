package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestRewriteLinks: with rewrite_links, the url fields of the simulator's
// lists and a Location header name the proxy as the client reached it
// (here a loopback TCP port), following one stays on the proxy, and a URL
// of the same host on another port is left alone.
func TestRewriteLinks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withTCP(), withCaddyfile(func(e *env) string {
		// The simulator writes URLs of the Host it is asked for, as API
		// Manager writes its own configured endpoint.
		return e.caddyfileSite(e.authBlock("rewrite_links") + `
	reverse_proxy ` + e.simURL + ` {
		header_up Host {upstream_hostport}
	}`)
	}))
	proxyURL := "http://" + e.tcpAddr
	get := func(url string, hdr http.Header) (int, http.Header, []byte) {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := e.tcp.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header, body
	}

	// The client asks for gzip: the body still arrives rewritten.
	status, hdr, body := get(proxyURL+"/api/orgs", http.Header{"Accept-Encoding": {"gzip"}})
	var orgs struct {
		Results []struct{ URL string }
	}
	if err := json.Unmarshal(body, &orgs); status != 200 || err != nil || len(orgs.Results) == 0 {
		t.Fatalf("GET /api/orgs: %d %s (%v)", status, body, err)
	}
	if strings.Contains(string(body), e.simURL) || hdr.Get("Content-Encoding") != "" {
		t.Fatalf("the answer names the upstream, or is encoded (%q): %s", hdr.Get("Content-Encoding"), body)
	}
	for _, o := range orgs.Results {
		if !strings.HasPrefix(o.URL, proxyURL+"/api/orgs/") {
			t.Fatalf("url %q does not name the proxy %s", o.URL, proxyURL)
		}
	}
	// Following a url stays on the proxy, with its token.
	_, _, body = get(proxyURL+"/api/me", nil)
	var me struct{ URL string }
	if err := json.Unmarshal(body, &me); err != nil || me.URL != proxyURL+"/api/me" {
		t.Fatalf("GET /api/me: url %q (%v), want %s/api/me", me.URL, err, proxyURL)
	}
	if status, _, body := get(me.URL, nil); status != 200 {
		t.Fatalf("GET %s: %d %s", me.URL, status, body)
	}

	// A create answered with Location, and a body that also names the
	// upstream's host on another port.
	otherPort := strings.Replace(e.simURL, ":", ":1", 2) // http://127.0.0.1:1<port>
	e.answerAPI(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/api/created" {
			return false
		}
		w.Header().Set("Location", e.simURL+"/api/orgs/new")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"url":"`+e.simURL+`/api/orgs/new","elsewhere":"`+otherPort+`/api/orgs/new"}`)
		return true
	})
	status, hdr, body = get(proxyURL+"/api/created", nil)
	if status != http.StatusCreated || hdr.Get("Location") != proxyURL+"/api/orgs/new" {
		t.Fatalf("status %d, Location %q", status, hdr.Get("Location"))
	}
	if want := `{"url":"` + proxyURL + `/api/orgs/new","elsewhere":"` + otherPort + `/api/orgs/new"}`; string(body) != want {
		t.Fatalf("body %s\nwant %s", body, want)
	}
}
