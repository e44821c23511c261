package caddymodule

import "testing"

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
