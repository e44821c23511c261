package caddymodule

import (
	"net"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is apic_auth's Caddy app. It is never configured: every apic_auth
// handler loads it, and once the config's servers are set up it checks
// what a handler cannot see from its place in a route, such as the
// addresses its server listens on.
type App struct {
	ctx    caddy.Context
	logger *zap.Logger
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
	return nil
}

// Start warns about every server that holds an apic_auth handler without
// allowed_hosts and listens beyond loopback: anyone who reaches the port
// acts as the user.
func (a *App) Start() error {
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

// Stop does nothing: the app holds nothing.
func (*App) Stop() error { return nil }

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
