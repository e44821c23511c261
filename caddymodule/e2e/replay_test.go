package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// TestReplayPublishAcrossRevocation: publishes that meet a revoked token
// (220 KiB and 2 MiB, with a known length and chunked) are replayed whole
// with one new token; a 20 MiB one, above replay_max_body, streams
// through unbuffered and its 401 reaches the client as API Manager sent
// it.
func TestReplayPublishAcrossRevocation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustOK("/api/me", "warm-up")

	for i, step := range []struct {
		size    int
		chunked bool
	}{
		{220 << 10, false},
		{220 << 10, true},
		{2 << 20, false},
		{20 << 20, false},
		{2 << 20, true},
	} {
		replayed := step.size <= 4<<20
		name := fmt.Sprintf("%d KiB publish", step.size>>10)
		if step.chunked {
			name += " chunked"
		}
		body, ctype := publishBody(t, step.size, byte(i+2))
		grants, calls := e.sim.TokenRequests("password", "ok"), len(e.upstreamAuth())
		e.sim.RevokeAll()

		var status int
		var hdr http.Header
		var answer []byte
		switch {
		case !replayed:
			resp, data, writeErr := rawPost(t, e, publishPath, ctype, body)
			t.Logf("%s: 401 read while the body was being sent; sending it ended with: %v", name, writeErr)
			status, answer = resp.StatusCode, data
		case step.chunked:
			// Written in pieces, as a client streaming a file does.
			pr, pw := io.Pipe()
			var wrote int
			var wg sync.WaitGroup
			wg.Go(func() {
				for off := 0; off < len(body); off += 32 << 10 {
					n, err := pw.Write(body[off:min(off+32<<10, len(body))])
					wrote += n
					if err != nil {
						return
					}
				}
				pw.Close()
			})
			var err error
			status, hdr, answer, err = post(e, publishPath, ctype, pr, -1)
			pr.Close() // ends the writer should the request have failed
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if wrote != len(body) {
				t.Fatalf("%s: the body was sent %d of %d bytes", name, wrote, len(body))
			}
		default:
			var err error
			status, hdr, answer, err = post(e, publishPath, ctype, bytes.NewReader(body), int64(len(body)))
			if err != nil {
				t.Fatal(err)
			}
		}

		auth := e.upstreamAuth()[calls:]
		if !replayed {
			if status != http.StatusUnauthorized {
				t.Fatalf("%s with a revoked token: status %d, want the 401 passed through: %.300s", name, status, answer)
			}
			if s, msgs := simtest.APIError(t, answer); s != http.StatusUnauthorized || !strings.Contains(strings.Join(msgs, " "), "revoked") {
				t.Fatalf("%s: body %s, want API Manager's 401 about the revoked token", name, answer)
			}
			if got := e.sim.TokenRequests("password", "ok"); got != grants || len(auth) != 1 {
				t.Fatalf("%s: %d new token requests, %d calls upstream; want 0 and 1", name, got-grants, len(auth))
			}
			logFault(t, "publish_20MiB_revoked", status, e.sim.TokenRequests("", ""), "", strings.TrimSpace(string(answer)), "")
			continue
		}
		checkPublished(t, name+" across a revocation", status, hdr, answer, body)
		if got := e.sim.TokenRequests("password", "ok"); got != grants+1 {
			t.Fatalf("%s: %d new token requests, want 1", name, got-grants)
		}
		if len(auth) != 2 || auth[0] == auth[1] || !strings.HasPrefix(auth[1], "Bearer ey") {
			t.Fatalf("%s: %d calls upstream (tokens differ: %v), want the refused call and its replay with a new token",
				name, len(auth), len(auth) == 2 && auth[0] != auth[1])
		}
		logFault(t, "publish_"+strings.ReplaceAll(name, " ", "_")+"_revoked", status, e.sim.TokenRequests("", ""), "",
			fmt.Sprintf("replayed: %d bytes, SHA-256 matches", len(body)), "")
	}

	st := e.identity()
	e.stop()
	if got := e.sim.TokenRequests("password", "ok"); got != 5 {
		t.Fatalf("password grants = %d, want 5 (start, one per replayed revocation)", got)
	}
	if got, tooLarge := st.Counts.Replays["ok"], st.Counts.Replays["body_too_large"]; got != 4 || tooLarge != 0 {
		t.Fatalf("replays ok %d, body too large %d; want 4 and 0 (20 MiB is not even buffered)", got, tooLarge)
	}
	if got := e.sim.APICalls(http.StatusUnauthorized); got != 5 {
		t.Fatalf("API Manager refused %d requests, want 5", got)
	}
}

// TestReplayRefusedAgainGoesToClient: a resource that refuses the new
// token too answers the client with its own 401, after one replay.
func TestReplayRefusedAgainGoesToClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.sim.RefusePath("/api/me")
	status, _, body := e.do("GET", "/api/me", nil)
	if s, msgs := simtest.APIError(t, body); status != 401 || s != 401 || msgs[0] != "Not authorized for this resource." {
		t.Fatalf("client got %d %s, want the simulator's 401", status, body)
	}
	if n := e.sim.Stats().Paths["/api/me"]; n != 2 {
		t.Fatalf("%d calls upstream, want 2 (no loop)", n)
	}
	if n, again := e.sim.TokenRequests("", ""), e.identity().Counts.Replays["refused_again"]; n != 2 || again != 1 {
		t.Fatalf("token requests %d, refused_again %d; want 2 and 1", n, again)
	}
}

// TestNoReplayBeyondLimit: a body over replay_max_body, known from its
// length or found as it streams, is not kept, and its 401 goes to the
// client; so is any 401 with replay off. The simulator reads each body
// whole before it answers.
func TestNoReplayBeyondLimit(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("x"), 4096)
	for _, tc := range []struct {
		name    string
		limit   string
		chunked bool
	}{
		{"known length over the limit", "1KiB", false},
		{"chunked body that outgrows the limit", "1KiB", true},
		{"replay off", "off", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withAuth("replay_max_body "+tc.limit))
			e.beforeAPI(func(r *http.Request) {
				all, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(all))
			})
			e.mustOK("/api/me", "warm-up")
			e.sim.RevokeAll()
			var r io.Reader = bytes.NewReader(body)
			length := int64(len(body))
			if tc.chunked {
				r, length = io.MultiReader(r), -1 // a reader of unknown length
			}
			status, _, answer, err := post(e, publishPath, "application/octet-stream", r, length)
			if err != nil {
				t.Fatal(err)
			}
			if s, msgs := simtest.APIError(t, answer); status != 401 || s != 401 || !strings.Contains(msgs[0], "revoked") {
				t.Fatalf("client got %d %s, want API Manager's 401", status, answer)
			}
			if n := e.sim.Stats().Paths[publishPath]; n != 1 {
				t.Fatalf("%d publishes upstream, want 1", n)
			}
			if n := e.sim.TokenRequests("", ""); n != 1 {
				t.Fatalf("token requests = %d, want 1", n)
			}
			// Nothing was held for a replay: the 401 passed as it came.
			if replays := e.identity().Counts.Replays; len(replays) != 0 {
				t.Fatalf("replays %v, want none", replays)
			}
		})
	}
}

func TestClientAuthorization(t *testing.T) {
	t.Parallel()
	const own = "Bearer client-own-token"
	type step struct {
		header     string // the client's Authorization, "" for none
		wantStatus int
		wantAuth   string // what reached the simulator: "" the proxy's token, "-" nothing
		wantTokens int    // token requests so far
	}
	for _, tc := range []struct {
		mode  string
		steps []step
	}{
		{"", []step{{own, 200, "", 1}}},
		{"overwrite", []step{{own, 200, "", 1}}},
		// The simulator refuses the client's own token, and its 401
		// reaches the client without a replay.
		{"keep", []step{{own, 401, own, 0}, {"", 200, "", 1}}},
		{"reject", []step{{own, 400, "-", 0}, {"", 200, "", 1}}},
	} {
		t.Run("mode "+tc.mode, func(t *testing.T) {
			t.Parallel()
			var opts []option
			if tc.mode != "" {
				opts = append(opts, withAuth("client_authorization "+tc.mode))
			}
			e := newEnv(t, opts...)
			for i, s := range tc.steps {
				var hdr http.Header
				if s.header != "" {
					hdr = http.Header{"Authorization": {s.header}}
				}
				calls := len(e.upstreamAuth())
				status, _, body := e.do("GET", "/api/me", hdr)
				if status != s.wantStatus {
					t.Fatalf("step %d: status %d, want %d: %s", i, status, s.wantStatus, body)
				}
				seen := e.upstreamAuth()[calls:]
				switch s.wantAuth {
				case "-":
					if msgStatus, msg := simtest.APIError(t, body); msgStatus != 400 || !strings.Contains(msg[0], "without one") {
						t.Fatalf("step %d: body %s", i, body)
					}
					if len(seen) != 0 {
						t.Fatalf("step %d: a rejected request went upstream", i)
					}
				case "":
					if len(seen) != 1 || seen[0] == own || !strings.HasPrefix(seen[0], "Bearer ey") {
						t.Fatalf("step %d: upstream saw %q, want the proxy's token", i, seen)
					}
				default:
					if len(seen) != 1 || seen[0] != s.wantAuth {
						t.Fatalf("step %d: upstream saw %q, want %q", i, seen, s.wantAuth)
					}
				}
				if n := e.sim.TokenRequests("", ""); n != s.wantTokens {
					t.Fatalf("step %d: token requests = %d, want %d", i, n, s.wantTokens)
				}
			}
		})
	}
}

func TestSignOutAnsweredLocally(t *testing.T) {
	t.Parallel()
	t.Run("answered", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		for _, p := range []string{"/api/me/sign-out", "/api/me/sign-out/", "/api//me/sign-out", "/API/Me/Sign-Out", "/api/me//sign-out//"} {
			if status, _, body := e.do("POST", p, nil); status != http.StatusNoContent {
				t.Fatalf("POST %s: %d %s, want 204", p, status, body)
			}
		}
		if n := len(e.upstreamAuth()); n != 0 || e.sim.TokenRequests("", "") != 0 {
			t.Fatalf("a sign-out went upstream (%d calls, %d token requests)", n, e.sim.TokenRequests("", ""))
		}
		// Other methods go on: the simulator answers GET with its 405.
		if status, hdr, body := e.do("GET", "/api/me/sign-out", nil); status != http.StatusMethodNotAllowed || hdr.Get("Allow") != "POST" {
			t.Fatalf("GET sign-out: %d %v %s, want the simulator's answer", status, hdr, body)
		}
	})
	t.Run("pass_sign_out", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, withAuth("pass_sign_out"))
		if status, _, body := e.do("POST", "/api/me/sign-out", nil); status != http.StatusNoContent {
			t.Fatalf("pass_sign_out: %d %s, want the simulator's 204", status, body)
		}
		seen := e.upstreamAuth()
		if n := e.sim.Stats().Paths["/api/me/sign-out"]; n != 1 || len(seen) != 1 || !strings.HasPrefix(seen[0], "Bearer ey") {
			t.Fatalf("the simulator saw %d sign-outs, with %q; want one with the proxy's token", n, seen)
		}
	})
}

// TestSignOutOnStop: the session is signed out upstream when the last
// config using it is unloaded, once, and not while a config still uses
// it; with sign_out_on_stop off, never.
func TestSignOutOnStop(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		t.Run(map[bool]string{true: "on", false: "off"}[on], func(t *testing.T) {
			t.Parallel()
			var opts []option
			if !on {
				opts = append(opts, withAuth("sign_out_on_stop off"))
			}
			// Two handlers of the same identity share one session.
			opts = append(opts, withCaddyfile(func(e *env) string {
				handle := func(matcher string) string {
					return "handle " + matcher + "{\n\t" + e.authBlock() + "\n\treverse_proxy " + e.simURL + "\n\t}"
				}
				return e.caddyfileSite(handle("/api/orgs ") + "\n\t" + handle(""))
			}))
			e := newEnv(t, opts...)
			e.mustOK("/api/me", "first request")
			e.mustOK("/api/orgs", "second request")
			held := e.upstreamAuth()[0]
			// A config with one of the two handlers keeps the session.
			e.mustReload(e.caddyfile(e.authBlock()))
			e.mustOK("/api/me", "after the reload")
			if n := e.sim.Stats().Paths["/api/me/sign-out"]; n != 0 {
				t.Fatalf("signed out %d times while a handler still uses the session", n)
			}
			if n := e.sim.TokenRequests("", ""); n != 1 {
				t.Fatalf("token requests = %d, want 1", n)
			}
			e.stop()

			want, wantStatus := 0, http.StatusOK
			if on {
				want, wantStatus = 1, http.StatusUnauthorized
			}
			if n := e.sim.Stats().Paths["/api/me/sign-out"]; n != want {
				t.Fatalf("sign-outs = %d, want %d", n, want)
			}
			// What API Manager now says of the session's token.
			req, _ := http.NewRequest(http.MethodGet, e.simURL+"/api/me", nil)
			req.Header.Set("Authorization", held)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != wantStatus {
				t.Fatalf("after the stop, API Manager answers the session's token with %d, want %d", resp.StatusCode, wantStatus)
			}
			if logged := strings.Contains(e.logText(), "signed the API Connect session out"); logged != on {
				t.Fatalf("sign-out logged: %v, want %v", logged, on)
			}
		})
	}
}
