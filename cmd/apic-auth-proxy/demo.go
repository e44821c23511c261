package main

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/apic-tools/apic-auth-proxy/caddymodule"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

func init() { caddymodule.Demo = startDemoSimulator }

// startDemoSimulator serves the API Connect simulator on a loopback port
// for the life of the process, and proxies to it as its Cloud Manager
// user.
func startDemoSimulator() (caddymodule.DemoTarget, error) {
	sim, err := apicsim.New(apicsim.DefaultConfig())
	if err != nil {
		return caddymodule.DemoTarget{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return caddymodule.DemoTarget{}, fmt.Errorf("starting the demo simulator: %v", err)
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return caddymodule.DemoTarget{
		Server: "http://" + ln.Addr().String(),
		Realm:  apicsim.DefaultAdminRealm, Username: apicsim.DefaultAdminUsername, Password: apicsim.DefaultAdminPassword,
		ClientID: apicsim.DefaultClientID, ClientSecret: apicsim.DefaultClientSecret,
	}, nil
}
