package apicsim_test

import (
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// queueFault queues a fault through the Go API or the /_sim/faults
// endpoint, so that each fault test covers both.
type queueFault func(t *testing.T, s *simEnv, n int, f apicsim.Fault, jsonBody string)

var faultQueues = map[string]queueFault{
	"Go": func(t *testing.T, s *simEnv, n int, f apicsim.Fault, _ string) {
		s.FailTokenRequests(n, f)
	},
	"/_sim/faults": func(t *testing.T, s *simEnv, _ int, _ apicsim.Fault, jsonBody string) {
		t.Helper()
		wantStatus(t, send(t, nil, http.MethodPost, s.URL+"/_sim/faults", []byte(jsonBody), "Content-Type", "application/json"), http.StatusNoContent)
	},
}

func TestFaultStatusThenNormal(t *testing.T) {
	for via, queue := range faultQueues {
		for _, tc := range []struct {
			status     int
			retryAfter string
			json       string
		}{
			{500, "", `{"count":2,"status":500}`},
			{429, "7", `{"count":2,"status":429,"retry_after":"7"}`},
		} {
			t.Run(via+"/"+http.StatusText(tc.status), func(t *testing.T) {
				s := start(t)
				queue(t, s, 2, apicsim.Fault{Status: tc.status, RetryAfter: tc.retryAfter}, tc.json)
				for range 2 {
					r := tokenReq(t, s.URL, devGrant())
					wantError(t, r, tc.status, "simulated failure")
					if got := r.Header.Get("Retry-After"); got != tc.retryAfter {
						t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
					}
				}
				r := tokenReq(t, s.URL, devGrant())
				wantStatus(t, r, 200)
				if r.Header.Get("Retry-After") != "" {
					t.Errorf("Retry-After on a normal answer")
				}
				if n := s.TokenRequests("password", apicsim.OutcomeFault); n != 2 {
					t.Errorf("fault outcomes = %d, want 2", n)
				}
				if n := s.TokenRequests("password", apicsim.OutcomeOK); n != 1 {
					t.Errorf("ok outcomes = %d, want 1", n)
				}
			})
		}
	}
}

func TestFaultsQueueInOrder(t *testing.T) {
	s := start(t)
	s.FailTokenRequests(1, apicsim.Fault{Status: 503})
	s.FailTokenRequests(0, apicsim.Fault{Status: 418}) // no-op
	s.FailTokenRequests(2, apicsim.Fault{Status: 429})
	for _, want := range []int{503, 429, 429, 200} {
		wantStatus(t, tokenReq(t, s.URL, devGrant()), want)
	}
}

func TestFaultUntilCleared(t *testing.T) {
	for _, clear := range []struct {
		name string
		do   func(t *testing.T, s *simEnv)
	}{
		{"ClearFaults", func(t *testing.T, s *simEnv) { s.ClearFaults() }},
		{"DELETE /_sim/faults", func(t *testing.T, s *simEnv) {
			wantStatus(t, send(t, nil, http.MethodDelete, s.URL+"/_sim/faults", nil), http.StatusNoContent)
		}},
		{"POST /_sim/reset", func(t *testing.T, s *simEnv) {
			wantStatus(t, send(t, nil, http.MethodPost, s.URL+"/_sim/reset", nil), http.StatusNoContent)
		}},
	} {
		t.Run(clear.name, func(t *testing.T) {
			s := start(t)
			s.FailTokenRequests(-1, apicsim.Fault{Status: 502})
			for range 5 {
				wantStatus(t, tokenReq(t, s.URL, devGrant()), 502)
			}
			clear.do(t, s)
			wantStatus(t, tokenReq(t, s.URL, devGrant()), 200)
		})
	}
}

func TestFaultHangMakesClientTimeOut(t *testing.T) {
	for via, queue := range faultQueues {
		t.Run(via, func(t *testing.T) {
			s := start(t)
			const hang = 2 * time.Second
			queue(t, s, 1, apicsim.Fault{Hang: hang}, `{"hang":"2s"}`)
			client := &http.Client{Timeout: 100 * time.Millisecond}
			began := time.Now()
			_, err := trySend(client, http.MethodPost, s.URL+"/api/token", jsonOf(devGrant()), "Content-Type", "application/json")
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("hanging token request: err %v, want a client timeout", err)
			}
			// Closing waits for every handler: the hanging one must
			// notice the client left rather than sit out the hang.
			s.TS.Close()
			if d := time.Since(began); d >= hang {
				t.Errorf("server took %v to let go of a request its client abandoned (hang %v)", d, hang)
			}
			if n := s.TokenRequests("password", apicsim.OutcomeFault); n != 1 {
				t.Errorf("fault outcomes = %d, want 1", n)
			}
			if rec := s.RecentTokenRequests(); len(rec) != 1 || rec[0].Status != 0 {
				t.Errorf("records %+v, want one with status 0", rec)
			}
		})
	}
}

func TestFaultHangThenAnswer(t *testing.T) {
	// A short hang followed by the normal answer: Hang combines with the
	// other fields instead of replacing them.
	s := start(t)
	s.FailTokenRequests(1, apicsim.Fault{Hang: 20 * time.Millisecond, Status: 503})
	wantError(t, tokenReq(t, s.URL, devGrant()), 503, "")
	s.FailTokenRequests(1, apicsim.Fault{Hang: 20 * time.Millisecond})
	wantStatus(t, tokenReq(t, s.URL, devGrant()), 200)
}

func TestFaultCloseDropsConnection(t *testing.T) {
	for via, queue := range faultQueues {
		t.Run(via, func(t *testing.T) {
			s := start(t)
			queue(t, s, 1, apicsim.Fault{Close: true}, `{"close":true}`)
			r, err := trySend(nil, http.MethodPost, s.URL+"/api/token", jsonOf(devGrant()), "Content-Type", "application/json")
			if err == nil {
				t.Fatalf("got a response (status %d), want a dropped connection", r.Status)
			}
			wantStatus(t, tokenReq(t, s.URL, devGrant()), 200)
			if n := s.TokenRequests("password", apicsim.OutcomeFault); n != 1 {
				t.Errorf("fault outcomes = %d, want 1", n)
			}
		})
	}
}

func TestFaultEcho(t *testing.T) {
	for via, queue := range faultQueues {
		t.Run(via, func(t *testing.T) {
			s := start(t)
			queue(t, s, 1, apicsim.Fault{Echo: true}, `{"echo":true}`)
			r := tokenReq(t, s.URL, devGrant())
			wantStatus(t, r, 400)
			if !strings.Contains(string(r.Body), apicsim.DefaultProviderPassword) {
				t.Errorf("echo fault answered %s, want the request quoted", r.Body)
			}
		})
	}
}

func TestRefusePathAndPathCounts(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	s.RefusePath("/api/orgs")
	wantStatus(t, get(t, s.URL+"/api/orgs", tok), 401)
	wantStatus(t, get(t, s.URL+"/api/me", tok), 200)
	wantStatus(t, get(t, s.URL+"/other", tok), 404)
	st := s.Stats()
	if st.Paths["/api/orgs"] != 1 || st.Paths["/api/me"] != 1 || st.Paths["/other"] != 1 || st.OutsideAPI != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFaultRawBody(t *testing.T) {
	for via, queue := range faultQueues {
		t.Run(via, func(t *testing.T) {
			s := start(t)
			const page = "<html><body>Gateway says hello</body></html>"
			queue(t, s, 1, apicsim.Fault{Body: page, ContentType: "text/html"}, `{"body":"`+page+`","content_type":"text/html"}`)
			r := tokenReq(t, s.URL, devGrant())
			wantStatus(t, r, 200)
			if string(r.Body) != page || r.Header.Get("Content-Type") != "text/html" {
				t.Errorf("got %q (%s), want the raw page as text/html", r.Body, r.Header.Get("Content-Type"))
			}
			if json.Valid(r.Body) {
				t.Error("raw body fault answered JSON")
			}
		})
	}
	t.Run("default content type and status", func(t *testing.T) {
		s := start(t)
		s.FailTokenRequests(1, apicsim.Fault{Body: "oops", Status: 502})
		r := tokenReq(t, s.URL, devGrant())
		wantStatus(t, r, 502)
		if string(r.Body) != "oops" || r.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("got %q (%s)", r.Body, r.Header.Get("Content-Type"))
		}
	})
}

func TestFaultOmitAndSet(t *testing.T) {
	for via, queue := range faultQueues {
		t.Run(via, func(t *testing.T) {
			s := start(t)
			queue(t, s, 1, apicsim.Fault{Omit: []string{"expires_in"}, Set: map[string]any{"token_type": "mac"}},
				`{"omit":["expires_in"],"set":{"token_type":"mac"}}`)
			m := loginResp(t, s.URL, devGrant())
			if _, ok := m["expires_in"]; ok {
				t.Errorf("expires_in present: %v", m)
			}
			if m["token_type"] != "mac" {
				t.Errorf("token_type %v, want mac", m["token_type"])
			}
			// The edited token is still a real one.
			wantStatus(t, get(t, s.URL+"/api/me", m["access_token"].(string)), 200)
			// An edit is not a failure: the request counts as ok.
			if n := s.TokenRequests("password", apicsim.OutcomeOK); n != 1 {
				t.Errorf("ok outcomes = %d, want 1", n)
			}
			// Only the next request was edited.
			m = loginResp(t, s.URL, devGrant())
			if m["token_type"] != "Bearer" || m["expires_in"] != float64(28800) {
				t.Errorf("second response %v not back to normal", m)
			}
		})
	}
	t.Run("edits do not rescue a refused request", func(t *testing.T) {
		s := start(t)
		s.FailTokenRequests(1, apicsim.Fault{Set: map[string]any{"token_type": "mac"}})
		wantError(t, tokenReq(t, s.URL, with(devGrant(), "password", "x")), 401, "")
	})
}

func TestFaultsEndpointRejectsBadInput(t *testing.T) {
	s := start(t)
	wantError(t, send(t, nil, http.MethodPost, s.URL+"/_sim/faults", []byte(`{"hang":"soon"}`)), 400, "hang")
	wantError(t, send(t, nil, http.MethodPost, s.URL+"/_sim/faults", []byte(`{"status":"500"}`)), 400, "")
	wantStatus(t, tokenReq(t, s.URL, devGrant()), 200)
	// Without a count, one request; count -1 until cleared.
	wantStatus(t, send(t, nil, http.MethodPost, s.URL+"/_sim/faults", []byte(`{"status":500}`)), http.StatusNoContent)
	wantStatus(t, tokenReq(t, s.URL, devGrant()), 500)
	wantStatus(t, tokenReq(t, s.URL, devGrant()), 200)
	wantStatus(t, send(t, nil, http.MethodPost, s.URL+"/_sim/faults", []byte(`{"status":500,"count":-1}`)), http.StatusNoContent)
	for range 3 {
		wantStatus(t, tokenReq(t, s.URL, devGrant()), 500)
	}
}

func TestFaultsOnlyAffectTokenRequests(t *testing.T) {
	s := start(t)
	tok := login(t, s.URL, devGrant())
	s.FailTokenRequests(1, apicsim.Fault{Status: 500})
	wantStatus(t, get(t, s.URL+"/api/me", tok), 200)
	wantStatus(t, tokenReq(t, s.URL, devGrant()), 500)
}

func TestStatsCountByGrantAndOutcome(t *testing.T) {
	s := start(t, func(c *apicsim.Config) {
		c.RefreshTokens = true
		c.Lockout = apicsim.Lockout{Attempts: 1, Duration: time.Minute}
	})
	rt := loginResp(t, s.URL, devGrant())["refresh_token"].(string) // password ok
	login(t, s.URL, refreshGrant(rt))                               // refresh_token ok
	tokenReq(t, s.URL, refreshGrant(rt))                            // refresh_token bad_credentials
	tokenReq(t, s.URL, with(devGrant(), "client_secret", "x"))      // password bad_client
	tokenReq(t, s.URL, with(adminGrant(), "password", "x"))         // password bad_credentials, locks admin
	tokenReq(t, s.URL, adminGrant())                                // password locked
	tokenReq(t, s.URL, with(devGrant(), "grant_type", "<delete>"))  // unknown bad_request
	tokenReq(t, s.URL, map[string]string{"grant_type": "api_key"})  // api_key bad_request
	s.FailTokenRequests(1, apicsim.Fault{Status: 500})
	tokenReq(t, s.URL, devGrant()) // password fault
	get(t, s.URL+"/api/me", "")    // api 401

	want := apicsim.Stats{
		Token: map[string]map[string]int{
			"password":      {"ok": 1, "bad_client": 1, "bad_credentials": 1, "locked": 1, "fault": 1},
			"refresh_token": {"ok": 1, "bad_credentials": 1},
			"unknown":       {"bad_request": 1},
			"api_key":       {"bad_request": 1},
		},
		API:          map[int]int{401: 1},
		TokensIssued: 2,
		Paths:        map[string]int{"/api/me": 1},
	}
	got := s.Stats()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Stats() = %+v\nwant %+v", got, want)
	}
	for _, c := range []struct {
		grant, outcome string
		want           int
	}{
		{"", "", 9}, {"password", "", 5}, {"", "ok", 2}, {"", "bad_credentials", 2},
		{"password", "locked", 1}, {"api_key", "ok", 0}, {"nosuch", "", 0},
	} {
		if n := s.TokenRequests(c.grant, c.outcome); n != c.want {
			t.Errorf("TokenRequests(%q, %q) = %d, want %d", c.grant, c.outcome, n, c.want)
		}
	}

	// /_sim/stats has the same numbers as JSON.
	r := send(t, nil, http.MethodGet, s.URL+"/_sim/stats", nil)
	wantStatus(t, r, 200)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		t.Fatal(err)
	}
	if keys := strings.Join(slices.Sorted(maps.Keys(raw)), ","); keys != "api_calls,outside_api,paths,token_requests,tokens_issued" {
		t.Errorf("/_sim/stats keys %s", keys)
	}
	var viaHTTP apicsim.Stats
	if err := json.Unmarshal(r.Body, &viaHTTP); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(viaHTTP, want) {
		t.Errorf("/_sim/stats = %+v\nwant %+v", viaHTTP, want)
	}

	// /_sim/reset zeroes them.
	wantStatus(t, send(t, nil, http.MethodPost, s.URL+"/_sim/reset", nil), http.StatusNoContent)
	zero := apicsim.Stats{Token: map[string]map[string]int{}, API: map[int]int{}, Paths: map[string]int{}}
	if got := s.Stats(); !reflect.DeepEqual(got, zero) {
		t.Errorf("after reset Stats() = %+v, want zero", got)
	}
	if r := send(t, nil, http.MethodGet, s.URL+"/_sim/stats", nil); string(r.Body) != `{"token_requests":{},"api_calls":{},"tokens_issued":0,"paths":{},"outside_api":0}` {
		t.Errorf("after reset /_sim/stats = %s", r.Body)
	}
	if n := len(s.RecentTokenRequests()); n != 0 {
		t.Errorf("%d recent token requests after reset, want 0", n)
	}
	// The returned Stats is a copy.
	got.Token["password"]["ok"] = 99
	if s.TokenRequests("password", "ok") != 0 {
		t.Error("changing a Stats snapshot changed the server's counters")
	}
}

func TestRecentTokenRequestsKeepsTheLast256(t *testing.T) {
	s := start(t)
	for i := range 260 {
		tokenReq(t, s.URL, with(devGrant(), "username", "u"+string(rune('a'+i%26))))
	}
	recs := s.RecentTokenRequests()
	if len(recs) != 256 {
		t.Fatalf("%d records, want 256", len(recs))
	}
	// Oldest first: the first four of 260 fell off.
	if recs[0].Username != "ue" || recs[255].Username != "uz" {
		t.Errorf("first/last usernames %q/%q, want ue/uz", recs[0].Username, recs[255].Username)
	}
}
