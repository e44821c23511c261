package caddymodule

import (
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apic-tools/apic-auth-proxy/internal/listencheck"
)

// checkListenAddrs reports the first of the listen addresses (Caddy's
// network address syntax) that another process already listens on. An
// address this process holds already is left alone: a config reload
// binds the old config's addresses again, and must. Placeholders are
// resolved as the http app resolves them; a port range is checked port by
// port; port 0 and fd/N (a socket handed over by the parent) are skipped.
// A unix socket counts as taken when something accepts connections on it:
// Caddy would unlink it and bind its own, leaving the other process
// without clients.
func checkListenAddrs(addrs []string) error {
	repl := caddy.NewReplacer()
	for _, raw := range addrs {
		addr, err := repl.ReplaceOrErr(raw, true, true)
		if err != nil {
			continue // the http app reports it
		}
		na, err := caddy.ParseNetworkAddress(addr)
		if err != nil || na.IsFdNetwork() {
			continue
		}
		for _, a := range na.Expand() {
			if caddy.ListenerUsage(a.Network, a.JoinHostPort(0)) > 0 {
				continue // ours: a reload
			}
			switch {
			case a.IsUnixNetwork():
				path, _, _ := strings.Cut(a.Host, "|") // without the file mode
				if strings.HasPrefix(path, "@") {
					continue // abstract: the kernel refuses a second bind itself
				}
				if !listencheck.OwnSocketsKnown && caddy.ActiveContext().Context != nil {
					// A config runs already and the socket may be its own,
					// which this system does not tell: a reload must work.
					continue
				}
				err = listencheck.Unix(path)
			case strings.HasPrefix(a.Network, "tcp") && a.StartPort != 0:
				err = listencheck.TCP(a.JoinHostPort(0))
			default:
				continue // udp (HTTP/3), port 0
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// checkHTTPListeners checks the listen addresses of every server of the
// http app (see checkListenAddrs). Every server, not only those with
// apic_auth: at provisioning no server's routes may be loaded yet, and a
// second process sharing any address of a config that holds an identity
// splits its clients between two identities or configs all the same.
func checkHTTPListeners(app *caddyhttp.App) error {
	for _, srv := range app.Servers {
		if err := checkListenAddrs(srv.Listen); err != nil {
			return err
		}
	}
	return nil
}
