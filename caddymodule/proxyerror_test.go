package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// transportError is what an http.Transport returns for a request to url
// with the given response header timeout: the error reverse_proxy wraps.
func transportError(t *testing.T, url string, timeout time.Duration) error {
	t.Helper()
	tr := &http.Transport{ResponseHeaderTimeout: timeout}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", url, nil)
	resp, err := tr.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET %s succeeded", url)
	}
	return err
}

// TestProxyErrorsGetAPIConnectBody checks the body the client gets for
// each error a handler after apic_auth can return before it wrote
// anything, and that the handler then returns nil (Caddy writes nothing
// of its own).
func TestProxyErrorsGetAPIConnectBody(t *testing.T) {
	_, srv := simtest.Start(t)
	h := simHandler(srv.URL)
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "http://")

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()
	refused := transportError(t, closedURL, 0)

	hang := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	defer hanging.Close()
	defer close(hang)
	timeout := transportError(t, hanging.URL, 50*time.Millisecond)

	hangup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	defer hangup.Close()
	cut := transportError(t, hangup.URL, 0)

	for _, tc := range []struct {
		name   string
		err    error
		status int
		want   string
	}{
		{"connection refused", caddyhttp.Error(http.StatusBadGateway, refused), 502, "apic_auth: API Manager at " + host + " is unreachable: connection refused"},
		{"timeout", caddyhttp.Error(http.StatusGatewayTimeout, timeout), 504, "apic_auth: API Manager at " + host + " did not answer in time"},
		{"connection closed", caddyhttp.Error(http.StatusBadGateway, cut), 502, "apic_auth: API Manager at " + host + " closed the connection before answering"},
		{"unknown cause", caddyhttp.Error(http.StatusBadGateway, errors.New("dial tcp 10.9.8.7:443: something new")), 502, "apic_auth: API Manager at " + host + " could not be reached"},
		{"no upstream", caddyhttp.Error(http.StatusServiceUnavailable, errors.New("no upstreams available")), 503, "apic_auth: API Manager at " + host + " could not be reached"},
		{"4xx", caddyhttp.Error(http.StatusRequestEntityTooLarge, errors.New("http: request body too large")), 413, "apic_auth: the request could not be forwarded: Request Entity Too Large"},
		{"plain error", fmt.Errorf("template: open /srv/secret/path: denied"), 500, "apic_auth: the request could not be forwarded: Internal Server Error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := h.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/api/orgs", nil), caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Length", "12345") // as if an upstream's headers were set
				return tc.err
			}))
			if err != nil {
				t.Fatalf("ServeHTTP returned %v, want nil after writing the body", err)
			}
			if rec.Code != tc.status || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Content-Length") != "" {
				t.Fatalf("status %d, headers %v", rec.Code, rec.Header())
			}
			status, msg := simtest.APIError(t, rec.Body.Bytes())
			if status != tc.status || len(msg) != 1 || msg[0] != tc.want {
				t.Fatalf("body %s, want status %d and message %q", rec.Body, tc.status, tc.want)
			}
			for _, leak := range []string{"10.9.8.7", "/srv/secret", closed.Addr().String(), "dial", "tcp"} {
				if strings.Contains(msg[0], leak) {
					t.Errorf("message %q shows %q", msg[0], leak)
				}
			}
		})
	}
}

// TestProxyErrorsPassedOn checks the errors that keep Caddy's handling:
// a response already under way, a client that has gone, and a site with
// handle_errors routes.
func TestProxyErrorsPassedOn(t *testing.T) {
	_, srv := simtest.Start(t)
	h := simHandler(srv.URL)
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	upstreamErr := caddyhttp.Error(http.StatusBadGateway, io.ErrUnexpectedEOF)

	t.Run("response under way", func(t *testing.T) {
		rec := httptest.NewRecorder()
		err := h.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/api/orgs", nil), caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(`{"total_results":`))
			return upstreamErr
		}))
		if !errors.Is(err, io.ErrUnexpectedEOF) || rec.Code != 200 || rec.Body.String() != `{"total_results":` {
			t.Fatalf("error %v, status %d, body %q", err, rec.Code, rec.Body)
		}
	})
	t.Run("client gone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "http://localhost/api/orgs", nil)
		// The token is held: the request reaches the next handler.
		if err := h.ServeHTTP(httptest.NewRecorder(), req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })); err != nil {
			t.Fatal(err)
		}
		gone := caddyhttp.Error(statusClientClosedRequest, context.Canceled)
		err := h.ServeHTTP(rec, req.WithContext(ctx), caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return gone }))
		var he caddyhttp.HandlerError
		if !asHandlerError(err, &he) || he.StatusCode != statusClientClosedRequest || rec.Body.Len() != 0 {
			t.Fatalf("error %v, body %q; want the 499 passed on and no body", err, rec.Body)
		}
	})
	t.Run("handle_errors", func(t *testing.T) {
		srvWithRoutes := &caddyhttp.Server{Errors: &caddyhttp.HTTPErrorConfig{Routes: caddyhttp.RouteList{{}}}}
		req := httptest.NewRequest("GET", "http://localhost/api/orgs", nil)
		req = req.WithContext(context.WithValue(req.Context(), caddyhttp.ServerCtxKey, srvWithRoutes))
		rec := httptest.NewRecorder()
		err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return upstreamErr }))
		if !errors.Is(err, io.ErrUnexpectedEOF) || rec.Body.Len() != 0 {
			t.Fatalf("error %v, body %q; want the error for handle_errors", err, rec.Body)
		}
	})
}
