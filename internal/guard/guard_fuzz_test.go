package guard

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzGuard feeds the Host, Origin and path checks arbitrary values: none
// panics, an allowed Host names loopback or the allowed host, an allowed
// browser request has the allowed origin, and a path that passes has no
// dot-segment, backslash or encoded slash in any of three decodings.
func FuzzGuard(f *testing.F) {
	for _, s := range [][3]string{
		{"127.0.0.1:9080", "", "/api/me"},
		{"evil.example", "https://evil.example", "/api/..%2f..%2fother"},
		{"localhost.evil.example", "null", "/api/%2e%2e/x"},
		{"[::1]:9080", "https://tools.example.com", "/api/%252e%252e/x"},
		{"proxy.tools.svc", "HTTPS://TOOLS.EXAMPLE.COM", "/api/..;/x"},
		{"LOCALHOST.", "", `/api/a\b`},
		{"[::ffff:127.0.0.1]", "", "/api//me/sign-out/"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	g, err := New(Options{AllowedHosts: []string{"proxy.tools.svc"}, AllowedOrigins: []string{"https://tools.example.com"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, host, origin, target string) {
		r := &http.Request{Method: "GET", Host: host, Header: http.Header{}, URL: &url.URL{Path: "/"}}
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		allowedOrigin, ref := g.CheckCaller(r)
		if ref == nil {
			h := strings.ToLower(host)
			if !strings.Contains(h, "localhost") && !strings.Contains(h, "proxy.tools.svc") &&
				!strings.Contains(h, "127.") && !strings.Contains(h, "::1") && !strings.Contains(h, "::ffff:7f") &&
				!loopbackLiteral(h) {
				t.Fatalf("host %q allowed", host)
			}
			if origin != "" && !strings.EqualFold(allowedOrigin, "https://tools.example.com") {
				t.Fatalf("origin %q allowed as %q", origin, allowedOrigin)
			}
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		if fast, ok := plainPath(u); ok {
			if slow, err := checkedPath(u); err != nil || slow != fast {
				t.Fatalf("path %q: fast path %q, checked path %q, %v", target, fast, slow, err)
			}
		}
		routed, err := RoutedPath(u)
		if err != nil {
			return
		}
		cur := u.EscapedPath()
		for range 3 {
			low := strings.ToLower(cur)
			if strings.Contains(cur, `\`) || strings.Contains(low, "%2f") || strings.Contains(low, "%5c") {
				t.Fatalf("path %q passed with %q", target, cur)
			}
			for _, seg := range strings.Split(cur, "/") {
				if seg, _, _ = strings.Cut(seg, ";"); seg == "." || seg == ".." {
					t.Fatalf("path %q passed with a dot-segment in %q", target, cur)
				}
			}
			next, err := url.PathUnescape(cur)
			if err != nil || next == cur {
				break
			}
			cur = next
		}
		if g.PathAllowed(routed) && !strings.HasPrefix(routed+"/", "/api/") {
			t.Fatalf("path %q routed as %q is outside /api/", target, routed)
		}
	})
}

// loopbackLiteral reports whether host (with or without a port) is an IP
// address literal of loopback in any spelling net.ParseIP takes, such as
// [::01]: the fuzz target's own reading, independent of the guard's.
func loopbackLiteral(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return ip != nil && ip.IsLoopback()
}
