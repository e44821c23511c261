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
//		allowed_hosts   <host> [<host>...]
//		allowed_origins <origin> [<origin>...]
//		require_header  <name>
//		paths           <prefix> [<prefix>...]
//	}
//
// Credentials take {env.NAME} and {file./path} placeholders, resolved when
// the config loads.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	strs := map[string]*string{
		"name": &h.Name, "credentials": &h.Credentials, "server": &h.Server,
		"realm": &h.Realm, "username": &h.Username, "password": &h.Password,
		"api_key": &h.APIKey, "client_id": &h.ClientID, "client_secret": &h.ClientSecret,
		"require_header": &h.RequireHeader,
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] && !listOptions[opt] {
			return d.Errf("apic_auth: %s is set twice", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		switch opt {
		case "tls_trusted_ca_certs", "allowed_hosts", "allowed_origins", "paths":
			if len(args) == 0 {
				return d.ArgErr()
			}
			dst := map[string]*[]string{
				"tls_trusted_ca_certs": &h.TLSTrustedCACerts, "allowed_hosts": &h.AllowedHosts,
				"allowed_origins": &h.AllowedOrigins, "paths": &h.Paths,
			}[opt]
			*dst = append(*dst, args...)
			continue
		case "tls_insecure_skip_verify", "pass_sign_out":
			if len(args) != 0 {
				return d.ArgErr()
			}
			if opt == "pass_sign_out" {
				h.PassSignOut = true
			} else {
				h.TLSInsecureSkipVerify = true
			}
			continue
		}
		// Every other option takes exactly one value.
		if _, known := strs[opt]; !known && !oneValueOptions[opt] {
			return d.Errf("apic_auth: unknown subdirective %q", opt)
		}
		if len(args) != 1 {
			return d.ArgErr()
		}
		val := args[0]
		if dst, ok := strs[opt]; ok {
			*dst = val
			continue
		}
		switch opt {
		case "refresh_before", "timeout":
			dur, err := caddy.ParseDuration(val)
			if err != nil || dur <= 0 {
				return d.Errf("apic_auth: %s: want a positive duration such as 30m, got %q", opt, val)
			}
			if opt == "timeout" {
				h.Timeout = caddy.Duration(dur)
			} else {
				h.RefreshBefore = caddy.Duration(dur)
			}
		case "replay_max_body":
			if val == "off" {
				h.ReplayMaxBody = -1
				break
			}
			size, err := humanize.ParseBytes(val)
			if err != nil || size == 0 || size > 1<<40 {
				return d.Errf("apic_auth: replay_max_body: want a size such as 4MiB, or off, got %q", val)
			}
			h.ReplayMaxBody = int64(size)
		case "client_authorization":
			switch val {
			case ClientAuthOverwrite, ClientAuthKeep, ClientAuthReject:
				h.ClientAuthorization = val
			default:
				return d.Errf("apic_auth: client_authorization: want overwrite, keep or reject, got %q", val)
			}
		case "sign_out_on_stop":
			if val != "on" && val != "off" {
				return d.Errf("apic_auth: sign_out_on_stop: want on or off, got %q", val)
			}
			on := val == "on"
			h.SignOutOnStop = &on
		}
	}
	return nil
}

// listOptions take one or more values and may be repeated.
var listOptions = map[string]bool{
	"tls_trusted_ca_certs": true, "allowed_hosts": true, "allowed_origins": true, "paths": true,
}

// oneValueOptions are the options other than strings that take one value.
var oneValueOptions = map[string]bool{
	"refresh_before": true, "timeout": true, "replay_max_body": true,
	"client_authorization": true, "sign_out_on_stop": true,
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
