package guard

import (
	"strings"
	"testing"
)

// TestGuardOptionErrors: each option names itself and what it wants, and
// allowed values are normalised.
func TestGuardOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		h    Options
		want string
	}{
		{Options{AllowedHosts: []string{"https://proxy.example"}}, "allowed_hosts: want a host name or IP address"},
		{Options{AllowedHosts: []string{"proxy.example:9080"}}, "allowed_hosts: want a host name or IP address"},
		{Options{AllowedOrigins: []string{"null"}}, "allowed_origins: want an origin such as https://tools.example.com"},
		{Options{AllowedOrigins: []string{"*"}}, "allowed_origins:"},
		{Options{AllowedOrigins: []string{"https://tools.example.com/app"}}, "allowed_origins:"},
		{Options{RequireHeader: "X Bad"}, "require_header: want a header name"},
		{Options{Paths: []string{"api/"}}, "paths: want a path prefix such as /api/"},
	} {
		_, err := New(tc.h)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.h, err, tc.want)
		}
	}
	g, err := New(Options{AllowedHosts: []string{"Proxy.Tools.Svc.", "[::2]"}, AllowedOrigins: []string{"HTTPS://Tools.Example.com"}, Paths: []string{"/API"}})
	if err != nil {
		t.Fatal(err)
	}
	if !g.hosts["proxy.tools.svc"] || !g.hosts["::2"] || !g.origins["https://tools.example.com"] || g.paths[0] != "/api/" {
		t.Fatalf("guard %+v", g)
	}
}

// TestHostAllowed: loopback and the allowed host pass on any port, in any
// spelling of the address; anything after the host that is not a port
// refuses the Host.
func TestHostAllowed(t *testing.T) {
	g, err := New(Options{AllowedHosts: []string{"proxy.tools.svc"}})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"127.0.0.1:9080": true, "localhost": true, "localhost:": true, "[::1]:9080": true, "[::01]": true,
		"PROXY.tools.svc:80": true, "127.0.0.1": true,
		"[::01]:[": false, "localhost:abc": false, "127.0.0.1:9080:x": false, "evil.example": false,
		"proxy.tools.svc.evil:80": false, "": false,
	} {
		if got := g.hostAllowed(host); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
}
