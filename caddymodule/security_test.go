package caddymodule

import (
	"strings"
	"testing"
)

// The end-to-end security suite is in package e2e (security_test.go);
// these test the checks behind it directly.

func TestPlainHTTPWarning(t *testing.T) {
	for server, want := range map[string]bool{
		"http://apim.example.com": true, "http://10.1.2.3:9443": true,
		"http://127.0.0.1:2000": false, "http://localhost": false, "http://[::1]:80": false,
		"https://apim.example.com": false,
	} {
		if got := plainHTTPBeyondLoopback(server); got != want {
			t.Errorf("plainHTTPBeyondLoopback(%q) = %v", server, got)
		}
	}
	for listen, want := range map[string]bool{
		":9080": true, "0.0.0.0:9080": true, "tcp/10.0.0.1:9080": true, "[::]:9080": true,
		"127.0.0.1:9080": false, "localhost:9080": false, "[::1]:9080": false, "unix//run/p.sock|0600": false,
	} {
		if got := beyondLoopback(listen); got != want {
			t.Errorf("beyondLoopback(%q) = %v", listen, got)
		}
	}
}

func TestGuardOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		h    Handler
		want string
	}{
		{Handler{AllowedHosts: []string{"https://proxy.example"}}, "allowed_hosts: want a host name or IP address"},
		{Handler{AllowedHosts: []string{"proxy.example:9080"}}, "allowed_hosts: want a host name or IP address"},
		{Handler{AllowedOrigins: []string{"null"}}, "allowed_origins: want an origin such as https://tools.example.com"},
		{Handler{AllowedOrigins: []string{"*"}}, "allowed_origins:"},
		{Handler{AllowedOrigins: []string{"https://tools.example.com/app"}}, "allowed_origins:"},
		{Handler{RequireHeader: "X Bad"}, "require_header: want a header name"},
		{Handler{Paths: []string{"api/"}}, "paths: want a path prefix such as /api/"},
	} {
		_, err := newGuard(&tc.h)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.h, err, tc.want)
		}
	}
	g, err := newGuard(&Handler{AllowedHosts: []string{"Proxy.Tools.Svc.", "[::2]"}, AllowedOrigins: []string{"HTTPS://Tools.Example.com"}, Paths: []string{"/API"}})
	if err != nil {
		t.Fatal(err)
	}
	if !g.hosts["proxy.tools.svc"] || !g.hosts["::2"] || !g.origins["https://tools.example.com"] || g.paths[0] != "/api/" {
		t.Fatalf("guard %+v", g)
	}
}
