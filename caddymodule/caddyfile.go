package caddymodule

import (
	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("apic_auth", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("apic_auth", httpcaddyfile.After, "request_header")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	apic_auth [<matcher>] {
//		name           <label for metrics, events and the admin API>
//		credentials    <toolkit credentials.json: server, client id and secret>
//		server         <base URL: scheme://host[:port][/prefix]>
//		realm          <realm, e.g. provider/default-idp-2>
//		username       <user>
//		password       <password>
//		api_key        <API key: instead of username and password>
//		client_id      <registration client id>
//		client_secret  <registration client secret>
//		refresh_before <duration>
//		timeout        <duration>
//		tls_insecure_skip_verify
//		tls_trusted_ca_certs <pem file> [<pem file>...]
//		replay_max_body      <size>|off
//		client_authorization overwrite|keep|reject
//		pass_sign_out
//		sign_out_on_stop     on|off
//	}
//
// Credentials take {env.NAME} and {file./path} placeholders, resolved when
// the config loads.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] && opt != "tls_trusted_ca_certs" {
			return d.Errf("apic_auth: %s is set twice", opt)
		}
		seen[opt] = true
		var str *string
		switch opt {
		case "name":
			str = &h.Name
		case "credentials":
			str = &h.Credentials
		case "server":
			str = &h.Server
		case "realm":
			str = &h.Realm
		case "username":
			str = &h.Username
		case "password":
			str = &h.Password
		case "api_key":
			str = &h.APIKey
		case "client_id":
			str = &h.ClientID
		case "client_secret":
			str = &h.ClientSecret
		case "refresh_before", "timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("apic_auth: %s: want a positive duration such as 30m, got %q", opt, d.Val())
			}
			if opt == "timeout" {
				h.Timeout = caddy.Duration(dur)
			} else {
				h.RefreshBefore = caddy.Duration(dur)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "replay_max_body":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				h.ReplayMaxBody = -1
			} else {
				size, err := humanize.ParseBytes(d.Val())
				if err != nil || size == 0 || size > 1<<40 {
					return d.Errf("apic_auth: replay_max_body: want a size such as 4MiB, or off, got %q", d.Val())
				}
				h.ReplayMaxBody = int64(size)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "client_authorization":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch d.Val() {
			case ClientAuthOverwrite, ClientAuthKeep, ClientAuthReject:
				h.ClientAuthorization = d.Val()
			default:
				return d.Errf("apic_auth: client_authorization: want overwrite, keep or reject, got %q", d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "pass_sign_out":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.PassSignOut = true
		case "sign_out_on_stop":
			if !d.NextArg() {
				return d.ArgErr()
			}
			var on bool
			switch d.Val() {
			case "on":
				on = true
			case "off":
			default:
				return d.Errf("apic_auth: sign_out_on_stop: want on or off, got %q", d.Val())
			}
			h.SignOutOnStop = &on
			if d.NextArg() {
				return d.ArgErr()
			}
		case "tls_insecure_skip_verify":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.TLSInsecureSkipVerify = true
		case "tls_trusted_ca_certs":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.TLSTrustedCACerts = append(h.TLSTrustedCACerts, args...)
		default:
			return d.Errf("apic_auth: unknown subdirective %q", opt)
		}
		if str != nil {
			if !d.NextArg() {
				return d.ArgErr()
			}
			*str = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
