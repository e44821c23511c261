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

// App is apic_auth's Caddy app. Every apic_auth handler loads it; it
// needs no configuration. While the config is provisioned it checks that
// no other process listens on the http app's addresses; when the config
// starts, it refuses to start if one does, starts the token files of its
// config's handlers, warns about servers open beyond loopback, and starts
// each new identity's first login in the background, so that a refused
// password is known at start rather than at the first request. When the
// config stops, it stops its token files.
type App struct {
	// LazyLogin defers each identity's first login to its first request.
	// Default off: the first login starts with the config, and its
	// outcome is logged (an ERROR with a hint when it fails).
	LazyLogin bool `json:"lazy_login,omitempty"`

	ctx    caddy.Context
	logger *zap.Logger
	// sinks are the token files of this config's handlers, by path.
	sinks map[string]*sinkClaim

	checked   bool  // checkListeners ran (provisioning is sequential)
	listenErr error // another process listens on an address of the config
	ids       []*identity
	// global are the identities whose shared session is in Caddy's
	// global storage.
	global []*identity
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

// checkListeners checks, once per config, that no other process listens
// on an address of the http app among the ancestors of ctx (a handler's
// context). It runs at provisioning, before any app starts and binds its
// addresses; the outcome is reported by Start, so that caddy validate,
// which provisions but starts nothing, does not fail on a running proxy.
func (a *App) checkListeners(ctx caddy.Context) {
	if a.checked {
		return
	}
	a.checked = true
	for _, m := range ctx.Modules() {
		if httpApp, ok := m.(*caddyhttp.App); ok {
			a.listenErr = checkHTTPListeners(httpApp)
			return
		}
	}
}

// Start refuses to start when another process listens on an address of
// the config. It gives the identities whose shared session is in Caddy's
// global storage this config's, starts the token files of this config's
// handlers, warns
// about every server that holds an apic_auth handler without
// allowed_hosts and listens beyond loopback (anyone who reaches the port
// acts as the user), and starts the first login of every identity that
// has not logged in yet, unless LazyLogin.
func (a *App) Start() error {
	if a.listenErr != nil {
		return a.listenErr
	}
	for _, id := range a.global {
		id.shared.store.SetStorage(a.ctx.Storage())
	}
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
	listens := make(map[*identity][]string)
	for name, srv := range httpApp.Servers {
		var open bool
		walkHandlers(srv.Routes, func(h *Handler) {
			if len(h.AllowedHosts) == 0 {
				open = true
			}
			if _, seen := listens[h.id]; !seen {
				a.ids = append(a.ids, h.id)
			}
			listens[h.id] = append(listens[h.id], srv.Listen...)
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
	if a.LazyLogin {
		return nil
	}
	for _, id := range a.ids {
		id.loginAtStart(a.logger, listens[id])
	}
	return nil
}

// useGlobalStorage records that id's shared session is in Caddy's
// global storage. Caddy makes a new one for each config: Start gives the
// identity this config's, so that a config that fails to load leaves the
// running one's in place.
func (a *App) useGlobalStorage(id *identity) {
	if !slices.Contains(a.global, id) {
		a.global = append(a.global, id)
	}
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
