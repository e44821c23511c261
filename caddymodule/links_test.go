package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// orgList is a list response as API Manager writes one: n organizations,
// each with its url under server.
func orgList(server string, n int) []byte {
	type org struct {
		Type       string `json:"type"`
		APIVersion string `json:"api_version"`
		ID         string `json:"id"`
		Name       string `json:"name"`
		Title      string `json:"title"`
		Summary    string `json:"summary"`
		State      string `json:"state"`
		OrgType    string `json:"org_type"`
		Created    string `json:"created_at"`
		Updated    string `json:"updated_at"`
		URL        string `json:"url"`
	}
	var l struct {
		Total   int   `json:"total_results"`
		Results []org `json:"results"`
	}
	for i := range n {
		name, id := fmt.Sprintf("org-%02d", i), fmt.Sprintf("6e1f7a4c-2b0d-4c8e-9a51-%012d", i)
		l.Results = append(l.Results, org{
			Type: "org", APIVersion: "2.0.0", ID: id, Name: name,
			Title: "Provider organization " + name, Summary: "APIs and products of the " + name + " team",
			State: "enabled", OrgType: "provider", Created: "2026-01-15T09:30:00.000Z", Updated: "2026-03-02T17:45:12.000Z",
			URL: server + "/api/orgs/" + id,
		})
	}
	l.Total = n
	body, _ := json.Marshal(l)
	return body
}

func TestRewriteLinksThroughHandler(t *testing.T) {
	_, srv := simtest.Start(t)
	h := simHandler(srv.URL)
	h.RewriteLinks = true
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	body := orgList(srv.URL, 3)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if ae := r.Header.Get("Accept-Encoding"); ae != "" {
			t.Errorf("Accept-Encoding %q forwarded", ae)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Header().Set("Location", srv.URL+"/api/orgs/org-00")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body[:100])
		_, _ = w.Write(body[100:])
		return nil
	})
	req := httptest.NewRequest("GET", "http://127.0.0.1:9080/api/orgs", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(string(body), srv.URL, "http://127.0.0.1:9080")
	if rec.Body.String() != want || strings.Contains(rec.Body.String(), srv.URL) {
		t.Fatalf("body %s\nwant %s", rec.Body, want)
	}
	if got := rec.Header().Get("Location"); got != "http://127.0.0.1:9080/api/orgs/org-00" {
		t.Errorf("Location %q", got)
	}
	if got := rec.Header().Get("Content-Length"); got != "" {
		t.Errorf("Content-Length %q kept for a body whose length changed", got)
	}
}
