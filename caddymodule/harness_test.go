package caddymodule

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// testEnv is a client of a unix socket for a Caddy that the test runs in
// this process. The end-to-end suites, with a real process of the binary,
// are in package e2e.
type testEnv struct {
	t      *testing.T
	sock   string
	client *http.Client
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	e := &testEnv{t: t}
	// Unix socket paths are short-limited: keep them out of t.TempDir.
	dir, err := os.MkdirTemp("", "aap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.sock = filepath.Join(dir, "proxy.sock")
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", e.sock)
		},
	}
	t.Cleanup(transport.CloseIdleConnections)
	e.client = &http.Client{Transport: transport, Timeout: 30 * time.Second}
	return e
}

// do sends a request to the unix socket and returns the status, headers
// and body.
func (e *testEnv) do(method, path string, hdr http.Header) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://localhost"+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}
