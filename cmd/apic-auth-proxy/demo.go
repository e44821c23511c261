package main

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/apic-tools/apic-auth-proxy/caddymodule"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

func init() { caddymodule.Demo = startDemoSimulator }

// startDemoSimulator serves the API Connect simulator on a loopback port
// for the life of the process, and proxies to it as its user of realm:
// the Cloud Manager user when realm is "".
func startDemoSimulator(realm string) (caddymodule.DemoTarget, error) {
	cfg := apicsim.DefaultConfig()
	if realm == "" {
		realm = apicsim.DefaultAdminRealm
	}
	i := slices.IndexFunc(cfg.Users, func(u apicsim.User) bool { return u.Realm == realm })
	if i < 0 {
		var have []string
		for _, u := range cfg.Users {
			have = append(have, u.Realm+" ("+u.Username+")")
		}
		return caddymodule.DemoTarget{}, fmt.Errorf("--demo --realm: the simulator has no user in realm %q; it has %s", realm, strings.Join(have, " and "))
	}
	user := cfg.Users[i]
	sim, err := apicsim.New(cfg)
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
		Realm:  user.Realm, Username: user.Username, Password: user.Password,
		ClientID: apicsim.DefaultClientID, ClientSecret: apicsim.DefaultClientSecret,
	}, nil
}
