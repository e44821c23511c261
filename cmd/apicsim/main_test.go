package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// logBuffer collects the simulator's log, written from many goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// started is a run of the command in the background.
type started struct {
	addr string
	logs *logBuffer
	stop func() error // cancels run and returns what it returned
}

// startRun runs the command with args (plus -listen 127.0.0.1:0 unless
// args name an address) and waits until it listens.
func startRun(t *testing.T, args ...string) *started {
	t.Helper()
	if !strings.Contains(strings.Join(args, " "), "-listen") {
		args = append([]string{"-listen", "127.0.0.1:0"}, args...)
	}
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, args, log.New(logs, "", 0), func(a net.Addr) { addrc <- a.String() })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-errc:
		cancel()
		t.Fatalf("run %v returned before listening: %v\n%s", args, err, logs)
	}
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-errc
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return &started{addr: addr, logs: logs, stop: stop}
}

// runFails runs the command with args, expecting it to fail before
// serving, and returns the log and the error.
func runFails(t *testing.T, args ...string) (string, error) {
	t.Helper()
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := false
	err := run(ctx, args, log.New(logs, "", 0), func(net.Addr) { listening = true; cancel() })
	if listening {
		t.Fatalf("run %v started serving, want an error", args)
	}
	return logs.String(), err
}

func post(t *testing.T, c *http.Client, url string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := c.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &m)
	return resp.StatusCode, m
}

func getStatus(t *testing.T, c *http.Client, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

var devLogin = map[string]string{
	"grant_type": "password", "username": apicsim.DefaultProviderUsername, "password": apicsim.DefaultProviderPassword,
	"realm": apicsim.DefaultProviderRealm, "client_id": apicsim.DefaultClientID, "client_secret": apicsim.DefaultClientSecret,
}

func TestRunDefaults(t *testing.T) {
	s := startRun(t)
	status, m := post(t, http.DefaultClient, "http://"+s.addr+"/api/token", devLogin)
	if status != 200 || m["expires_in"] != float64(28800) {
		t.Fatalf("token: %d %v, want 200 with expires_in 28800", status, m)
	}
	if _, ok := m["refresh_token"]; ok {
		t.Error("refresh_token without -refresh-tokens")
	}
	if err := s.stop(); err != nil {
		t.Errorf("run after cancel: %v, want nil", err)
	}
	if _, err := http.Get("http://" + s.addr + "/api/cloud/admin/identity-providers"); err == nil {
		t.Error("server still answers after run returned")
	}
	if !strings.Contains(s.logs.String(), "API Connect simulator on http://"+s.addr+" (token TTL 8h0m0s, refresh tokens false)") {
		t.Errorf("startup line missing:\n%s", s.logs)
	}
}

func TestRunFlags(t *testing.T) {
	s := startRun(t, "-token-ttl", "90s", "-refresh-tokens", "-refresh-ttl", "1h", "-quiet")
	status, m := post(t, http.DefaultClient, "http://"+s.addr+"/api/token", devLogin)
	if status != 200 || m["expires_in"] != float64(90) || m["refresh_expires_in"] != float64(3600) {
		t.Fatalf("token: %d %v, want expires_in 90 and refresh_expires_in 3600", status, m)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	// -quiet: the startup lines but no request lines.
	if logs := s.logs.String(); strings.Contains(logs, "/api/token") || !strings.Contains(logs, "token TTL 1m30s, refresh tokens true") {
		t.Errorf("with -quiet the log is:\n%s", logs)
	}
}

func TestRunConfigFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "sim.yaml")
	if err := os.WriteFile(good, []byte("token_ttl: 120\nusers:\n  - {username: alice, password: wonder, realm: provider/default-idp-2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startRun(t, "-config", good)
	alice := map[string]string{"grant_type": "password", "username": "alice", "password": "wonder", "realm": "provider/default-idp-2", "client_id": apicsim.DefaultClientID, "client_secret": apicsim.DefaultClientSecret}
	if status, m := post(t, http.DefaultClient, "http://"+s.addr+"/api/token", alice); status != 200 || m["expires_in"] != float64(120) {
		t.Errorf("alice: %d %v, want 200 with expires_in 120", status, m)
	}
	if status, _ := post(t, http.DefaultClient, "http://"+s.addr+"/api/token", devLogin); status != 401 {
		t.Errorf("built-in developer with a users list: %d, want 401", status)
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("tokens_ttl: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	for _, tc := range []struct {
		name     string
		args     []string
		contains string
	}{
		{"unknown flag", []string{"-nope"}, "flag provided but not defined"},
		{"bad duration", []string{"-token-ttl", "soon"}, "invalid value"},
		{"bad config file", []string{"-config", bad}, "tokens_ttl"},
		{"missing config file", []string{"-config", filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{"address in use", []string{"-listen", busy.Addr().String()}, "address already in use"},
		{"unwritable CA file", []string{"-listen", "127.0.0.1:0", "-tls", "-ca-out", filepath.Join(dir, "no", "such", "ca.pem")}, "ca.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs, err := runFails(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("run %v: error %v, want one mentioning %q\nlog:\n%s", tc.args, err, tc.contains, logs)
			}
		})
	}
}

// TestRunHelp checks that -h and --help print the usage and return no
// error (so the command exits 0) without serving.
func TestRunHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		logs, err := runFails(t, arg)
		if err != nil {
			t.Errorf("run %s: %v, want no error", arg, err)
		}
		for _, want := range []string{"Usage: apicsim [flags]", "-listen", "-token-ttl", apicsim.DefaultAdminRealm} {
			if !strings.Contains(logs, want) {
				t.Errorf("run %s printed %q, want it to hold %q", arg, logs, want)
			}
		}
	}
}

func TestRunTLS(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	s := startRun(t, "-tls", "-ca-out", caFile)
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("CA file: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA file holds no certificate:\n%s", caPEM)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	trusting := &http.Client{Transport: tr}

	status, m := post(t, trusting, "https://"+s.addr+"/api/token", devLogin)
	if status != 200 {
		t.Fatalf("token over https: %d %v", status, m)
	}
	if got := getStatus(t, trusting, "https://"+s.addr+"/api/me", m["access_token"].(string)); got != 200 {
		t.Errorf("/api/me over https: %d", got)
	}

	plain := &http.Client{Transport: &http.Transport{}}
	_, err = plain.Get("https://" + s.addr + "/api/cloud/admin/identity-providers")
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Errorf("client without the CA: %v, want an unknown authority error", err)
	}
	logs := s.logs.String()
	for _, want := range []string{"certificate authority written to " + caFile, "API Connect simulator on https://" + s.addr} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestRunLogsRequestsWithoutSecrets(t *testing.T) {
	s := startRun(t)
	base := "http://" + s.addr
	_, m := post(t, http.DefaultClient, base+"/api/token", devLogin)
	tok := m["access_token"].(string)
	getStatus(t, http.DefaultClient, base+"/api/me?fields=name", tok)
	getStatus(t, http.DefaultClient, base+"/api/me", "not-a-token")
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	logs := s.logs.String()
	var reqLines []string
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		if strings.HasPrefix(l, "GET ") || strings.HasPrefix(l, "POST ") {
			reqLines = append(reqLines, l)
		}
	}
	wantPrefixes := []string{"POST /api/token 200 ", "GET /api/me 200 ", "GET /api/me 401 "}
	if len(reqLines) != len(wantPrefixes) {
		t.Fatalf("request lines %q, want %d", reqLines, len(wantPrefixes))
	}
	for i, p := range wantPrefixes {
		if !strings.HasPrefix(reqLines[i], p) {
			t.Errorf("line %d %q, want it to start %q", i, reqLines[i], p)
		}
	}
	for _, secret := range []string{tok, tok[:40], "not-a-token", "Bearer", "Authorization", apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret, "fields=name"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q:\n%s", secret, logs)
		}
	}
}

func TestRunReleasesPortOnError(t *testing.T) {
	// Find a free loopback port, then make run fail after it has listened
	// on it: the port must be free again afterwards.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := runFails(t, "-listen", addr, "-tls", "-ca-out", filepath.Join(t.TempDir(), "no", "ca.pem")); err == nil {
		t.Fatal("run with an unwritable CA file: no error")
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still held after run failed: %v", err)
	}
	ln.Close()
}

func TestRunTLSHosts(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	s := startRun(t, "-tls", "-ca-out", caFile, "-tls-hosts", "otherhost")
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	_, err = (&http.Client{Transport: tr}).Get("https://" + s.addr + "/api/cloud/admin/identity-providers")
	var he x509.HostnameError
	if !errors.As(err, &he) {
		t.Errorf("certificate for otherhost at %s: %v, want a hostname error", s.addr, err)
	}
}

func TestRunConformance(t *testing.T) {
	s := startRun(t, "-conformance")
	base := "http://" + s.addr
	status, m := post(t, http.DefaultClient, base+"/api/token", devLogin)
	if status != 200 {
		t.Fatalf("token: %d %v", status, m)
	}
	if got := getStatus(t, http.DefaultClient, base+"/api/me", m["access_token"].(string)); got != 200 {
		t.Fatalf("GET /api/me: %d", got)
	}
	resp, err := http.Get(base + "/_sim/conformance")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Counts struct {
			Operations, Answers, Mismatches int
		} `json:"counts"`
		Served []string `json:"served"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.Counts.Answers != 2 || r.Counts.Mismatches != 0 || !slices.Equal(r.Served, []string{"me_singletonGet", "oauth2_token"}) {
		t.Errorf("report %+v", r)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
}
