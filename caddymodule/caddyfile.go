package caddymodule

import (
	"maps"
	"slices"
	"sync"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apic-tools/apic-auth-proxy/internal/suggest"
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
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		sub, ok := subdirectives[opt]
		if !ok {
			if near := suggest.Closest(opt, subdirectiveNames()); near != "" {
				return d.Errf("unknown option %q: did you mean %s?", opt, near)
			}
			return d.Errf("unknown option %q", opt)
		}
		if !sub.repeatable {
			if seen[opt] {
				return d.Errf("%s is set twice", opt)
			}
			seen[opt] = true
		}
		if err := sub.parse(h, d); err != nil {
			return err
		}
	}
	return nil
}

// subdirective reads one option of the apic_auth block, whose name is
// d.Val(), into h.
type subdirective struct {
	parse func(h *Handler, d *caddyfile.Dispenser) error
	// repeatable options take one or more values and may be given more
	// than once; any other may be given once.
	repeatable bool
}

// subdirectives are the options of the apic_auth block: the one list of
// their names, for the parser and its hints.
var subdirectives = map[string]subdirective{
	"name":           {parse: func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.Name) }},
	"credentials":    {parse: func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.Credentials) }},
	"server":         {parse: func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.Server) }},
	"realm":          {parse: func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.Realm) }},
	"username":       {parse: func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.Username) }},
	"password":       {parse: func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.Password) }},
	"api_key":        {parse: func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.APIKey) }},
	"client_id":      {parse: func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.ClientID) }},
	"client_secret":  {parse: func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.ClientSecret) }},
	"require_header": {parse: func(h *Handler, d *caddyfile.Dispenser) error { return oneArg(d, &h.RequireHeader) }},
	"refresh_before": {parse: func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.RefreshBefore) }},
	"timeout":        {parse: func(h *Handler, d *caddyfile.Dispenser) error { return durationArg(d, &h.Timeout) }},
	"replay_max_body": {parse: func(h *Handler, d *caddyfile.Dispenser) error {
		var val string
		if err := oneArg(d, &val); err != nil {
			return err
		}
		if val == "off" {
			h.ReplayMaxBody = -1
			return nil
		}
		size, err := humanize.ParseBytes(val)
		if err != nil || size == 0 || size > 1<<40 {
			return d.Errf("replay_max_body: want a size such as 4MiB, or off, got %q", val)
		}
		h.ReplayMaxBody = int64(size)
		return nil
	}},
	"client_authorization": {parse: func(h *Handler, d *caddyfile.Dispenser) error {
		if err := oneArg(d, &h.ClientAuthorization); err != nil {
			return err
		}
		switch h.ClientAuthorization {
		case ClientAuthOverwrite, ClientAuthKeep, ClientAuthReject:
			return nil
		}
		return d.Errf("client_authorization: want overwrite, keep or reject, got %q", h.ClientAuthorization)
	}},
	"sign_out_on_stop": {parse: func(h *Handler, d *caddyfile.Dispenser) error {
		var val string
		if err := oneArg(d, &val); err != nil {
			return err
		}
		if val != "on" && val != "off" {
			return d.Errf("sign_out_on_stop: want on or off, got %q", val)
		}
		on := val == "on"
		h.SignOutOnStop = &on
		return nil
	}},
	"tls_insecure_skip_verify": {parse: func(h *Handler, d *caddyfile.Dispenser) error { return noArgs(d, &h.TLSInsecureSkipVerify) }},
	"pass_sign_out":            {parse: func(h *Handler, d *caddyfile.Dispenser) error { return noArgs(d, &h.PassSignOut) }},
	"tls_trusted_ca_certs": {repeatable: true, parse: func(h *Handler, d *caddyfile.Dispenser) error {
		return listArgs(d, &h.TLSTrustedCACerts)
	}},
	"allowed_hosts":   {repeatable: true, parse: func(h *Handler, d *caddyfile.Dispenser) error { return listArgs(d, &h.AllowedHosts) }},
	"allowed_origins": {repeatable: true, parse: func(h *Handler, d *caddyfile.Dispenser) error { return listArgs(d, &h.AllowedOrigins) }},
	"paths":           {repeatable: true, parse: func(h *Handler, d *caddyfile.Dispenser) error { return listArgs(d, &h.Paths) }},
}

// subdirectiveNames are the names of subdirectives, sorted, so that of two
// names equally close to a typo the same one is suggested every time.
var subdirectiveNames = sync.OnceValue(func() []string {
	return slices.Sorted(maps.Keys(subdirectives))
})

// oneArg reads the option's only value into dst.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.ArgErr()
	}
	*dst = args[0]
	return nil
}

// durationArg reads the option's only value, a positive duration.
func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	opt := d.Val()
	var val string
	if err := oneArg(d, &val); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(val)
	if err != nil || dur <= 0 {
		return d.Errf("%s: want a positive duration such as 30m, got %q", opt, val)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// noArgs sets a flag option that takes no value.
func noArgs(d *caddyfile.Dispenser, dst *bool) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	*dst = true
	return nil
}

// listArgs appends the option's one or more values to dst.
func listArgs(d *caddyfile.Dispenser, dst *[]string) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	*dst = append(*dst, args...)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
