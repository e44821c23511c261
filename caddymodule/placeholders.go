package caddymodule

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

// This file holds the checks of how settings are written: placeholders
// that cannot be resolved, shell variables that Caddy never expands, and
// secrets written where the JSON config shows them.

// placeholderRE finds placeholders, to name them in errors without
// quoting any literal text around them.
var placeholderRE = regexp.MustCompile(`\{[^{}]+\}`)

// loadTimeRE finds the placeholders apic_auth resolves when the config
// loads, {env.*} and {file.*}: they stay placeholders in the JSON config.
var loadTimeRE = regexp.MustCompile(`\{(?:env|file)\.[^{}]+\}`)

// shellVarRE matches a value that is exactly a shell variable, $NAME or
// ${NAME}: such a value is a name, not a secret, and may be quoted.
var shellVarRE = regexp.MustCompile(`^\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})$`)

// shellLikeRE matches a value that starts like a shell variable: $ and a
// name, or ${.
var shellLikeRE = regexp.MustCompile(`^\$(?:[A-Za-z_]|\{)`)

// resolvePlaceholders resolves the {env.*} and {file.*} placeholders of
// field's raw value. It refuses a value written as a shell variable
// ($NAME, ${NAME}), which neither Caddy nor apic_auth expands, and fails
// on a placeholder that is unset, empty or unreadable. Its errors quote
// no value but a variable's name.
func resolvePlaceholders(repl *caddy.Replacer, field, raw string) (string, error) {
	if m := shellVarRE.FindStringSubmatch(raw); m != nil {
		return "", fmt.Errorf("%s: %q is not expanded; write {env.%s}", field, raw, m[1]+m[2])
	}
	if shellLikeRE.MatchString(raw) {
		// Perhaps a secret that starts with $: not quoted.
		return "", fmt.Errorf("%s: the value starts like a shell variable ($NAME or ${NAME}), which is not expanded; write {env.NAME} or {file./path}", field)
	}
	v, err := repl.ReplaceOrErr(raw, true, true)
	if err != nil {
		names := placeholderRE.FindAllString(raw, -1)
		return "", fmt.Errorf("%s: placeholder %s is unset, empty or unreadable", field, strings.Join(names, ", "))
	}
	return v, nil
}

// warnLiteralSecrets logs a warning for every credential written as a
// literal, in part or whole, or as {$VAR} (the Caddyfile adapter expands
// that to a literal): it is in the JSON config that the admin API serves
// and autosave.json keeps. It names the setting, never the value.
func (h *Handler) warnLiteralSecrets() {
	for _, f := range []struct{ name, raw string }{
		{"password", h.Password},
		{"api_key", h.APIKey},
		{"client_secret", h.ClientSecret},
	} {
		if strings.TrimSpace(loadTimeRE.ReplaceAllString(f.raw, "")) == "" || shellLikeRE.MatchString(f.raw) {
			continue // a shell variable is refused with its fix
		}
		h.logger.Warn("a secret is written in the configuration itself (a literal, or {$VAR} that the Caddyfile adapter expanded): it is in the JSON config that the admin API serves (GET /config/) and in autosave.json; write {env.VAR} or {file./path} instead, resolved when the config loads",
			zap.String("setting", f.name))
	}
}

// checkUpstreams refuses, in every server that holds an apic_auth
// handler, a reverse_proxy upstream whose dial address is made of {env.*}
// placeholders that resolve to what reverse_proxy cannot dial: an unset
// variable, a URL, an address without a port. reverse_proxy resolves them
// per request, so without this check the config loads and every request
// fails with an empty 502. Upstreams with other placeholders (those of
// the request) are left to reverse_proxy.
//
// It runs in a handler's Provision, when the http app's routes are
// partly provisioned: routes already set up hold handlers, the others
// still their JSON. Both are read.
func checkUpstreams(ctx caddy.Context) error {
	var app *caddyhttp.App
	for _, m := range ctx.Modules() {
		if a, ok := m.(*caddyhttp.App); ok {
			app = a
		}
	}
	if app == nil {
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(app.Servers)) {
		srv := app.Servers[name]
		var w upstreamWalk
		w.routes(srv.Routes)
		if srv.Errors != nil {
			w.routes(srv.Errors.Routes)
		}
		for _, rt := range srv.NamedRoutes {
			w.route(rt)
		}
		if !w.apicAuth {
			continue
		}
		for _, dial := range w.dials {
			if err := checkDial(dial); err != nil {
				return fmt.Errorf("server %s: reverse_proxy upstream %s %v", name, dial, err)
			}
		}
	}
	return nil
}

// upstreamWalk gathers the reverse_proxy dial addresses of routes, and
// whether an apic_auth handler is among them.
type upstreamWalk struct {
	apicAuth bool
	dials    []string
}

func (w *upstreamWalk) routes(routes caddyhttp.RouteList) {
	for i := range routes {
		w.route(&routes[i])
	}
}

func (w *upstreamWalk) route(rt *caddyhttp.Route) {
	if rt == nil {
		return
	}
	for _, raw := range rt.HandlersRaw {
		w.raw(raw)
	}
	for _, mh := range rt.Handlers {
		switch v := mh.(type) {
		case *Handler:
			w.apicAuth = true
		case *reverseproxy.Handler:
			for _, u := range v.Upstreams {
				w.dials = append(w.dials, u.Dial)
			}
		case *caddyhttp.Subroute:
			w.routes(v.Routes)
		}
	}
}

// raw reads a handler not provisioned yet.
func (w *upstreamWalk) raw(raw json.RawMessage) {
	var h struct {
		Handler   string `json:"handler"`
		Upstreams []struct {
			Dial string `json:"dial"`
		} `json:"upstreams"`
		Routes caddyhttp.RouteList `json:"routes"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return // its own Provision says what is wrong
	}
	switch h.Handler {
	case "apic_auth":
		w.apicAuth = true
	case "reverse_proxy":
		for _, u := range h.Upstreams {
			w.dials = append(w.dials, u.Dial)
		}
	case "subroute":
		w.routes(h.Routes)
	}
}

// dialNetworks are the networks reverse_proxy's HTTP transport dials.
var dialNetworks = []string{"tcp", "tcp4", "tcp6", "unix", "unixpacket"}

// checkDial checks a dial address made only of {env.*} placeholders and
// literal text as reverse_proxy reads it per request
// (caddy.ParseNetworkAddress): one address of a known network, with a
// port unless it is a unix socket. The error completes "upstream <dial>"
// and quotes nothing of the value but a URL's scheme and host.
func checkDial(dial string) error {
	names := placeholderRE.FindAllString(dial, -1)
	if len(names) == 0 {
		return nil
	}
	for _, n := range names {
		if !strings.HasPrefix(n, "{env.") {
			return nil // resolved from the request: reverse_proxy's own
		}
	}
	fix := "write reverse_proxy {$VAR} (the Caddyfile adapter expands it when the config is adapted, and takes a URL) or the host:port itself"
	if len(names) == 1 && names[0] == dial {
		fix = "write reverse_proxy {$" + strings.TrimSuffix(strings.TrimPrefix(dial, "{env."), "}") + "} (the Caddyfile adapter expands it when the config is adapted, and takes a URL) or the host:port itself"
	}
	v, err := caddy.NewReplacer().ReplaceOrErr(dial, true, true)
	if err != nil {
		return fmt.Errorf("names a variable that is unset or empty: every request would fail; set it to host:port, or %s", fix)
	}
	if scheme, rest, ok := strings.Cut(v, "://"); ok {
		host, _, _ := strings.Cut(rest, "/")
		if _, after, found := strings.Cut(host, "@"); found {
			host = after // never quote credentials
		}
		return fmt.Errorf("is the URL %s://%s, but reverse_proxy dials a host:port and would fail every request; %s", scheme, host, fix)
	}
	addr, err := caddy.ParseNetworkAddress(v)
	switch {
	case err != nil, !slices.Contains(dialNetworks, addr.Network), addr.PortRangeSize() != 1:
		return fmt.Errorf("is not a host:port: every request would fail; %s", fix)
	case addr.IsUnixNetwork():
		if addr.Host == "" {
			return fmt.Errorf("names no socket: every request would fail; %s", fix)
		}
	case addr.StartPort == 0:
		return fmt.Errorf("has no port: every request would fail; %s", fix)
	}
	return nil
}
