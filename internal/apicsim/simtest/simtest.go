// Package simtest starts the API Connect simulator for tests: on a
// loopback port, with a settable clock that the code under test can share.
package simtest

import (
	"net/http/httptest"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/testclock"
)

// Env is a running simulator.
type Env struct {
	Sim   *apicsim.Server
	TS    *httptest.Server
	Clock *testclock.Clock
}

// Start runs a simulator with DefaultConfig on clock, changed by changes.
// It is closed when the test ends.
func Start(t testing.TB, clock *testclock.Clock, changes ...func(*apicsim.Config)) *Env {
	t.Helper()
	cfg := apicsim.DefaultConfig()
	cfg.Now = clock.Now
	for _, c := range changes {
		c(&cfg)
	}
	sim, err := apicsim.New(cfg)
	if err != nil {
		t.Fatalf("apicsim.New: %v", err)
	}
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	return &Env{Sim: sim, TS: ts, Clock: clock}
}
