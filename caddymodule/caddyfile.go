package caddymodule

import (
	"encoding/json"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/suggest"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("apic_auth", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("apic_auth", httpcaddyfile.After, "request_header")
	httpcaddyfile.RegisterGlobalOption("apic_auth", parseGlobalOption)
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
//		scope          <scope> [<scope>...]
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
//		token_file       <file: the current token, for other tools>
//		apic_config_file <the apic toolkit's token file, e.g. ~/.apiconnect/token>
//		rewrite_links
//		rewrite_links_max_body <size>
//		shared_session {
//			storage <caddy.storage module, e.g. redis or file_system> {
//				<the module's settings>
//			}
//			key             <extra key material for the record's encryption>
//			storage_timeout <duration>
//			lock_wait       <duration>
//		}
//	}
//
// Credentials and file paths take {env.NAME} and {file./path}
// placeholders, resolved when the config loads; so does shared_session's
// key. shared_session's storage block is any caddy.storage module's, as
// in Caddy's global storage option; without it the record is in Caddy's
// global storage. scope takes the names of scopes, such as my:view
// product:view, and may be repeated: the lines add up.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		switch opt {
		case "tls_trusted_ca_certs", "allowed_hosts", "allowed_origins", "paths", "scope":
			// These take one or more values and may be repeated.
		default:
			if seen[opt] {
				return d.Errf("%s is set twice", opt)
			}
			seen[opt] = true
		}
		var err error
		switch opt {
		case "name":
			err = oneArg(d, &h.Name)
		case "credentials":
			err = oneArg(d, &h.Credentials)
		case "server":
			err = oneArg(d, &h.Server)
		case "realm":
			err = oneArg(d, &h.Realm)
		case "username":
			err = oneArg(d, &h.Username)
		case "password":
			err = oneArg(d, &h.Password)
		case "api_key":
			err = oneArg(d, &h.APIKey)
		case "client_id":
			err = oneArg(d, &h.ClientID)
		case "client_secret":
			err = oneArg(d, &h.ClientSecret)
		case "require_header":
			err = oneArg(d, &h.RequireHeader)
		case "token_file":
			err = oneArg(d, &h.TokenFile)
		case "apic_config_file":
			err = oneArg(d, &h.APICConfigFile)
		case "refresh_before":
			err = durationArg(d, &h.RefreshBefore)
		case "timeout":
			err = durationArg(d, &h.Timeout)
		case "replay_max_body":
			err = sizeArg(d, &h.ReplayMaxBody, "4MiB", true)
		case "client_authorization":
			if err = oneArg(d, &h.ClientAuthorization); err != nil {
				break
			}
			switch h.ClientAuthorization {
			case ClientAuthOverwrite, ClientAuthKeep, ClientAuthReject:
			default:
				return d.Errf("client_authorization: want overwrite, keep or reject, got %q", h.ClientAuthorization)
			}
		case "sign_out_on_stop":
			var val string
			if err = oneArg(d, &val); err != nil {
				break
			}
			if val != "on" && val != "off" {
				return d.Errf("sign_out_on_stop: want on or off, got %q", val)
			}
			on := val == "on"
			h.SignOutOnStop = &on
		case "tls_insecure_skip_verify":
			err = noArgs(d, &h.TLSInsecureSkipVerify)
		case "pass_sign_out":
			err = noArgs(d, &h.PassSignOut)
		case "rewrite_links":
			err = noArgs(d, &h.RewriteLinks)
		case "rewrite_links_max_body":
			err = sizeArg(d, &h.RewriteLinksMaxBody, "16MiB", false)
		case "tls_trusted_ca_certs":
			err = listArgs(d, &h.TLSTrustedCACerts)
		case "allowed_hosts":
			err = listArgs(d, &h.AllowedHosts)
		case "allowed_origins":
			err = listArgs(d, &h.AllowedOrigins)
		case "paths":
			err = listArgs(d, &h.Paths)
		case "scope":
			err = scopeArgs(d, &h.Scope)
		case "shared_session":
			h.SharedSession, err = unmarshalSharedSession(d)
		default:
			if near := suggest.Closest(opt, subdirectiveNames); near != "" {
				return d.Errf("unknown option %q: did you mean %s?", opt, near)
			}
			return d.Errf("unknown option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// subdirectiveNames are the options the switch of UnmarshalCaddyfile
// knows, sorted, for the hint after a typo (of two names equally close,
// the same one is suggested every time). TestSyntaxNamesEveryOption
// keeps it, the switch and the syntax above in step.
var subdirectiveNames = []string{
	"allowed_hosts", "allowed_origins", "api_key", "apic_config_file", "client_authorization",
	"client_id", "client_secret", "credentials", "name", "pass_sign_out", "password", "paths",
	"realm", "refresh_before", "replay_max_body", "require_header", "rewrite_links",
	"rewrite_links_max_body", "scope", "server", "shared_session", "sign_out_on_stop", "timeout", "tls_insecure_skip_verify",
	"tls_trusted_ca_certs", "token_file", "username",
}

// sharedSessionNames are the settings of shared_session, sorted.
var sharedSessionNames = []string{"key", "lock_wait", "storage", "storage_timeout"}

// unmarshalSharedSession reads the shared_session block. Its storage
// block is read as Caddy reads its global storage option.
func unmarshalSharedSession(d *caddyfile.Dispenser) (*SharedSession, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	s := new(SharedSession)
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return nil, d.Errf("shared_session: %s is set twice", opt)
		}
		seen[opt] = true
		var err error
		switch opt {
		case "storage":
			s.StorageRaw, err = unmarshalStorage(d)
		case "key":
			err = oneArg(d, &s.Key)
		case "storage_timeout":
			err = durationArg(d, &s.StorageTimeout)
		case "lock_wait":
			err = durationArg(d, &s.LockWait)
		default:
			if near := suggest.Closest(opt, sharedSessionNames); near != "" {
				return nil, d.Errf("shared_session: unknown setting %q: did you mean %s?", opt, near)
			}
			return nil, d.Errf("shared_session: unknown setting %q; want storage, key, storage_timeout or lock_wait", opt)
		}
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// unmarshalStorage reads "storage <module> { ... }" into the module's
// JSON, its name in "module".
func unmarshalStorage(d *caddyfile.Dispenser) (json.RawMessage, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	name := d.Val()
	if _, err := caddy.GetModule("caddy.storage." + name); err != nil {
		var known []string
		for _, m := range caddy.GetModules("caddy.storage") {
			known = append(known, m.ID.Name())
		}
		if near := suggest.Closest(name, known); near != "" {
			return nil, d.Errf("shared_session storage: no storage module %q: did you mean %s?", name, near)
		}
		return nil, d.Errf("shared_session storage: no storage module %q in this build (caddy list-modules lists the caddy.storage ones)", name)
	}
	unm, err := caddyfile.UnmarshalModule(d, "caddy.storage."+name)
	if err != nil {
		return nil, err
	}
	if _, ok := unm.(caddy.StorageConverter); !ok {
		return nil, d.Errf("shared_session storage: module %s is not a storage", name)
	}
	return caddyconfig.JSONModuleObject(unm, "module", name, nil), nil
}

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

// sizeArg reads the option's only value, a size in bytes such as example
// (up to 1 TiB); with off, the value "off" gives -1.
func sizeArg(d *caddyfile.Dispenser, dst *int64, example string, off bool) error {
	opt := d.Val()
	var val string
	if err := oneArg(d, &val); err != nil {
		return err
	}
	if off && val == "off" {
		*dst = -1
		return nil
	}
	size, err := humanize.ParseBytes(val)
	if err != nil || size == 0 || size > 1<<40 {
		if off {
			return d.Errf("%s: want a size such as %s, or off, got %q", opt, example, val)
		}
		return d.Errf("%s: want a size such as %s, got %q", opt, example, val)
	}
	*dst = int64(size)
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

// scopeArgs appends the option's one or more scope names to dst, each
// checked (apic.CheckScope): a quoted "my:view product:view" is refused
// here, with its line, rather than at provisioning.
func scopeArgs(d *caddyfile.Dispenser, dst *[]string) error {
	n := len(*dst)
	if err := listArgs(d, dst); err != nil {
		return err
	}
	for _, s := range (*dst)[n:] {
		if err := apic.CheckScope(s); err != nil {
			return d.Errf("scope: %v", err)
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)

// parseGlobalOption sets up the apic_auth app from the global options
// block:
//
//	apic_auth {
//		lazy_login
//	}
//
// lazy_login defers each identity's first login to its first request
// (App.LazyLogin).
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	d.Next() // the option's name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "lazy_login":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			app.LazyLogin = true
		default:
			return nil, d.Errf("apic_auth global option: unknown setting %q", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "apic_auth", Value: caddyconfig.JSON(app, nil)}, nil
}
