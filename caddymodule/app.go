package caddymodule

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/apic-tools/apic-auth-proxy/internal/tokensink"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is apic_auth's Caddy app. It is never configured: every apic_auth
// handler loads it, and once the config's servers are set up it checks
// what a handler cannot see from its place in a route, such as the
// addresses its server listens on. It starts the token files of its
// config's handlers when the config starts, and stops them when it stops.
type App struct {
	ctx    caddy.Context
	logger *zap.Logger
	// sinks are the token files of this config's handlers, by path.
	sinks map[string]*sinkClaim
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "apic_auth",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision keeps the context, to find the http app at Start.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx, a.logger = ctx, ctx.Logger()
	a.sinks = make(map[string]*sinkClaim)
	return nil
}

// claimSink records that a handler of this config keeps a token file for
// id. Handlers of one identity may name the same file with the same
// option; another identity, or the other format, is refused.
func (a *App) claimSink(option string, s *tokensink.Sink, id *identity) error {
	c, ok := a.sinks[s.Path()]
	switch {
	case !ok:
		a.sinks[s.Path()] = &sinkClaim{option: option, sink: s, id: id}
		return nil
	case c.id != id:
		return fmt.Errorf("%s: %s is kept for another identity already (%s of %q): each identity needs a file of its own", option, s.Path(), c.option, c.id.name)
	case c.option != option:
		return fmt.Errorf("%s: %s is the %s of this identity already: a file holds one format", option, s.Path(), c.option)
	}
	return nil
}

// Start starts the token files of this config's handlers, then warns
// about every server that holds an apic_auth handler without
// allowed_hosts and listens beyond loopback: anyone who reaches the port
// acts as the user.
func (a *App) Start() error {
	for _, path := range slices.Sorted(maps.Keys(a.sinks)) {
		a.sinks[path].start()
	}
	appVal, err := a.ctx.AppIfConfigured("http")
	if err != nil {
		return nil // no http app: no handler either
	}
	httpApp, ok := appVal.(*caddyhttp.App)
	if !ok {
		return nil
	}
	for name, srv := range httpApp.Servers {
		var open bool
		walkHandlers(srv.Routes, func(h *Handler) {
			if len(h.AllowedHosts) == 0 {
				open = true
			}
		})
		if !open {
			continue
		}
		for _, l := range srv.Listen {
			if !beyondLoopback(l) {
				continue
			}
			a.logger.Warn("apic_auth is served beyond loopback: anyone who reaches this address acts as the proxy's user; bind to 127.0.0.1 or a unix socket, or put authentication in front and list the names clients use in allowed_hosts",
				zap.String("server", name), zap.String("listen", l))
		}
	}
	return nil
}

// Stop hands this config's token files back to the config that kept them
// before, or removes them. It runs before the config's handlers are
// cleaned up, so before their sessions sign out.
func (a *App) Stop() error {
	for _, path := range slices.Sorted(maps.Keys(a.sinks)) {
		a.sinks[path].stop()
	}
	return nil
}

// walkHandlers calls f for every apic_auth handler in routes, subroutes
// (handle, route blocks) included.
func walkHandlers(routes caddyhttp.RouteList, f func(*Handler)) {
	for _, rt := range routes {
		for _, mh := range rt.Handlers {
			switch v := mh.(type) {
			case *Handler:
				f(v)
			case *caddyhttp.Subroute:
				walkHandlers(v.Routes, f)
			}
		}
	}
}

// beyondLoopback reports whether a listen address reaches beyond this
// machine: a TCP address whose host is empty, a wildcard or not loopback.
func beyondLoopback(listen string) bool {
	na, err := caddy.ParseNetworkAddress(listen)
	if err != nil || na.IsUnixNetwork() || na.IsFdNetwork() {
		return false
	}
	host := strings.ToLower(na.Host)
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// Interface guards
var (
	_ caddy.Module      = (*App)(nil)
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
