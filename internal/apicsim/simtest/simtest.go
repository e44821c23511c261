// Package simtest starts the API Connect simulator for tests: made from
// DefaultConfig and the test's changes, served on a loopback port over
// HTTP or TLS with every answer checked against IBM's Provider API
// document (package conformance), and closed when the test ends. A test
// that wants a fake clock passes a change that sets Config.Now. APIError
// reads API Connect's error shape back, as the simulator and the proxy
// write it.
package simtest

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/conformance"
)

// New makes a simulator with DefaultConfig changed by changes, in order,
// and serves it nowhere: for a test that wraps it in a handler of its own
// or calls it in process. It fails the test if the config is invalid.
func New(t testing.TB, changes ...func(*apicsim.Config)) *apicsim.Server {
	t.Helper()
	cfg := apicsim.DefaultConfig()
	for _, change := range changes {
		change(&cfg)
	}
	sim, err := apicsim.New(cfg)
	if err != nil {
		t.Fatalf("apicsim.New: %v", err)
	}
	return sim
}

// Start makes a simulator as New does and serves it over HTTP on a
// loopback port until the test ends. Every answer is checked against IBM's
// Provider API document as package conformance restates it: each
// mismatch fails the test when it ends (see checked).
func Start(t testing.TB, changes ...func(*apicsim.Config)) (*apicsim.Server, *httptest.Server) {
	t.Helper()
	sim := New(t, changes...)
	ts := httptest.NewUnstartedServer(Checked(t, sim))
	ts.Start()
	t.Cleanup(ts.Close)
	return sim, ts
}

// Checked wraps sim in a conformance checker, for a test that serves the
// simulator in a handler of its own. When the test ends (after the
// servers it closes at its end, so after every answer), each mismatch is
// an error of the test, and the checker's report is appended to the file
// that APICSIM_CONFORMANCE_LOG names, if any.
func Checked(t testing.TB, sim *apicsim.Server) http.Handler {
	t.Helper()
	c, err := conformance.Load()
	if err != nil {
		t.Fatalf("conformance: %v", err)
	}
	t.Cleanup(func() {
		for _, m := range c.Mismatches() {
			t.Errorf("the simulator's answer departs from IBM's Provider API document: %s", m)
		}
		if n := c.Counts(); n.Mismatches > len(c.Mismatches()) {
			t.Errorf("%d mismatches in all", n.Mismatches)
		}
		if file := os.Getenv(conformance.LogEnv); file != "" {
			r := c.Report()
			r.Test = t.Name()
			if err := conformance.AppendLog(file, r); err != nil {
				t.Error(err)
			}
		}
	})
	return c.Wrap(sim)
}

// StartTLS makes a simulator as New does and serves it over TLS on a
// loopback port until the test ends, with a server certificate for hosts
// from apicsim.NewCertificates, which it returns for the client to trust
// (CAPEM) or not. The server's error log is discarded: the handshakes
// that clients refuse are what such tests are about.
func StartTLS(t testing.TB, hosts []string, changes ...func(*apicsim.Config)) (*apicsim.Server, *httptest.Server, *apicsim.Certificates) {
	t.Helper()
	certs, err := apicsim.NewCertificates(hosts...)
	if err != nil {
		t.Fatalf("apicsim.NewCertificates: %v", err)
	}
	sim := New(t, changes...)
	ts := httptest.NewUnstartedServer(Checked(t, sim))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{certs.Server}, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return sim, ts, certs
}

// APIError decodes API Connect's error body, {"status": <int>, "message":
// [<string>, ...]} with an optional "errors" array and nothing else, and
// fails the test if the body is not of that shape.
func APIError(t testing.TB, body []byte) (int, []string) {
	t.Helper()
	var e struct {
		Status  *int     `json:"status"`
		Message []string `json:"message"`
		Errors  []string `json:"errors"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Status == nil || len(e.Message) == 0 {
		t.Fatalf("body is not API Connect's error shape (%v): %s", err, body)
	}
	return *e.Status, e.Message
}
