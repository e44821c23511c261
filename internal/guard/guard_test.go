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
