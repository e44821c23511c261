package e2e

// The fault suite: the proxy in front of the simulator, with the token
// endpoint failing in every way it can and API Manager refusing tokens
// under load. Each test proves what the client sees (status, API Connect's
// error body, Retry-After) and that the token endpoint is asked a bounded
// number of times; the env's end checks that nothing panicked and that no
// goroutine of the module outlives its config. Each fault's figures are
// logged in one line:
//
//	fault=<name> status=<code> token_requests=<n> retry_after=<s> message=<first 100 chars>
//
// (go test -v -run 'TestFault' ./caddymodule/e2e prints them.)

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// failPrefix is how every 502 of a failed token request starts.
const failPrefix = "apic_auth could not obtain an API Connect token: "

// logFault records one fault's figures in the test log. The message is
// cut to its first 100 characters after the fixed prefix, with the token
// endpoint's URL elided, so that the cause is what shows; the whole
// message follows on a line of its own.
func logFault(t *testing.T, name string, status, tokenRequests int, retryAfter, msg, endpoint string) {
	t.Helper()
	short := strings.TrimPrefix(msg, failPrefix)
	if endpoint != "" {
		short = strings.ReplaceAll(short, `Post "`+endpoint+`": `, "")
		short = strings.ReplaceAll(short, "token endpoint "+endpoint+" ", "")
		short = strings.ReplaceAll(short, "token endpoint "+endpoint+": ", "")
	}
	if len(short) > 100 {
		short = short[:100]
	}
	if retryAfter == "" {
		retryAfter = "-"
	}
	t.Logf("fault=%s status=%d token_requests=%d retry_after=%s message=%s", name, status, tokenRequests, retryAfter, short)
	t.Logf("fault=%s full_message=%s", name, msg)
}

// rawPost sends a POST with a known length through the proxy over a
// connection of its own, reading the answer while the body is still being
// written, as curl does. Go's client returns its write error instead of the
// answer when the server answers and closes before reading the whole body
// (a broken pipe, golang/go#11745), which Caddy does with a large body that
// the upstream refused unread, with or without apic_auth. It returns the
// answer and what became of the write.
func rawPost(t *testing.T, e *env, path, contentType string, body []byte) (*http.Response, []byte, error) {
	t.Helper()
	conn, err := net.Dial("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, err := http.NewRequest(http.MethodPost, "http://localhost"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.ContentLength = int64(len(body))
	wrote := make(chan error, 1)
	go func() { wrote <- req.Write(conn) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		conn.Close()
		<-wrote
		t.Fatalf("POST %s: no answer: %v", path, err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("POST %s: reading the answer: %v", path, err)
	}
	conn.Close() // ends a write still blocked
	return resp, data, <-wrote
}

// post sends a POST with the given body through the proxy; length -1
// sends it chunked.
func post(e *env, path, contentType string, body io.Reader, length int64) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, "http://localhost"+path, body)
	if err != nil {
		return 0, nil, nil, err
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", contentType)
	return e.send(req)
}

// refusingServer returns the URL of a loopback port that refuses
// connections: a socket bound to it, never listening, keeps it from being
// given to anything else until the test ends.
func refusingServer(t *testing.T) string {
	t.Helper()
	// As package net does: no process started meanwhile inherits it.
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// tlsServer serves h over TLS on a loopback port, with cert or else
// httptest's own, and counts the TLS handshakes begun.
func tlsServer(t *testing.T, h http.Handler, cert *tls.Certificate) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	hellos := new(atomic.Int64)
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		hellos.Add(1)
		return nil, nil
	}}
	if cert != nil {
		ts.TLS.Certificates = []tls.Certificate{*cert}
	}
	// The failed handshakes are the point; do not log them.
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts, hellos
}

// tokenFault is a fault of the token endpoint that leaves the proxy
// without a token.
type tokenFault struct {
	name string
	// endpoint, when set, starts a token endpoint other than the
	// simulator before the proxy starts; it returns apic_auth's server,
	// extra apic_auth lines, and a count of the token requests it saw
	// (nil when nothing can count them).
	endpoint func(t *testing.T) (server string, extra []string, seen func() int)
	// fault, when set, is queued on the simulator for every token
	// request.
	fault *apicsim.Fault
	// extra are apic_auth lines.
	extra []string
	// cause is the outcome the proxy counts the token request under.
	cause string
	// want are parts of the 502's message that name the cause.
	want []string
	// minRetryAfter is the least Retry-After of the first 502.
	minRetryAfter int
	// lasting faults last until the configuration changes (an untrusted
	// certificate): the 30 s cool-down follows, not the back-off.
	lasting bool
}

// TestFaultTokenEndpoint covers the faults of the token endpoint after
// which no token can be had: every request gets 502 with API Connect's
// error body naming the cause and a Retry-After, and requests during the
// back-off (the cool-down, for a certificate not trusted) fail at once
// without a token request.
func TestFaultTokenEndpoint(t *testing.T) {
	t.Parallel()
	for _, f := range []tokenFault{
		{
			name: "connection_refused",
			endpoint: func(t *testing.T) (string, []string, func() int) {
				return refusingServer(t), nil, nil
			},
			cause: "unreachable",
			want:  []string{"unreachable", "connection refused"},
		},
		{
			name:  "hang_past_timeout",
			fault: &apicsim.Fault{Hang: time.Minute},
			extra: []string{"timeout 200ms"},
			cause: "timeout",
			want:  []string{"timed out"},
		},
		{
			name:  "status_500",
			fault: &apicsim.Fault{Status: 500},
			cause: "server_error",
			want:  []string{"failed: status 500", "simulated failure with status 500"},
		},
		{
			name:          "status_429_retry_after_7",
			fault:         &apicsim.Fault{Status: 429, RetryAfter: "7"},
			cause:         "rate_limited",
			want:          []string{"rate limiting: status 429"},
			minRetryAfter: 7,
		},
		{
			name:  "not_json",
			fault: &apicsim.Fault{Body: "<html><body><h1>Gateway</h1></body></html>", ContentType: "text/html"},
			cause: "bad_response",
			want:  []string{"answered without a usable token", "not a JSON token response", "looks like HTML"},
		},
		{
			name:  "no_sane_lifetime",
			fault: &apicsim.Fault{Set: map[string]any{"expires_in": 0, "access_token": "not-a-jwt"}},
			cause: "bad_response",
			want:  []string{"answered without a usable token", "no sane lifetime", "expires_in is 0", "not a JWT"},
		},
		{
			name:  "token_type_mac",
			fault: &apicsim.Fault{Set: map[string]any{"token_type": "mac"}},
			cause: "bad_response",
			want:  []string{"answered without a usable token", `token_type is "mac", want Bearer`},
		},
		{
			name:  "empty_access_token",
			fault: &apicsim.Fault{Set: map[string]any{"access_token": ""}},
			cause: "bad_response",
			want:  []string{"answered without a usable token", "access_token is missing or empty"},
		},
		{
			name: "tls_untrusted",
			endpoint: func(t *testing.T) (string, []string, func() int) {
				ts, hellos := tlsServer(t, http.NotFoundHandler(), nil)
				return ts.URL, nil, func() int { return int(hellos.Load()) }
			},
			cause:   "tls",
			want:    []string{": the certificate of 127.0.0.1:", " is not trusted: x509: certificate signed by unknown authority", "; name its CA with tls_trusted_ca_certs (apic-proxy --ca-cert)"},
			lasting: true,
		},
		{
			name: "tls_wrong_host",
			endpoint: func(t *testing.T) (string, []string, func() int) {
				certs, err := apicsim.NewCertificates("apim.example.com")
				if err != nil {
					t.Fatal(err)
				}
				caFile := filepath.Join(t.TempDir(), "ca.pem")
				if err := os.WriteFile(caFile, certs.CAPEM, 0o600); err != nil {
					t.Fatal(err)
				}
				ts, hellos := tlsServer(t, http.NotFoundHandler(), &certs.Server)
				return ts.URL, []string{"tls_trusted_ca_certs " + caFile}, func() int { return int(hellos.Load()) }
			},
			cause: "tls",
			// The server is an IP address, so Go's verifier says the
			// certificate has no IP SANs (for a name: "certificate is
			// valid for apim.example.com, not <name>").
			want:    []string{" is not trusted: x509: cannot validate certificate for 127.0.0.1", "IP SANs", "; give the server by a name the certificate is for"},
			lasting: true,
		},
	} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			runTokenFault(t, f)
		})
	}
}

func runTokenFault(t *testing.T, f tokenFault) {
	opts := []option{withAuth(f.extra...)}
	var (
		server string
		seen   func() int
	)
	if f.endpoint != nil {
		var extra []string
		server, extra, seen = f.endpoint(t)
		opts = append(opts, withServer(server), withAuth(extra...))
	}
	e := newEnv(t, opts...)
	if f.endpoint == nil {
		server = e.simURL
		seen = func() int { return e.sim.TokenRequests("", "") }
	}
	if f.fault != nil {
		e.sim.FailTokenRequests(-1, *f.fault)
	}
	endpoint := server + "/api/token"

	// expect502 sends one request and checks the 502; it returns the
	// message and Retry-After in seconds.
	expect502 := func(step string) (string, int) {
		t.Helper()
		status, hdr, body := e.do("GET", "/api/me", nil)
		if status != http.StatusBadGateway {
			t.Fatalf("%s: status %d, want 502: %s", step, status, body)
		}
		s, msgs := simtest.APIError(t, body)
		if s != http.StatusBadGateway || len(msgs) != 1 {
			t.Fatalf("%s: body %s, want status 502 and one message", step, body)
		}
		msg := msgs[0]
		if !strings.HasPrefix(msg, failPrefix+"token endpoint "+endpoint+" ") && !strings.HasPrefix(msg, failPrefix+"token endpoint "+endpoint+": ") {
			t.Fatalf("%s: message %q does not name the token endpoint %s", step, msg, endpoint)
		}
		for _, w := range f.want {
			if !strings.Contains(msg, w) {
				t.Fatalf("%s: message %q does not say %q", step, msg, w)
			}
		}
		for _, secret := range []string{apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret} {
			if strings.Contains(string(body), secret) {
				t.Fatalf("%s: the 502 holds a secret", step)
			}
		}
		if ct := hdr.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s: Content-Type %q", step, ct)
		}
		ra, err := strconv.Atoi(hdr.Get("Retry-After"))
		lo, hi := 1, 60
		if f.lasting {
			// The cool-down's 30 s, rounded up; a little time may have
			// passed since the attempt.
			lo, hi = 25, 30
		}
		if err != nil || ra < lo || ra > hi {
			t.Fatalf("%s: Retry-After %q, want %d to %d seconds", step, hdr.Get("Retry-After"), lo, hi)
		}
		return msg, ra
	}

	msg, ra := expect502("first request")
	if ra < f.minRetryAfter {
		t.Fatalf("Retry-After %d, want at least %d", ra, f.minRetryAfter)
	}
	st := e.identity()
	wantState := "backing_off"
	if f.lasting {
		wantState = "cooling_down"
	}
	if st.State != wantState || st.RetryAt == nil || failPrefix+st.LastError != msg || st.Counts.Failures[f.cause] != 1 {
		t.Fatalf("status after the failure: %+v, want %s with the 502's message, one failure counted as %s", st, wantState, f.cause)
	}
	if got := st.Counts.TokenRequests["password"][f.cause]; got != 1 || st.attempts() != 1 {
		t.Fatalf("status counts %v, want one token request with outcome %s", st.Counts.TokenRequests, f.cause)
	}
	retryAt := *st.RetryAt

	// Four more requests in the back-off: the same answer, no token
	// request. Should they outlast the back-off (the machine stalled),
	// a new attempt is due, and only the message is checked.
	var later []int
	for i := range 4 {
		m, r := expect502(fmt.Sprintf("request %d during the back-off", i+2))
		if m != msg {
			t.Fatalf("request %d: %q; the first had %q", i+2, m, msg)
		}
		later = append(later, r)
	}
	end := time.Now()
	n := e.identity().attempts()
	if end.Before(retryAt) {
		if n != 1 {
			t.Fatalf("5 requests in the back-off (until %s) made %d token requests, want 1", retryAt, n)
		}
		for i, r := range later {
			if r > ra {
				t.Fatalf("request %d: Retry-After %d, more than the first's %d", i+2, r, ra)
			}
		}
	} else {
		t.Logf("the requests outlasted the back-off (until %s, now %s): %d token requests", retryAt, end, n)
	}

	e.stop()
	if seen != nil {
		if got := seen(); got != n {
			t.Fatalf("the token endpoint saw %d token requests, the proxy made %d", got, n)
		}
	}
	if e.sim.APICalls(0) != 0 {
		t.Fatalf("%d requests reached API Manager without a token", e.sim.APICalls(0))
	}
	logFault(t, f.name, http.StatusBadGateway, n, strconv.Itoa(ra), msg, endpoint)
}

// TestFaultExpiresInFallsBackToJWTExp: with expires_in missing, zero,
// negative, not a number or absurdly large, the token's lifetime comes
// from its exp claim, and the proxy serves 200 on the one token.
func TestFaultExpiresInFallsBackToJWTExp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault apicsim.Fault
	}{
		{"missing", apicsim.Fault{Omit: []string{"expires_in"}}},
		{"zero", apicsim.Fault{Set: map[string]any{"expires_in": 0}}},
		{"negative", apicsim.Fault{Set: map[string]any{"expires_in": -28800}}},
		{"not_a_number", apicsim.Fault{Set: map[string]any{"expires_in": "soon"}}},
		{"absurdly_large", apicsim.Fault{Set: map[string]any{"expires_in": 1e12}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const ttl = 28800 * time.Second
			e := newEnv(t, withSim(func(c *apicsim.Config) { c.TokenTTL = ttl }))
			e.sim.FailTokenRequests(1, tc.fault)

			status, _, body := e.do("GET", "/api/me", nil)
			if status != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", status, body)
			}
			exp := tokenExp(t, e.upstreamAuth()[0])
			// The lifetime is the claim's: the token expires then, and
			// is refreshed a quarter of its lifetime (counted from its
			// arrival, within a second of its iat) before.
			st := e.identity()
			if st.State != "valid" || st.TokenExpires == nil || !st.TokenExpires.Equal(exp) ||
				st.RefreshAt == nil || st.RefreshAt.Sub(exp.Add(-ttl/4)).Abs() > time.Second {
				t.Fatalf("status %+v, want a valid token expiring at the exp claim %s", st, exp)
			}
			if status, _, body := e.do("GET", "/api/orgs", nil); status != http.StatusOK {
				t.Fatalf("second request: status %d: %s", status, body)
			}
			if auth := e.upstreamAuth(); auth[0] != auth[1] {
				t.Fatal("the second request carried another token")
			}
			e.stop()
			if got := e.sim.TokenRequests("", ""); got != 1 {
				t.Fatalf("token requests %d, want 1", got)
			}
			logFault(t, "expires_in_"+tc.name, status, e.sim.TokenRequests("", ""), "",
				"expiry taken from the exp claim: "+st.TokenExpires.Format(time.RFC3339), "")
		})
	}
}

// tokenExp returns the exp claim of the JWT in an Authorization header.
func tokenExp(t *testing.T, authorization string) time.Time {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(authorization, "Bearer "), ".")
	if len(parts) != 3 {
		t.Fatalf("Authorization %.40q is not a bearer JWT", authorization)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == 0 {
		t.Fatalf("claims %s: %v", payload, err)
	}
	return time.Unix(claims.Exp, 0)
}

// TestFaultRevokeAllUnderLoad: API Manager revokes every token in the
// middle of steady load (reads and small publishes from 8 clients). No
// client sees a 401 or any other error: each refused request is replayed
// with one new token, fetched once for all of them.
func TestFaultRevokeAllUnderLoad(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustOK("/api/me", "warm-up")

	// The revocation comes after n answers, and the load ends n answers
	// after it.
	n := loadRequests(t)
	var phase atomic.Pointer[countdown]
	beforeRevoke, afterRevoke := newCountdown(n), newCountdown(n)
	phase.Store(beforeRevoke)
	stop := make(chan struct{})
	start := time.Now()
	res, wait := runLoad(t, e, 8, true, stop, func(http.Header) { phase.Load().count() })
	awaitOrStop(t, beforeRevoke.done, "answers before the revocation", stop, wait)
	res.mu.Lock()
	before := res.total
	res.mu.Unlock()
	phase.Store(afterRevoke)
	e.sim.RevokeAll()
	awaitOrStop(t, afterRevoke.done, "answers after the revocation", stop, wait)
	close(stop)
	wait()
	d := time.Since(start).Round(time.Millisecond)
	st := e.identity()
	e.stop()

	bad, unauthorized := res.non2xx()
	refused := e.sim.APICalls(http.StatusUnauthorized)
	replayed, again := st.Counts.Replays["ok"], st.Counts.Replays["refused_again"]
	t.Logf("fault=revoke_all_under_load status=200 token_requests=%d requests=%d (before the revocation %d, publishes %d) by_status=%v api_401=%d replays_ok=%d replays_refused_again=%d duration=%s",
		e.sim.TokenRequests("", ""), res.total, before, res.publish, res.byStatus, refused, replayed, again, d)
	if bad != 0 {
		t.Fatalf("clients saw %d non-2xx answers (%d of them 401) of %d: %v; samples %v", bad, unauthorized, res.total, res.byStatus, res.sample)
	}
	if before == 0 || res.total == before {
		t.Fatalf("the load did not straddle the revocation: %d requests before, %d in all", before, res.total)
	}
	if refused == 0 {
		t.Fatal("API Manager refused no request: the revocation was not exercised")
	}
	if got := e.sim.TokenRequests("password", "ok"); got != 2 {
		t.Fatalf("password grants = %d, want 2 (start, and one after the revocation)", got)
	}
	if got := e.sim.TokenRequests("", ""); got != 2 {
		t.Fatalf("token requests = %d, want 2", got)
	}
	if replayed != refused || again != 0 {
		t.Fatalf("API Manager refused %d requests; replays ok %d, refused again %d", refused, replayed, again)
	}
}

// TestFaultReloadUnderLoad: the config is reloaded several times, with the
// same identity, while clients keep sending requests. Every request gets
// 200 and the session, with its token, survives every reload.
func TestFaultReloadUnderLoad(t *testing.T) {
	t.Parallel()
	config := func(e *env, gen int) string {
		return e.caddyfile(e.authBlock() + fmt.Sprintf("\n\theader X-Gen %d", gen))
	}
	e := newEnv(t, withCaddyfile(func(e *env) string { return config(e, 0) }))
	e.mustOK("/api/me", "warm-up")

	const reloads = 50
	var seen [reloads + 1]chan struct{}
	var once [reloads + 1]sync.Once
	for i := range seen {
		seen[i] = make(chan struct{})
	}
	onResponse := func(h http.Header) {
		if g, err := strconv.Atoi(h.Get("X-Gen")); err == nil && g >= 0 && g <= reloads {
			once[g].Do(func() { close(seen[g]) })
		}
	}
	stop := make(chan struct{})
	res, wait := runLoad(t, e, 8, false, stop, onResponse)
	start := time.Now()
	for gen := 0; gen <= reloads; gen++ {
		if gen > 0 {
			if err := e.reload(config(e, gen)); err != nil {
				close(stop)
				wait()
				t.Fatalf("reload %d: %v", gen, err)
			}
		}
		// Wait until the clients are served by this generation.
		awaitOrStop(t, seen[gen], fmt.Sprintf("response of config generation %d", gen), stop, wait)
	}
	close(stop)
	wait()
	took := time.Since(start)
	e.stop()

	bad, _ := res.non2xx()
	t.Logf("fault=reload_under_load status=200 token_requests=%d reloads=%d requests=%d by_status=%v took=%s",
		e.sim.TokenRequests("", ""), reloads, res.total, res.byStatus, took.Round(time.Millisecond))
	if bad != 0 || res.byStatus[http.StatusOK] != res.total {
		t.Fatalf("clients saw failures across reloads: %v of %d; samples %v", res.byStatus, res.total, res.sample)
	}
	if got := e.sim.TokenRequests("", ""); got != 1 {
		t.Fatalf("token requests = %d, want 1 across %d reloads", got, reloads)
	}
	if got := e.sim.APICalls(http.StatusUnauthorized); got != 0 {
		t.Fatalf("API Manager refused %d requests", got)
	}
	if got := e.sim.Stats().Paths["/api/me/sign-out"]; got != 1 {
		t.Fatalf("the session was signed out %d times, want once, at the end", got)
	}
}

// TestFaultServerClockPastExpiry: API Manager's clock alone moves past the
// expiry of the token the proxy holds as fresh: it answers 401 "expired",
// and the proxy replays with a new token.
func TestFaultServerClockPastExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	grants := func() int { return e.sim.TokenRequests("password", "ok") }
	e.mustOK("/api/me", "start")

	st := e.identity()
	if st.State != "valid" || st.RefreshAt == nil || !time.Now().Before(*st.RefreshAt) {
		t.Fatalf("the proxy should hold its token as fresh: %+v", st)
	}
	held := e.upstreamAuth()[0]
	e.sim.Advance(st.TokenExpires.Sub(e.sim.Now()) + time.Minute)
	// What API Manager now says of the held token, asked directly.
	req, _ := http.NewRequest(http.MethodGet, e.simURL+"/api/me", nil)
	req.Header.Set("Authorization", held)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, msgs := simtest.APIError(t, body); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(msgs[0], "expired") {
		t.Fatalf("API Manager answers the held token with %d %s, want 401 expired", resp.StatusCode, body)
	}
	e.mustOK("/api/me", "after the server's clock alone moved past the expiry")
	if got := grants(); got != 2 {
		t.Fatalf("after the server's clock jumped: %d token requests, want 2", got)
	}
	if got := e.sim.APICalls(http.StatusUnauthorized); got != 2 {
		t.Fatalf("API Manager refused %d requests, want 2 (the expired token: asked directly, then through the proxy)", got)
	}
	e.mustOK("/api/me", "once more")
	if got := grants(); got != 2 {
		t.Fatalf("after the replay: %d token requests, want still 2", got)
	}
	if got := e.identity().Counts.Replays["ok"]; got != 1 {
		t.Fatalf("replays = %d, want 1", got)
	}
	e.stop()
	if !strings.Contains(e.logText(), "replaying with a new one") {
		t.Fatal("the replay was not logged")
	}
	logFault(t, "server_clock_alone_past_expiry", 200, grants(), "", "API Manager answered 401 expired; replayed with a new token", "")
}

// TestFaultWrongPasswordLockout: a wrong password against an identity
// provider that locks accounts after 3 failed logins in a row. Requests
// during the cool-down make no attempt; forced refreshes (the admin API
// ignores the cool-down) make the fourth, and then the client sees the
// identity provider's own "locked" message.
func TestFaultWrongPasswordLockout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withVar("APIC_PASSWORD", "not-the-pa55word"))
	e.sim.SetLockout(3, 15*time.Minute)

	get := func(step string) (string, string) {
		t.Helper()
		status, hdr, body := e.do("GET", "/api/me", nil)
		if status != http.StatusBadGateway {
			t.Fatalf("%s: status %d, want 502: %s", step, status, body)
		}
		_, msgs := simtest.APIError(t, body)
		if !strings.Contains(msgs[0], "refused the credentials (password grant): status 401") {
			t.Fatalf("%s: message %q does not name the refused credentials", step, msgs[0])
		}
		ra, err := strconv.Atoi(hdr.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 900 {
			t.Fatalf("%s: Retry-After %q", step, hdr.Get("Retry-After"))
		}
		return msgs[0], hdr.Get("Retry-After")
	}
	firstMsg, _ := get("first request")
	for i := range 10 {
		get(fmt.Sprintf("request %d in the cool-down", i+2))
	}
	if got := e.sim.TokenRequests("", ""); got != 1 {
		t.Fatalf("11 requests in the cool-down made %d token requests, want 1", got)
	}
	for i := range 3 {
		if code, body := e.adminDo("POST", "/apic_auth/refresh"); code != http.StatusBadGateway {
			t.Fatalf("forced refresh %d: %d %s", i+1, code, body)
		}
	}
	lastMsg, lastRA := get("after the lockout")
	e.stop()
	bad := e.sim.TokenRequests("password", apicsim.OutcomeBadCredentials)
	locked := e.sim.TokenRequests("password", apicsim.OutcomeLocked)
	all := e.sim.TokenRequests("", "")
	logFault(t, "wrong_password_lockout_after_3", http.StatusBadGateway, all, lastRA, lastMsg, e.simURL+"/api/token")
	t.Logf("fault=wrong_password_lockout_after_3 bad_credentials=%d locked=%d first_message=%s", bad, locked, firstMsg)
	if bad != 3 || locked != 1 || all != 4 || !strings.Contains(lastMsg, "locked") {
		t.Fatalf("bad_credentials=%d locked=%d in all %d, last message %q; want 3, 1, 4 and the identity provider's locked message",
			bad, locked, all, lastMsg)
	}
}
