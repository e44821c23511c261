package caddymodule

// The end-to-end fault suite: a real Caddy in this process, on a unix
// socket, in front of the simulator, with the token endpoint failing in
// every way it can. Each test proves what the client sees (status, API
// Connect's error body, Retry-After), that the token endpoint is asked a
// bounded number of times, that nothing panicked, and that no goroutine of
// ours outlives Caddy. Each fault's figures are logged in one line:
//
//	fault=<name> status=<code> token_requests=<n> retry_after=<s> message=<first 100 chars>
//
// (go test -v -run 'TestFault' ./caddymodule prints them.)

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/goleak"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// fltPrefix is how every 502 of a failed token request starts.
const fltPrefix = "apic_auth could not obtain an API Connect token: "

// fltLeakOptions name the goroutines that are not ours and may outlive
// one test's Caddy: workers of Caddy's dependencies that a loaded config
// starts and that do not end with caddy.Stop. None is in our packages.
var fltLeakOptions = []goleak.Option{
	// The rolling log file writer's compression and clean-up worker.
	// Caddy's default logger keeps the last config's log file open after
	// Stop, until another config replaces it.
	goleak.IgnoreAnyFunction("github.com/DeRuina/timberjack.(*Logger).millRun"),
	// certmagic's storage lock keeper (the tls app cleans its storage
	// under a lock at start): it notices the lock's removal only after
	// its sleep of a few seconds.
	goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
}

// fltCheckLeaks fails the test if a goroutine that was not running when
// it was called is still running at the end of the test. Call it first:
// cleanups run last-in first-out, so the check runs after Caddy, the
// simulator and the clients were stopped by the later cleanups.
func fltCheckLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, append([]goleak.Option{ignore}, fltLeakOptions...)...)
	})
}

func init() {
	caddy.RegisterModule(fltPanicGuard{})
	httpcaddyfile.RegisterHandlerDirective("flt_guard", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		return fltPanicGuard{}, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("flt_guard", httpcaddyfile.Before, "tracing")
}

// fltPanics counts the panics fltPanicGuard saw; fltFirstPanic is the
// first one's value and stack.
var (
	fltPanics     atomic.Int64
	fltPanicMu    sync.Mutex
	fltFirstPanic string
)

// fltPanicGuard is a test-only handler that runs first in every fault
// test's route and counts the panics of the handlers after it (apic_auth
// among them) before passing them on to net/http as they were. Counting
// them here, rather than looking for them in Caddy's log, also catches a
// panic in a server that a reload is shutting down, whose log may be gone.
type fltPanicGuard struct{}

func (fltPanicGuard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.flt_guard", New: func() caddy.Module { return new(fltPanicGuard) }}
}

func (fltPanicGuard) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	defer func() {
		if rec := recover(); rec != nil {
			if rec != http.ErrAbortHandler && fltPanics.Add(1) == 1 {
				fltPanicMu.Lock()
				fltFirstPanic = fmt.Sprintf("%v\n%s", rec, debug.Stack())
				fltPanicMu.Unlock()
			}
			panic(rec)
		}
	}()
	return next.ServeHTTP(w, r)
}

// fltCaddyfile is e.caddyfile with the panic guard first.
func fltCaddyfile(e *testEnv, handlers string) string {
	return e.caddyfile("flt_guard\n\t" + handlers)
}

// fltStop stops Caddy (its sessions stop, signing out upstream), then the
// simulator, waiting for its handlers so that its counters are final, and
// closes the client's idle connections. It fails the test if Caddy logged
// a panic.
func fltStop(e *testEnv) {
	e.t.Helper()
	if err := caddy.Stop(); err != nil {
		e.t.Errorf("caddy.Stop: %v", err)
	}
	e.simSrv.Close()
	e.client.CloseIdleConnections()
	if n := fltPanics.Swap(0); n > 0 {
		fltPanicMu.Lock()
		first := fltFirstPanic
		fltPanicMu.Unlock()
		e.t.Errorf("%d requests panicked; the first: %s", n, first)
	}
	if logs := e.logText(); strings.Contains(strings.ToLower(logs), "panic") {
		e.t.Errorf("Caddy logged a panic:\n%s", logs)
	}
}

// fltEnv is a test environment on a fake clock shared by the simulator
// and the proxy, with leak checking.
func fltEnv(t *testing.T, mod func(*apicsim.Config)) (*testEnv, *fakeClock) {
	t.Helper()
	fltCheckLeaks(t)
	setSecrets(t)
	fltPanics.Store(0)
	return newClockedEnv(t, mod)
}

// fltNewEnv is newTestEnv with the panic count zeroed.
func fltNewEnv(t *testing.T, cfg apicsim.Config) *testEnv {
	t.Helper()
	fltPanics.Store(0)
	return newTestEnv(t, cfg)
}

// fltSession returns the identity whose token endpoint is server.
func fltSession(t *testing.T, server string) *identity {
	t.Helper()
	var found *identity
	identities.Range(func(_, v any) bool {
		if id, ok := v.(*identity); ok && id.server == server {
			found = id
			return false
		}
		return true
	})
	if found == nil {
		t.Fatalf("no session for %s", server)
	}
	return found
}

// fltAttempts counts the token requests a session made.
func fltAttempts(id *identity) int {
	st := id.sess.Status()
	return st.Obtained + st.Failed
}

// fltLog records one fault's figures in the test log. The message is cut
// to its first 100 characters after the fixed prefix, with the token
// endpoint's URL elided, so that the cause is what shows; the whole
// message follows on a line of its own.
func fltLog(t *testing.T, name string, status, tokenRequests int, retryAfter, msg, endpoint string) {
	t.Helper()
	short := strings.TrimPrefix(msg, fltPrefix)
	if endpoint != "" {
		short = strings.ReplaceAll(short, `Post "`+endpoint+`": `, "")
		short = strings.ReplaceAll(short, "token endpoint "+endpoint+" ", "")
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

// fltGet sends a GET through the proxy without failing the test, for use
// from load goroutines.
func fltGet(e *testEnv, path string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, "http://localhost"+path, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	return fltSend(e, req)
}

// fltPost sends a POST with the given body through the proxy; length -1
// sends it chunked.
func fltPost(e *testEnv, path, contentType string, body io.Reader, length int64) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, "http://localhost"+path, body)
	if err != nil {
		return 0, nil, nil, err
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", contentType)
	return fltSend(e, req)
}

func fltSend(e *testEnv, req *http.Request) (int, http.Header, []byte, error) {
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, body, nil
}

// fltRawPost sends a POST with a known length through the proxy over a
// connection of its own, reading the answer while the body is still being
// written, as curl does. Go's client returns its write error instead of the
// answer when the server answers and closes before reading the whole body
// (a broken pipe, golang/go#11745), which Caddy does with a large body that
// the upstream refused unread, with or without apic_auth. It returns the
// answer and what became of the write.
func fltRawPost(t *testing.T, e *testEnv, path, contentType string, body []byte) (*http.Response, []byte, error) {
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

// fltMultipart builds a publish body: a product part and an API part of
// size pseudo-random bytes. It returns the exact bytes and their
// Content-Type.
func fltMultipart(t *testing.T, size int, seed byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	buf.Grow(size + 1024)
	mw := multipart.NewWriter(&buf)
	pw, err := mw.CreateFormFile("product", "product.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(pw, "product: 1.0.0\ninfo:\n  name: fault-suite\n  version: 1.0.%d\napis:\n  api:\n    $ref: api.yaml\n", seed)
	aw, err := mw.CreateFormFile("openapi", "api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	key[0] = seed
	rng := rand.NewChaCha8(key)
	chunk := make([]byte, 64<<10)
	for left := size; left > 0; left -= len(chunk) {
		if left < len(chunk) {
			chunk = chunk[:left]
		}
		_, _ = rng.Read(chunk)
		if _, err := aw.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

// fltPublished checks a publish answer: 201 and the simulator's byte
// count and SHA-256 equal to those of sent.
func fltPublished(t *testing.T, what string, status int, body, sent []byte) {
	t.Helper()
	if status != http.StatusCreated {
		t.Fatalf("%s: status %d, want 201: %.300s", what, status, body)
	}
	var got struct {
		ReceivedBytes int64  `json:"received_bytes"`
		SHA256        string `json:"sha256"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%s: answer %.300s: %v", what, body, err)
	}
	sum := sha256.Sum256(sent)
	if got.ReceivedBytes != int64(len(sent)) || got.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("%s: the simulator received %d bytes with SHA-256 %s, the client sent %d bytes with SHA-256 %x",
			what, got.ReceivedBytes, got.SHA256, len(sent), sum)
	}
}

// fltTokenFault is a fault of the token endpoint that leaves the proxy
// without a token.
type fltTokenFault struct {
	name string
	// setup injects the fault. It returns the apic_auth server (empty:
	// the simulator), extra apic_auth lines, and a count of the token
	// requests the token endpoint saw (nil: the simulator's count).
	setup func(t *testing.T, e *testEnv) (server string, extra []string, seen func() int)
	// want are parts of the 502's message that name the cause.
	want []string
	// minRetryAfter is the least Retry-After of the first 502.
	minRetryAfter int
}

// TestFaultTokenEndpoint covers the faults of the token endpoint after
// which no token can be had: every request gets 502 with API Connect's
// error body naming the cause and a Retry-After; requests during the
// back-off fail at once without a token request, and the next one is made
// exactly when Retry-After said.
func TestFaultTokenEndpoint(t *testing.T) {
	simFault := func(f apicsim.Fault, extra ...string) func(*testing.T, *testEnv) (string, []string, func() int) {
		return func(_ *testing.T, e *testEnv) (string, []string, func() int) {
			e.sim.FailTokenRequests(-1, f)
			return "", extra, nil
		}
	}
	for _, f := range []fltTokenFault{
		{
			name: "connection_refused",
			setup: func(t *testing.T, e *testEnv) (string, []string, func() int) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				server := "http://" + ln.Addr().String()
				ln.Close()
				// Nothing listens: only the session can count its attempts.
				return server, nil, func() int { return -1 }
			},
			want: []string{"unreachable", "connection refused"},
		},
		{
			name:  "hang_past_timeout",
			setup: simFault(apicsim.Fault{Hang: time.Minute}, "timeout 200ms"),
			want:  []string{"timed out"},
		},
		{
			name:  "status_500",
			setup: simFault(apicsim.Fault{Status: 500}),
			want:  []string{"failed: status 500", "simulated failure with status 500"},
		},
		{
			name:          "status_429_retry_after_7",
			setup:         simFault(apicsim.Fault{Status: 429, RetryAfter: "7"}),
			want:          []string{"rate limiting: status 429"},
			minRetryAfter: 7,
		},
		{
			name:  "not_json",
			setup: simFault(apicsim.Fault{Body: "<html><body><h1>Gateway</h1></body></html>", ContentType: "text/html"}),
			want:  []string{"answered without a usable token", "not a JSON token response", "looks like HTML"},
		},
		{
			name:  "no_sane_lifetime",
			setup: simFault(apicsim.Fault{Set: map[string]any{"expires_in": 0, "access_token": "not-a-jwt"}}),
			want:  []string{"answered without a usable token", "no sane lifetime", "expires_in is 0", "not a JWT"},
		},
		{
			name:  "token_type_mac",
			setup: simFault(apicsim.Fault{Set: map[string]any{"token_type": "mac"}}),
			want:  []string{"answered without a usable token", `token_type is "mac", want Bearer`},
		},
		{
			name:  "empty_access_token",
			setup: simFault(apicsim.Fault{Set: map[string]any{"access_token": ""}}),
			want:  []string{"answered without a usable token", "access_token is missing or empty"},
		},
		{
			name: "tls_untrusted",
			setup: func(t *testing.T, e *testEnv) (string, []string, func() int) {
				ts, hellos := fltTLSServer(t, e, nil)
				return ts.URL, nil, func() int { return int(hellos.Load()) }
			},
			want: []string{"failed TLS verification", "certificate signed by unknown authority"},
		},
		{
			name: "tls_wrong_host",
			setup: func(t *testing.T, e *testEnv) (string, []string, func() int) {
				certs, err := apicsim.NewCertificates("apim.example.com")
				if err != nil {
					t.Fatal(err)
				}
				caFile := filepath.Join(t.TempDir(), "ca.pem")
				if err := os.WriteFile(caFile, certs.CAPEM, 0o600); err != nil {
					t.Fatal(err)
				}
				ts, hellos := fltTLSServer(t, e, &certs.Server)
				return ts.URL, []string{"tls_trusted_ca_certs " + caFile}, func() int { return int(hellos.Load()) }
			},
			// The server is an IP address, so Go's verifier says the
			// certificate has no IP SANs (for a name: "certificate is
			// valid for apim.example.com, not <name>").
			want: []string{"failed TLS verification", "cannot validate certificate for 127.0.0.1", "IP SANs"},
		},
	} {
		t.Run(f.name, func(t *testing.T) { fltRunTokenFault(t, f) })
	}
}

// fltTLSServer serves the simulator over TLS on a loopback port, with
// cert or else httptest's own, and counts the TLS handshakes begun.
func fltTLSServer(t *testing.T, e *testEnv, cert *tls.Certificate) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	hellos := new(atomic.Int64)
	ts := httptest.NewUnstartedServer(e.sim)
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

func fltRunTokenFault(t *testing.T, f fltTokenFault) {
	e, clock := fltEnv(t, nil)
	server, extra, seen := f.setup(t, e)
	block := e.authBlock(extra...)
	if server != "" {
		block = strings.Replace(block, "server "+e.simSrv.URL, "server "+server, 1)
	} else {
		server = e.simSrv.URL
	}
	if seen == nil {
		seen = func() int { return e.sim.TokenRequests("", "") }
	}
	e.mustLoad(fltCaddyfile(e, block))
	endpoint := server + "/api/token"

	// expect502 sends one request and checks the 502; it returns the
	// message and Retry-After in seconds.
	expect502 := func(step string) (string, int) {
		t.Helper()
		status, hdr, body := e.do("GET", "/api/me", nil)
		if status != http.StatusBadGateway {
			t.Fatalf("%s: status %d, want 502: %s", step, status, body)
		}
		s, msgs := apiError(t, body)
		if s != http.StatusBadGateway || len(msgs) != 1 {
			t.Fatalf("%s: body %s, want status 502 and one message", step, body)
		}
		msg := msgs[0]
		if !strings.HasPrefix(msg, fltPrefix+"token endpoint "+endpoint+" ") {
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
		if err != nil || ra < 1 || ra > 60 {
			t.Fatalf("%s: Retry-After %q, want 1 to 60 seconds", step, hdr.Get("Retry-After"))
		}
		return msg, ra
	}

	// Five requests at one instant: one token request, the same answer.
	msg, ra := expect502("first request")
	if ra < f.minRetryAfter {
		t.Fatalf("Retry-After %d, want at least %d", ra, f.minRetryAfter)
	}
	id := fltSession(t, server)
	for i := range 4 {
		m, r := expect502(fmt.Sprintf("request %d during the back-off", i+2))
		if m != msg || r != ra {
			t.Fatalf("request %d: %q, Retry-After %d; the first had %q, %d", i+2, m, r, msg, ra)
		}
	}
	if got := fltAttempts(id); got != 1 {
		t.Fatalf("5 requests in the back-off made %d token requests, want 1", got)
	}
	// A second before Retry-After runs out: still no new attempt.
	if ra > 1 {
		clock.Advance(time.Duration(ra-1) * time.Second)
		if _, r := expect502("a second before Retry-After"); r != 1 {
			t.Fatalf("a second before the retry time, Retry-After is %d, want 1", r)
		}
		if got := fltAttempts(id); got != 1 {
			t.Fatalf("a request before Retry-After ran out made a token request (%d in all)", got)
		}
		clock.Advance(time.Second)
	} else {
		clock.Advance(time.Duration(ra) * time.Second)
	}
	// At the time Retry-After named: exactly one new attempt.
	expect502("at the retry time")
	if got := fltAttempts(id); got != 2 {
		t.Fatalf("at the retry time the session had made %d token requests, want 2", got)
	}

	fltStop(e)
	n := seen()
	if n == -1 {
		n = fltAttempts(id)
	} else if n != 2 {
		t.Fatalf("the token endpoint saw %d token requests, want 2", n)
	}
	if e.sim.APICalls(0) != 0 {
		t.Fatalf("%d requests reached API Manager without a token", e.sim.APICalls(0))
	}
	fltLog(t, f.name, http.StatusBadGateway, n, strconv.Itoa(ra), msg, endpoint)
}

// TestFaultExpiresInFallsBackToJWTExp: with expires_in missing, zero,
// negative, not a number or absurdly large, the token's lifetime comes
// from its exp claim, and the proxy serves 200 on the one token.
func TestFaultExpiresInFallsBackToJWTExp(t *testing.T) {
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
			const ttl = 28800 * time.Second
			e, clock := fltEnv(t, func(c *apicsim.Config) { c.TokenTTL = ttl })
			e.sim.FailTokenRequests(1, tc.fault)
			e.mustLoad(fltCaddyfile(e, e.authBlock()))
			start := clock.Now()

			status, _, body := e.do("GET", "/api/me", nil)
			if status != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", status, body)
			}
			cur := fltSession(t, e.simSrv.URL).sess.Current()
			if cur == nil || !cur.Expiry.Equal(start.Add(ttl)) {
				t.Fatalf("token expiry %v, want the exp claim %v", cur, start.Add(ttl))
			}
			// The lifetime is the claim's: an hour on, no new token.
			clock.Advance(time.Hour)
			if status, _, body := e.do("GET", "/api/orgs", nil); status != http.StatusOK {
				t.Fatalf("an hour on: status %d: %s", status, body)
			}
			fltStop(e)
			if got := e.sim.TokenRequests("", ""); got != 1 {
				t.Fatalf("token requests %d, want 1", got)
			}
			fltLog(t, "expires_in_"+tc.name, status, e.sim.TokenRequests("", ""), "",
				"expiry taken from the exp claim: "+cur.Expiry.Format(time.RFC3339), "")
		})
	}
}

// fltLoadRequests is how many answers the load tests wait for before
// and after their fault: APIC_REVOKE_LOAD_REQUESTS, 2000 by default.
func fltLoadRequests(t *testing.T) int {
	t.Helper()
	v := os.Getenv("APIC_REVOKE_LOAD_REQUESTS")
	if v == "" {
		return 2000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("APIC_REVOKE_LOAD_REQUESTS=%q: want a positive number of requests", v)
	}
	return n
}

// fltCountdown closes a channel once it has been counted down n times.
type fltCountdown struct {
	left atomic.Int64
	done chan struct{}
}

func newFltCountdown(n int) *fltCountdown {
	c := &fltCountdown{done: make(chan struct{})}
	c.left.Store(int64(n))
	return c
}

func (c *fltCountdown) count() {
	if c.left.Add(-1) == 0 {
		close(c.done)
	}
}

// fltAwait waits for ch to close. The bound only ends a broken test: it
// then stops the load (stop and wait) and fails.
func fltAwait(t *testing.T, ch <-chan struct{}, what string, stop chan struct{}, wait func()) {
	t.Helper()
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		close(stop)
		wait()
		t.Fatalf("no %s within a minute", what)
	}
}

// fltLoadResult counts what the load clients saw.
type fltLoadResult struct {
	mu       sync.Mutex
	total    int
	byStatus map[int]int
	publish  int
	sample   map[int]string // a body of each non-2xx status
}

// fltLoad runs workers clients, each sending requests back to back (GET
// /api/me, GET /api/orgs, and, when publish is set, a small publish) until
// stop is closed. The returned function waits for them to end. Every
// transport error fails the test.
func fltLoad(t *testing.T, e *testEnv, workers int, publish bool, stop <-chan struct{}, onResponse func(http.Header)) (*fltLoadResult, func()) {
	t.Helper()
	res := &fltLoadResult{byStatus: map[int]int{}, sample: map[int]string{}}
	var body []byte
	var ctype string
	if publish {
		body, ctype = fltMultipart(t, 4<<10, 1)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := (w + i) % 3
				isPublish := publish && k == 2
				var req *http.Request
				switch {
				case k == 0:
					req, _ = http.NewRequest(http.MethodGet, "http://localhost/api/me", nil)
				case !isPublish:
					req, _ = http.NewRequest(http.MethodGet, "http://localhost/api/orgs", nil)
				default:
					req, _ = http.NewRequest(http.MethodPost, "http://localhost/api/catalogs/localtest/sandbox/publish", bytes.NewReader(body))
					req.Header.Set("Content-Type", ctype)
				}
				status, hdr, resp, err := fltSend(e, req)
				if err != nil {
					t.Errorf("load request %s %s: %v", req.Method, req.URL.Path, err)
					return
				}
				if isPublish && status == http.StatusCreated {
					var got struct {
						ReceivedBytes int `json:"received_bytes"`
					}
					if json.Unmarshal(resp, &got) != nil || got.ReceivedBytes != len(body) {
						t.Errorf("publish under load: %s", resp)
					}
				}
				if onResponse != nil {
					onResponse(hdr)
				}
				res.mu.Lock()
				res.total++
				res.byStatus[status]++
				if isPublish {
					res.publish++
				}
				if status/100 != 2 && res.sample[status] == "" {
					res.sample[status] = string(resp)
				}
				res.mu.Unlock()
			}
		}()
	}
	return res, wg.Wait
}

// non2xx returns the count of non-2xx answers and of 401s.
func (r *fltLoadResult) non2xx() (bad, unauthorized int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s, n := range r.byStatus {
		if s/100 != 2 {
			bad += n
		}
	}
	return bad, r.byStatus[http.StatusUnauthorized]
}

// TestFaultRevokeAllUnderLoad: API Manager revokes every token in the
// middle of steady load (reads and small publishes from 8 clients). No
// client sees a 401 or any other error: each refused request is replayed
// with one new token, fetched once for all of them.
func TestFaultRevokeAllUnderLoad(t *testing.T) {
	fltCheckLeaks(t)
	setSecrets(t)
	e := fltNewEnv(t, apicsim.DefaultConfig())
	e.mustLoad(fltCaddyfile(e, e.authBlock()))
	if status, _, body := e.do("GET", "/api/me", nil); status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", status, body)
	}
	id := fltSession(t, e.simSrv.URL)

	// The revocation comes after n answers, and the load ends n answers
	// after it.
	n := fltLoadRequests(t)
	var phase atomic.Pointer[fltCountdown]
	beforeRevoke, afterRevoke := newFltCountdown(n), newFltCountdown(n)
	phase.Store(beforeRevoke)
	stop := make(chan struct{})
	start := time.Now()
	res, wait := fltLoad(t, e, 8, true, stop, func(http.Header) { phase.Load().count() })
	fltAwait(t, beforeRevoke.done, "answers before the revocation", stop, wait)
	res.mu.Lock()
	before := res.total
	res.mu.Unlock()
	phase.Store(afterRevoke)
	e.sim.RevokeAll()
	fltAwait(t, afterRevoke.done, "answers after the revocation", stop, wait)
	close(stop)
	wait()
	d := time.Since(start).Round(time.Millisecond)
	fltStop(e)

	bad, unauthorized := res.non2xx()
	refused := e.sim.APICalls(http.StatusUnauthorized)
	replayed, again := id.replayCount("ok"), id.replayCount("refused_again")
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
	if replayed != uint64(refused) || again != 0 {
		t.Fatalf("API Manager refused %d requests; replays ok %d, refused again %d", refused, replayed, again)
	}
}

// TestFaultLargePublishAcrossRevocation: a 2 MiB publish (known length,
// and chunked) that meets a revoked token is replayed whole; a 20 MiB one,
// above replay_max_body, streams through unbuffered and its 401 reaches
// the client as API Manager sent it.
func TestFaultLargePublishAcrossRevocation(t *testing.T) {
	fltCheckLeaks(t)
	setSecrets(t)
	e := fltNewEnv(t, apicsim.DefaultConfig())
	e.mustLoad(fltCaddyfile(e, e.authBlock()))
	if status, _, body := e.do("GET", "/api/me", nil); status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", status, body)
	}
	id := fltSession(t, e.simSrv.URL)
	const path = "/api/catalogs/localtest/sandbox/publish"

	// 2 MiB with Content-Length, across a revocation: replayed, 201.
	small, ctype := fltMultipart(t, 2<<20, 2)
	e.sim.RevokeAll()
	status, _, body, err := fltPost(e, path, ctype, bytes.NewReader(small), int64(len(small)))
	if err != nil {
		t.Fatal(err)
	}
	fltPublished(t, "2 MiB publish across a revocation", status, body, small)
	if got := e.sim.TokenRequests("password", "ok"); got != 2 {
		t.Fatalf("after the 2 MiB replay: password grants = %d, want 2", got)
	}
	fltLog(t, "publish_2MiB_revoked", status, e.sim.TokenRequests("", ""), "", fmt.Sprintf("replayed: %d bytes, SHA-256 matches", len(small)), "")

	// 20 MiB with Content-Length, across a revocation: the 401 passes.
	big, bigType := fltMultipart(t, 20<<20, 3)
	e.sim.RevokeAll()
	resp, body, writeErr := fltRawPost(t, e, path, bigType, big)
	status = resp.StatusCode
	t.Logf("20 MiB publish: 401 read while the body was being sent; sending it ended with: %v", writeErr)
	if status != http.StatusUnauthorized {
		t.Fatalf("20 MiB publish with a revoked token: status %d, want the 401 passed through: %.300s", status, body)
	}
	if s, msgs := apiError(t, body); s != http.StatusUnauthorized || !strings.Contains(strings.Join(msgs, " "), "revoked") {
		t.Fatalf("20 MiB publish: body %s, want API Manager's 401 about the revoked token", body)
	}
	if got := e.sim.TokenRequests("", ""); got != 2 {
		t.Fatalf("after the 20 MiB 401: token requests = %d, want still 2", got)
	}
	fltLog(t, "publish_20MiB_revoked", status, e.sim.TokenRequests("", ""), "", strings.TrimSpace(string(body)), "")

	// 2 MiB chunked, across a revocation: replayed, 201.
	chunked, chType := fltMultipart(t, 2<<20, 4)
	e.sim.RevokeAll()
	pr, pw := io.Pipe()
	var wrote int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Write in pieces, as a client streaming a file does.
		for off := 0; off < len(chunked); off += 32 << 10 {
			n, err := pw.Write(chunked[off:min(off+32<<10, len(chunked))])
			wrote += n
			if err != nil {
				return
			}
		}
		pw.Close()
	}()
	status, _, body, err = fltPost(e, path, chType, pr, -1)
	pr.Close() // ends the writer should the request have failed
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if wrote != len(chunked) {
		t.Fatalf("the chunked body was sent %d of %d bytes", wrote, len(chunked))
	}
	fltPublished(t, "2 MiB chunked publish across a revocation", status, body, chunked)
	fltLog(t, "publish_2MiB_chunked_revoked", status, e.sim.TokenRequests("", ""), "", fmt.Sprintf("replayed: %d bytes chunked, SHA-256 matches", len(chunked)), "")

	fltStop(e)
	if got := e.sim.TokenRequests("password", "ok"); got != 3 {
		t.Fatalf("password grants = %d, want 3 (start, one per replayed revocation)", got)
	}
	if got, tooLarge := id.replayCount("ok"), id.replayCount("body_too_large"); got != 2 || tooLarge != 0 {
		t.Fatalf("replays ok %d, body too large %d; want 2 and 0 (20 MiB is not even buffered)", got, tooLarge)
	}
	if got := e.sim.APICalls(http.StatusUnauthorized); got != 3 {
		t.Fatalf("API Manager refused %d requests, want 3", got)
	}
}

// TestFaultReloadUnderLoad: the config is reloaded several times, with the
// same identity, while clients keep sending requests. Every request gets
// 200 and the session, with its token, survives every reload.
func TestFaultReloadUnderLoad(t *testing.T) {
	fltCheckLeaks(t)
	setSecrets(t)
	e := fltNewEnv(t, apicsim.DefaultConfig())
	config := func(gen int) string {
		return fltCaddyfile(e, e.authBlock()+fmt.Sprintf("\n\theader X-Gen %d", gen))
	}
	e.mustLoad(config(0))
	if status, _, body := e.do("GET", "/api/me", nil); status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", status, body)
	}

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
	res, wait := fltLoad(t, e, 16, false, stop, onResponse)
	start := time.Now()
	for gen := 0; gen <= reloads; gen++ {
		if gen > 0 {
			if err := e.load(config(gen)); err != nil {
				close(stop)
				wait()
				t.Fatalf("reload %d: %v", gen, err)
			}
		}
		// Wait until the clients are served by this generation.
		fltAwait(t, seen[gen], fmt.Sprintf("response of config generation %d", gen), stop, wait)
	}
	close(stop)
	wait()
	took := time.Since(start)
	fltStop(e)

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
}

// TestFaultClockJumps: the shared clock jumps forward past the token's
// expiry and back by an hour; then the simulator's clock alone moves past
// the expiry, so that API Manager refuses a token the proxy still holds
// valid.
func TestFaultClockJumps(t *testing.T) {
	e, clock := fltEnv(t, nil)
	e.mustLoad(fltCaddyfile(e, e.authBlock()))
	mustOK := func(step string) {
		t.Helper()
		if status, _, body := e.do("GET", "/api/me", nil); status != http.StatusOK {
			t.Fatalf("%s: status %d: %s", step, status, body)
		}
	}
	grants := func() int { return e.sim.TokenRequests("password", "ok") }
	mustOK("start")
	if got := grants(); got != 1 {
		t.Fatalf("start: %d token requests", got)
	}

	// Forward past the expiry: the next request waits for a new token.
	clock.Advance(8*time.Hour + time.Minute)
	mustOK("after jumping 8h01m forward")
	if got := grants(); got != 2 {
		t.Fatalf("after the forward jump: %d token requests, want 2", got)
	}
	fltLog(t, "clock_forward_past_expiry", 200, grants(), "", "new token fetched on the next request", "")

	// Back an hour: the token is still good on both sides.
	clock.Advance(-time.Hour)
	for i := range 5 {
		mustOK(fmt.Sprintf("request %d after jumping an hour back", i))
	}
	if got := grants(); got != 2 {
		t.Fatalf("after the backward jump: %d token requests, want still 2", got)
	}
	fltLog(t, "clock_backward_1h", 200, grants(), "", "token kept", "")

	// API Manager's clock alone moves past the expiry: it answers 401
	// "expired" to a token the proxy holds valid; the proxy replays.
	id := fltSession(t, e.simSrv.URL)
	held := id.sess.Current()
	if !clock.Now().Before(held.RefreshAt) {
		t.Fatalf("the proxy should hold its token as fresh at %s: %s", clock.Now(), held)
	}
	e.sim.Advance(held.Expiry.Sub(e.sim.Now()) + time.Minute)
	// What API Manager now says of the held token, asked directly.
	req, _ := http.NewRequest(http.MethodGet, e.simSrv.URL+"/api/me", nil)
	req.Header["Authorization"] = held.HeaderValues
	resp, err := e.simSrv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	status := resp.StatusCode
	if _, msgs := apiError(t, body); status != http.StatusUnauthorized || !strings.Contains(msgs[0], "expired") {
		t.Fatalf("API Manager answers the held token with %d %s, want 401 expired", status, body)
	}
	mustOK("after the server's clock alone moved past the expiry")
	if got := grants(); got != 3 {
		t.Fatalf("after the server's clock jumped: %d token requests, want 3", got)
	}
	if got := e.sim.APICalls(http.StatusUnauthorized); got != 2 {
		t.Fatalf("API Manager refused %d requests, want 2 (the expired token: asked directly, then through the proxy)", got)
	}
	mustOK("once more")
	if got := grants(); got != 3 {
		t.Fatalf("after the replay: %d token requests, want still 3", got)
	}
	if got := id.replayCount("ok"); got != 1 {
		t.Fatalf("replays = %d, want 1", got)
	}
	fltStop(e)
	if !strings.Contains(e.logText(), "replaying with a new one") {
		t.Fatal("the replay was not logged")
	}
	fltLog(t, "server_clock_alone_past_expiry", 200, grants(), "", "API Manager answered 401 expired; replayed with a new token", "")
}

// TestFaultWrongPasswordLockout: a wrong password under ten simulated
// minutes of steady load (a request a second) against an identity provider
// that locks accounts after a number of failed logins in a row. The
// proxy's cool-down (30 s doubling to 15 min) makes 5 attempts in ten
// minutes, at 0, 30, 90, 210 and 450 s: a lockout after 6 is never reached;
// one after 3 is (README says so), and then the client sees the identity
// provider's own "locked" message while the attempts stay at 5.
func TestFaultWrongPasswordLockout(t *testing.T) {
	for _, tc := range []struct {
		attempts   int
		wantLocked bool
		wantTries  int
	}{
		{attempts: 3, wantLocked: true, wantTries: 5},
		{attempts: 6, wantTries: 5},
	} {
		t.Run(fmt.Sprintf("lockout_after_%d", tc.attempts), func(t *testing.T) {
			e, clock := fltEnv(t, nil)
			t.Setenv("TEST_APIC_PASSWORD", "not-the-pa55word")
			e.sim.SetLockout(tc.attempts, 15*time.Minute)
			e.mustLoad(fltCaddyfile(e, e.authBlock()))

			var firstMsg, lastMsg, lastRA string
			for i := range 600 {
				status, hdr, body := e.do("GET", "/api/me", nil)
				if status != http.StatusBadGateway {
					t.Fatalf("request %d: status %d, want 502: %s", i, status, body)
				}
				_, msgs := apiError(t, body)
				if !strings.Contains(msgs[0], "refused the credentials (password grant): status 401") {
					t.Fatalf("request %d: message %q does not name the refused credentials", i, msgs[0])
				}
				ra, err := strconv.Atoi(hdr.Get("Retry-After"))
				if err != nil || ra < 1 || ra > 900 {
					t.Fatalf("request %d: Retry-After %q", i, hdr.Get("Retry-After"))
				}
				if i == 0 {
					firstMsg = msgs[0]
				}
				lastMsg, lastRA = msgs[0], hdr.Get("Retry-After")
				clock.Advance(time.Second)
			}
			fltStop(e)
			bad := e.sim.TokenRequests("password", apicsim.OutcomeBadCredentials)
			locked := e.sim.TokenRequests("password", apicsim.OutcomeLocked)
			all := e.sim.TokenRequests("", "")
			name := fmt.Sprintf("wrong_password_lockout_after_%d", tc.attempts)
			fltLog(t, name, http.StatusBadGateway, all, lastRA, lastMsg, e.simSrv.URL+"/api/token")
			t.Logf("fault=%s bad_credentials=%d locked=%d first_message=%s", name, bad, locked, firstMsg)
			if all != tc.wantTries {
				t.Fatalf("token requests in ten minutes = %d, want %d (cool-down 30, 60, 120, 240 s)", all, tc.wantTries)
			}
			switch {
			case !tc.wantLocked && (bad >= tc.attempts || locked != 0):
				t.Fatalf("the account was locked: %d refused logins (lockout after %d), then %d answered locked", bad, tc.attempts, locked)
			case tc.wantLocked && (bad != tc.attempts || locked != tc.wantTries-tc.attempts || !strings.Contains(lastMsg, "locked")):
				t.Fatalf("bad_credentials=%d locked=%d last message %q, want %d, %d and the identity provider's locked message",
					bad, locked, lastMsg, tc.attempts, tc.wantTries-tc.attempts)
			}
		})
	}
}
