package e2e

// Every error the proxy itself answers, when API Manager fails after the
// token was obtained, has API Connect's error body: reverse_proxy's empty
// 502 and 504 never reach the client.

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// checkProxyError checks an answer of the proxy to a failure of API
// Manager: status, API Connect's error body with want as its message, and
// the log: one entry of apic_auth at the level Caddy logs a 5xx at, none
// of Caddy's own for the request. It stops the proxy to read its whole log.
func checkProxyError(t *testing.T, e *env, status int, hdr http.Header, body []byte, wantStatus int, want string) {
	t.Helper()
	if status != wantStatus || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q, body %q; want %d with API Connect's error body", status, hdr.Get("Content-Type"), body, wantStatus)
	}
	gotStatus, msg := simtest.APIError(t, body)
	e.stop()
	if gotStatus != wantStatus || len(msg) != 1 || msg[0] != want {
		t.Fatalf("body %s, want status %d and message %q; the log:\n%s", body, wantStatus, want, e.logText())
	}
	var logged int
	for line := range strings.Lines(e.logText()) {
		var entry struct {
			Level, Logger, Msg, Message string
			Status                      int
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		switch {
		case entry.Msg == "proxying failed; answered with API Connect's error body":
			logged++
			if entry.Level != "error" || entry.Status != wantStatus || entry.Message != want || entry.Logger != "http.handlers.apic_auth" {
				t.Errorf("log entry %s", line)
			}
		case entry.Logger == "http.log.error", strings.Contains(line, "superfluous"):
			t.Errorf("Caddy handled the error itself: %s", line)
		}
	}
	if logged != 1 {
		t.Errorf("%d log entries of the failure, want 1:\n%s", logged, e.logText())
	}
}

func TestBodyUpstreamDownAfterLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The request after the stop then dials anew; one on a kept-alive
	// connection could go out as the close arrives, and be answered
	// "closed the connection before answering".
	e.upSrv.Config.SetKeepAlivesEnabled(false)
	e.mustOK("/api/me", "before API Manager goes down")
	e.stopUpstream()
	status, hdr, body := e.do("GET", "/api/orgs", nil)
	host := strings.TrimPrefix(e.simURL, "http://")
	checkProxyError(t, e, status, hdr, body, http.StatusBadGateway, "apic_auth: API Manager at "+host+" is unreachable: connection refused")
}

func TestBodyUpstreamTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withCaddyfile(func(e *env) string {
		return e.caddyfileSite(e.authBlock() + `
	reverse_proxy ` + e.simURL + ` {
		transport http {
			response_header_timeout 200ms
		}
	}`)
	}))
	e.mustOK("/api/me", "before API Manager hangs")
	// API Manager hangs until the proxy gives up on the request.
	e.beforeAPI(func(r *http.Request) {
		if r.URL.Path == "/api/orgs" {
			<-r.Context().Done()
		}
	})
	status, hdr, body := e.do("GET", "/api/orgs", nil)
	host := strings.TrimPrefix(e.simURL, "http://")
	checkProxyError(t, e, status, hdr, body, http.StatusGatewayTimeout, "apic_auth: API Manager at "+host+" did not answer in time")
}

// TestBodyUploadCutByUpstream: a chunked upload whose first chunk API
// Manager reads before it drops the connection. The proxy learns of it
// when it has the next chunk to send (a transport cannot give up a read
// of the request body), so the client sends more until it is answered.
func TestBodyUploadCutByUpstream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustOK("/api/me", "before the upload")
	got := make(chan struct{})
	e.beforeAPI(func(r *http.Request) {
		if r.URL.Path != "/api/cut" {
			return
		}
		if _, err := io.ReadAtLeast(r.Body, make([]byte, 5), 5); err != nil {
			t.Errorf("upstream reading the upload: %v", err)
		}
		close(got)
		panic(http.ErrAbortHandler) // net/http drops the connection unanswered
	})
	conn, err := net.Dial("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(awaitBound))
	if _, err := io.WriteString(conn, "POST /api/cut HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"); err != nil {
		t.Fatal(err)
	}
	<-got
	stop, wrote := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(wrote)
		chunk := "400\r\n" + strings.Repeat("x", 0x400) + "\r\n"
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := io.WriteString(conn, chunk); err != nil {
				return // the proxy closed the connection after its answer
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to the cut upload: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	close(stop)
	conn.Close()
	<-wrote
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(e.simURL, "http://")
	checkProxyError(t, e, resp.StatusCode, resp.Header, body, http.StatusBadGateway, "apic_auth: API Manager at "+host+" closed the connection before answering")
}

// TestBodyClientCancelIsNoError: a client that gives up while API Manager
// is slow gets no answer, and the log has no error for it.
func TestBodyClientCancelIsNoError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustOK("/api/me", "before the slow call")
	arrived := make(chan struct{})
	e.beforeAPI(func(r *http.Request) {
		if r.URL.Path == "/api/orgs" {
			close(arrived)
			<-r.Context().Done()
		}
	})
	conn, err := net.Dial("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET /api/orgs HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-arrived
	conn.Close()
	e.stop() // waits for the request's end
	logs := e.logText()
	for line := range strings.Lines(logs) {
		if strings.Contains(line, `"level":"error"`) || strings.Contains(line, "proxying failed") {
			t.Errorf("the client's cancellation was logged as an error: %s", line)
		}
	}
}
