package caddymodule

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// replayFixture is a provisioned handler against the simulator and a
// scripted next handler standing in for API Manager.
type replayFixture struct {
	sim  *apicsim.Server
	h    *Handler
	mu   sync.Mutex
	auth []string
	// answer decides the n-th upstream call's answer (n from 1).
	answer func(n int, w http.ResponseWriter, r *http.Request)
}

func newReplayFixture(t *testing.T, mod func(h *Handler)) *replayFixture {
	t.Helper()
	sim, err := apicsim.New(apicsim.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	f := &replayFixture{sim: sim, h: simHandler(srv.URL)}
	if mod != nil {
		mod(f.h)
	}
	if err := provision(t, f.h); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *replayFixture) next() caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		f.mu.Lock()
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		n := len(f.auth)
		f.mu.Unlock()
		f.answer(n, w, r)
		return nil
	})
}

func (f *replayFixture) serve(t *testing.T, r *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := f.h.ServeHTTP(rec, r, f.next()); err != nil {
		t.Fatal(err)
	}
	return rec
}

// refuseFirst answers 401 to the first call after reading part of the
// body, and 200 with the body's SHA-256 to the next.
func refuseFirst(n int, w http.ResponseWriter, r *http.Request) {
	if n == 1 {
		_, _ = io.CopyN(io.Discard, r.Body, 10)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"status":401,"message":["The token has been revoked."]}`)
		return
	}
	sum := sha256.New()
	_, _ = io.Copy(sum, r.Body)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, hex.EncodeToString(sum.Sum(nil)))
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestReplayOn401(t *testing.T) {
	body := bytes.Repeat([]byte("publish-me "), 20000) // 220 kB
	for _, tc := range []struct {
		name    string
		chunked bool
	}{{"known length", false}, {"chunked", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newReplayFixture(t, nil)
			f.answer = refuseFirst
			r := httptest.NewRequest("POST", "http://localhost/api/catalogs/o/c/publish", bytes.NewReader(body))
			if tc.chunked {
				r.ContentLength = -1
			}
			rec := f.serve(t, r)
			if rec.Code != 200 || rec.Body.String() != sha(body) {
				t.Fatalf("client got %d %q, want 200 and the whole body's hash", rec.Code, rec.Body)
			}
			if len(f.auth) != 2 || f.auth[0] == f.auth[1] || !strings.HasPrefix(f.auth[1], "Bearer ") {
				t.Fatalf("upstream saw %d calls, tokens differ: %v", len(f.auth), len(f.auth) == 2 && f.auth[0] != f.auth[1])
			}
			if n := f.sim.TokenRequests("password", "ok"); n != 2 {
				t.Fatalf("token requests = %d, want 2", n)
			}
			if f.h.id.replayCount("ok") != 1 {
				t.Fatal("replay not counted")
			}
		})
	}
}

func TestReplayRefusedAgainGoesToClient(t *testing.T) {
	f := newReplayFixture(t, nil)
	f.answer = func(n int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"status":401,"message":["no"]}`)
	}
	rec := f.serve(t, httptest.NewRequest("GET", "http://localhost/api/me", nil))
	if rec.Code != 401 || rec.Body.String() != `{"status":401,"message":["no"]}` {
		t.Fatalf("client got %d %q", rec.Code, rec.Body)
	}
	if len(f.auth) != 2 {
		t.Fatalf("%d upstream calls, want 2 (no loop)", len(f.auth))
	}
	if f.sim.TokenRequests("", "") != 2 || f.h.id.replayCount("refused_again") != 1 {
		t.Fatalf("token requests %d, refused_again %d", f.sim.TokenRequests("", ""), f.h.id.replayCount("refused_again"))
	}
}

func TestNoReplayBeyondLimit(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 4096)
	for _, tc := range []struct {
		name    string
		max     int64
		chunked bool
	}{
		{"known length over the limit", 1024, false},
		{"chunked body that outgrows the limit", 1024, true},
		{"replay off", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newReplayFixture(t, func(h *Handler) { h.ReplayMaxBody = tc.max })
			f.answer = func(n int, w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body) // all of it, past the limit
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, "refused")
			}
			r := httptest.NewRequest("POST", "http://localhost/api/catalogs/o/c/publish", bytes.NewReader(body))
			if tc.chunked {
				r.ContentLength = -1
			}
			rec := f.serve(t, r)
			if rec.Code != 401 || rec.Body.String() != "refused" || len(f.auth) != 1 {
				t.Fatalf("client got %d %q after %d upstream calls", rec.Code, rec.Body, len(f.auth))
			}
			if n := f.sim.TokenRequests("", ""); n != 1 {
				t.Fatalf("token requests = %d, want 1", n)
			}
		})
	}
}

func TestClientAuthorization(t *testing.T) {
	ok := func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }
	own := "Bearer client-own-token"
	for _, tc := range []struct {
		mode       string
		header     string
		wantStatus int
		wantAuth   string // "" means the proxy's token
		wantTokens int
	}{
		{"", own, 200, "", 1},
		{ClientAuthOverwrite, own, 200, "", 1},
		{ClientAuthKeep, own, 200, own, 0},
		{ClientAuthKeep, "", 200, "", 1},
		{ClientAuthReject, own, 400, "-", 0},
		{ClientAuthReject, "", 200, "", 1},
	} {
		t.Run(tc.mode+"/"+tc.header, func(t *testing.T) {
			f := newReplayFixture(t, func(h *Handler) { h.ClientAuthorization = tc.mode })
			f.answer = ok
			r := httptest.NewRequest("GET", "http://localhost/api/me", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			rec := f.serve(t, r)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d", rec.Code, tc.wantStatus)
			}
			if tc.wantStatus == 400 {
				if s, msg := apiError(t, rec.Body.Bytes()); s != 400 || !strings.Contains(msg[0], "without one") {
					t.Fatalf("body %s", rec.Body)
				}
				if len(f.auth) != 0 {
					t.Fatal("a rejected request went upstream")
				}
			} else {
				got := f.auth[0]
				if tc.wantAuth == "" && (got == own || !strings.HasPrefix(got, "Bearer ey")) {
					t.Fatalf("upstream saw %q, want the proxy's token", got)
				}
				if tc.wantAuth != "" && got != tc.wantAuth {
					t.Fatalf("upstream saw %q, want %q", got, tc.wantAuth)
				}
			}
			if n := f.sim.TokenRequests("", ""); n != tc.wantTokens {
				t.Fatalf("token requests = %d, want %d", n, tc.wantTokens)
			}
		})
	}
}

func TestSignOutAnsweredLocally(t *testing.T) {
	f := newReplayFixture(t, nil)
	f.answer = func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }
	for _, p := range []string{"/api/me/sign-out", "/api/me/sign-out/", "/api//me/sign-out", "/API/Me/Sign-Out", "/api/me//sign-out//"} {
		rec := f.serve(t, httptest.NewRequest("POST", "http://localhost"+p, nil))
		if rec.Code != http.StatusNoContent {
			t.Fatalf("POST %s: %d, want 204", p, rec.Code)
		}
	}
	if len(f.auth) != 0 || f.sim.TokenRequests("", "") != 0 {
		t.Fatal("a sign-out went upstream")
	}
	// Other methods and paths go on.
	if rec := f.serve(t, httptest.NewRequest("GET", "http://localhost/api/me/sign-out", nil)); rec.Code != http.StatusTeapot {
		t.Fatalf("GET sign-out: %d", rec.Code)
	}

	pass := newReplayFixture(t, func(h *Handler) { h.PassSignOut = true })
	pass.answer = f.answer
	if rec := pass.serve(t, httptest.NewRequest("POST", "http://localhost/api/me/sign-out", nil)); rec.Code != http.StatusTeapot || !strings.HasPrefix(pass.auth[0], "Bearer ey") {
		t.Fatalf("pass_sign_out: %d", rec.Code)
	}
}

func TestSignOutOnStop(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(map[bool]string{true: "on", false: "off"}[on], func(t *testing.T) {
			sim, err := apicsim.New(apicsim.DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(sim)
			defer srv.Close()
			h := simHandler(srv.URL)
			if !on {
				h.SignOutOnStop = &on
			}
			ctx := testContext(t)
			if err := h.Provision(ctx); err != nil {
				t.Fatal(err)
			}
			// A second handler with the same identity keeps the session
			// alive when the first is cleaned up.
			h2 := simHandler(srv.URL)
			h2.SignOutOnStop = h.SignOutOnStop
			if err := h2.Provision(ctx); err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			if err := h.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/api/me", nil), caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })); err != nil {
				t.Fatal(err)
			}
			if err := h.Cleanup(); err != nil {
				t.Fatal(err)
			}
			if n := sim.APICalls(http.StatusNoContent); n != 0 {
				t.Fatalf("signed out while a handler still uses the session")
			}
			if err := h2.Cleanup(); err != nil {
				t.Fatal(err)
			}
			want := 0
			if on {
				want = 1
			}
			if n := sim.APICalls(http.StatusNoContent); n != want {
				t.Fatalf("sign-outs = %d, want %d", n, want)
			}
		})
	}
}
