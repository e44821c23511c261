package caddymodule

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/rewrite"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/toolkit"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "apic-proxy",
		Usage: "[--from <addr>] [--to <url>] [--credentials <credentials.json>] [--realm <realm>] [--username <user>] [--client-id <id>] [--password-file <file>] [--client-secret-file <file>] [--api-key-file <file>] [--scope '<scope> ...'] [--insecure] [--ca-cert <pem>] [--timeout <duration>] [--allowed-host <host>] [--admin <addr>] [--grace-period <duration>] [--lazy] [--token-file <file>] [--apic-config-file <file>] [--shared-session redis://host:port | --shared-session-dir <dir>] [--shared-session-key-file <file>] [--demo]",
		Short: "Proxy to API Connect, logging in and injecting the bearer token",
		Long: `
Starts a local authenticating proxy in front of an IBM API Connect
management server. Every request to --from reaches --to with a valid
Authorization: Bearer token for the given user, obtained and refreshed
in the background:

  export APIC_SERVER=https://apim.example.com APIC_REALM=provider/default-idp-2
  export APIC_USERNAME=me APIC_CLIENT_ID=... APIC_CLIENT_SECRET=...
  apic-auth-proxy apic-proxy            # asks for the password
  curl http://127.0.0.1:9080/api/me

Every flag has an APIC_* variable. Secrets are never flag values (they
would show in ps): the password comes from APIC_PASSWORD, --password-file,
or standard input (read without echo on a terminal); the client secret
from APIC_CLIENT_SECRET or --client-secret-file; an API key (instead of
username and password) from APIC_API_KEY or --api-key-file.

--scope "my:view org:view product:view" (or APIC_SCOPE) narrows the token
to these of the registration's scopes, space-separated: a proxy that only
reads holds a token that cannot write, and API Manager answers 403 to a
call that needs a scope the token lacks. A scope the registration lacks
is refused at login. Without my:manage the session is not signed out at
stop (the token cannot); it expires on its own.

--from listens on 127.0.0.1:9080 by default. A port alone (":9080")
stays on loopback; name another address to listen beyond this machine, and
put authentication in front (see README).

Only requests for a loopback host name (localhost, 127.0.0.1, [::1]) are
forwarded, so that no web page can reach the proxy by DNS rebinding, and
no request from a web page (Origin or Sec-Fetch-Site) is forwarded at all.
--allowed-host names one more host clients may use (repeatable), such as
a Kubernetes Service name.

It logs in at start and says so on standard error, with the address,
the server, the user and how long the token is valid:

  ready: http://127.0.0.1:9080 → https://apim.example.com as me (provider/default-idp-2), token valid until 18:07 (8h)

A refused login, an untrusted certificate or an unreachable server ends
it at once (exit status 1) with the server's message and what to check;
--lazy starts without logging in (the first request does), for a start
while API Connect cannot be reached. --timeout bounds each token request
(default 10s). An address another process listens on is refused.

--server is the same as --to; --credentials reads the server, client id
and client secret from the toolkit's credentials.json ("Download
toolkit" in API Manager). A flag given on the command line wins over the
file; the file wins over the APIC_* variables.

--admin serves Caddy's admin API (/apic_auth/status, /metrics, ...) on a
unix socket (unix//path|0600, only its owner can connect) or a loopback
address (Host and Origin checked); it is off by default. Whoever reaches
it can read the secrets: prefer the unix socket. --grace-period is how
long a stop waits for requests in flight (default: as long as they take).

--shared-session redis://[user@]host:port[/db] (rediss:// for TLS)
shares one API Connect session among every proxy that logs in as the
same user, and across restarts, in Redis; --shared-session-dir <dir> does
it in a directory, for the processes of one machine. The Redis password
comes from REDIS_PASSWORD (one in the URL works, but shows in ps).
--shared-session-key-file mixes the file's content into the record's
encryption key. A stop then leaves the session signed in: the other
proxies use it.

--demo starts the built-in API Connect simulator on a loopback port and
proxies to it as its Cloud Manager user, so everything can be tried
without an API Manager; with --realm provider/default-idp-2 it proxies as
its API Manager user, who owns the provider org localtest and its sandbox
catalog.
`,
		CobraFunc: func(cmd *cobra.Command) {
			fs := cmd.Flags()
			fs.String("from", toolkit.EnvOr("APIC_PROXY_FROM", "127.0.0.1:9080"), "address to listen on ($APIC_PROXY_FROM)")
			toolkit.AddLoginFlags(cmd, "provider/default-idp-2")
			toolkit.AddChoreFlags(cmd)
			fs.String("scope", os.Getenv("APIC_SCOPE"), "narrow the token to these scopes of the registration's, space-separated ($APIC_SCOPE)")
			fs.String("admin", "", "serve Caddy's admin API on unix//path|0600 or a loopback host:port (default off)")
			fs.Duration("grace-period", 0, "how long a stop waits for requests in flight (default: until they end)")
			fs.Bool("lazy", false, "do not log in at start: the first request does")
			fs.StringArray("allowed-host", nil, "host name clients may use besides loopback ones (repeatable)")
			fs.String("token-file", "", "keep this file with the current token, for tools that cannot use the proxy")
			fs.String("apic-config-file", "", "keep the token in this apic toolkit token file (such as ~/.apiconnect/token)")
			fs.String("shared-session", "", "share the API Connect session in Redis: redis://[user@]host:port[/db] (password from $REDIS_PASSWORD)")
			fs.String("shared-session-dir", "", "share the API Connect session in this directory (processes of one machine)")
			fs.String("shared-session-key-file", "", "mix this file's content into the shared session's encryption key")
			fs.Bool("demo", false, "proxy to the built-in API Connect simulator")
			fs.Bool("access-log", false, "log every request")
			fs.Bool("debug", false, "log at debug level")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdAPICProxy)
		},
	})
}

// proxyOptions are the quick start's settings. Secret fields hold
// placeholders ({env.*} or {file.*}), never the secrets themselves, so the
// config built from them holds none either.
type proxyOptions struct {
	From string
	To   string
	// ToFrom names the setting that gave To, for errors: --to (default),
	// --server, --credentials or APIC_SERVER.
	ToFrom       string
	Realm        string
	Username     string
	Password     string
	APIKey       string
	ClientID     string
	ClientSecret string
	Insecure     bool
	CACerts      []string
	Timeout      time.Duration
	AllowedHosts []string
	// Scope is the handler's scope: --scope split at spaces.
	Scope []string
	// Admin is the admin API's address; "" leaves it off.
	Admin       string
	GracePeriod time.Duration
	Lazy        bool
	AccessLog   bool
	Debug       bool

	// TokenFile and APICConfigFile are the handler's token_file and
	// apic_config_file.
	TokenFile, APICConfigFile string
	// Shared is the handler's shared_session, nil without one.
	Shared *SharedSession
}

func cmdAPICProxy(fl caddycmd.Flags) (int, error) {
	caddy.TrapSignals()
	opts := proxyOptions{
		From:        fl.String("from"),
		Realm:       fl.String("realm"),
		Username:    fl.String("username"),
		ClientID:    fl.String("client-id"),
		Timeout:     fl.Duration("timeout"),
		Admin:       fl.String("admin"),
		GracePeriod: fl.Duration("grace-period"),
		Lazy:        fl.Bool("lazy"),
		AccessLog:   fl.Bool("access-log"),
		Debug:       fl.Bool("debug"),
		Scope:       strings.Fields(fl.String("scope")),
	}
	opts.TokenFile, opts.APICConfigFile = fl.String("token-file"), fl.String("apic-config-file")
	var err error
	if opts.AllowedHosts, err = fl.GetStringArray("allowed-host"); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	sf := sharedFlags{Redis: fl.String("shared-session"), Dir: fl.String("shared-session-dir"), KeyFile: fl.String("shared-session-key-file")}
	if opts.Shared, err = sf.config(os.Stderr); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if fl.Bool("demo") {
		if Demo == nil {
			return caddy.ExitCodeFailedStartup, errors.New("--demo: this build has no simulator; the apic-auth-proxy binary (cmd/apic-auth-proxy) has one")
		}
		realm := "" // the simulator's Cloud Manager user, unless --realm names another
		if fl.Changed("realm") {
			realm = fl.String("realm")
		}
		d, err := Demo(realm)
		if err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		opts.To, opts.Realm, opts.Username, opts.ClientID = d.Server, d.Realm, d.Username, d.ClientID
		opts.Password = secretPlaceholder("APIC_AUTH_PROXY_DEMO_PASSWORD", d.Password)
		opts.ClientSecret = secretPlaceholder("APIC_AUTH_PROXY_DEMO_CLIENT_SECRET", d.ClientSecret)
	} else if err := opts.fromFlags(fl); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}

	cfg, listen, err := opts.config()
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	// Refuse an address another process listens on before anything
	// binds: the admin API is bound before the config's apps load.
	for _, addr := range []string{opts.Admin, listen} {
		if addr == "" {
			continue
		}
		if err := checkListenAddrs([]string{addr}); err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
	}
	if err := caddy.Run(cfg); err != nil {
		return caddy.ExitCodeFailedStartup, errors.New(ErrorMessage(err))
	}
	if err := opts.announce(fl.Bool("demo")); err != nil {
		_ = caddy.Stop()
		return caddy.ExitCodeFailedStartup, err
	}
	select {}
}

// fromFlags reads the server and the login as apic-token does (see
// toolkit.ServerFromFlags), and each secret's source: a file, an APIC_*
// variable, the toolkit's credentials.json, or (for the password)
// standard input.
func (o *proxyOptions) fromFlags(fl caddycmd.Flags) error {
	so, tk, err := toolkit.ServerFromFlags(fl)
	if err != nil {
		return err
	}
	o.To, o.ToFrom, o.Insecure, o.CACerts, o.Timeout = so.Server, so.From(), so.Insecure, so.CACerts, so.Timeout
	src := toolkit.GatherCredentials(fl)
	o.ClientSecret = src.ClientSecret.Placeholder()
	if toolkit.ClientFromToolkit(fl, tk) {
		o.ClientID = tk.ClientID
		if !src.ClientSecret.FromFile() {
			o.ClientSecret = secretPlaceholder("APIC_AUTH_PROXY_CLIENT_SECRET", tk.ClientSecret)
		}
	}
	if src.APIKey.Set() {
		o.APIKey = src.APIKey.Placeholder()
		return nil
	}
	if src.Password.Set() {
		o.Password = src.Password.Placeholder()
		return nil
	}
	if o.Username == "" {
		return nil // config() names what is missing
	}
	pw, err := toolkit.ReadPassword(os.Stdin, os.Stderr, o.Username)
	if err != nil {
		return err
	}
	o.Password = secretPlaceholder("APIC_AUTH_PROXY_PASSWORD", pw)
	return nil
}

// announce waits for the first login, unless Lazy, and prints the ready
// line on standard error (and, for --demo, what to try on standard
// output). A failed login is the error, with the server's message and
// what to check.
func (o *proxyOptions) announce(demo bool) error {
	appVal, err := caddy.ActiveContext().App("apic_auth")
	if err != nil {
		return err
	}
	app := appVal.(*App)
	httpVal, err := caddy.ActiveContext().App("http")
	if err != nil {
		return err
	}
	var bases []string
	for _, srv := range httpVal.(*caddyhttp.App).Servers {
		for _, ln := range srv.Listeners() {
			bases = append(bases, listenerBase(ln.Addr()))
		}
	}
	who := "as api key"
	if o.APIKey == "" {
		who = fmt.Sprintf("as %s (%s)", o.Username, o.Realm)
	}
	if len(o.Scope) > 0 {
		who += " with scope " + strings.Join(apic.CanonicalScopes(o.Scope), " ")
	}
	line := fmt.Sprintf("ready: %s → %s %s", strings.Join(bases, ", "), o.To, who)
	if o.Lazy || len(app.ids) == 0 {
		line += ", logging in at the first request"
	} else {
		id := app.ids[0]
		tok, err := id.firstOutcome(context.Background())
		if err != nil {
			msg := id.scrub.Scrub(err.Error())
			hint := apic.LoginHint(err, o.To, apic.HintSettings{Server: cmp.Or(o.ToFrom, "--to"), CACert: "--ca-cert", Timeout: "--timeout", APIKey: o.APIKey != ""})
			if hint != "" {
				msg += "; " + hint
			}
			return fmt.Errorf("logging in to API Connect: %s", msg)
		}
		line += ", token valid until " + validity(tok.Expiry, time.Now())
	}
	fmt.Fprintln(os.Stderr, line)
	if demo {
		base := bases[0]
		if strings.HasPrefix(base, "unix socket ") {
			base = "--unix-socket " + strings.TrimPrefix(base, "unix socket ") + " http://localhost"
		}
		who, tries := "Cloud Manager", []string{"/api/me", "/api/orgs", "/api/cloud/orgs", "/api/cloud/registrations"}
		if !strings.HasPrefix(o.Realm, "admin/") {
			who, tries = "API Manager", []string{"/api/me", "/api/orgs", "/api/orgs/localtest/catalogs", "/api/catalogs/localtest/sandbox/products"}
		}
		fmt.Printf("\napic-auth-proxy demo: proxying %s to the built-in API Connect simulator at %s\nas the %s user %s (realm %s). Try:\n\n", base, o.To, who, o.Username, o.Realm)
		for _, p := range tries {
			fmt.Printf("  curl %s%s\n", base, p)
		}
		fmt.Print("\nStop with Ctrl-C.\n")
	}
	return nil
}

// listenerBase is how the ready line names a listener: a URL for TCP, the
// path for a unix socket.
func listenerBase(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix socket " + a.String()
	}
	return "http://" + a.String()
}

// validity says when a token expires, in local time, and in how long,
// rounded: "18:07 (8h)", "09:30 (1h30m)", "12:01 (45m)".
func validity(expiry, now time.Time) string {
	d := expiry.Sub(now)
	var in string
	switch {
	case d >= time.Hour:
		d = d.Round(time.Minute)
		in = fmt.Sprintf("%dh", d/time.Hour)
		if m := d % time.Hour / time.Minute; m != 0 {
			in += fmt.Sprintf("%dm", m)
		}
	case d >= time.Minute:
		in = fmt.Sprintf("%dm", d.Round(time.Minute)/time.Minute)
	default:
		in = fmt.Sprintf("%ds", max(d.Round(time.Second)/time.Second, 0))
	}
	return fmt.Sprintf("%s (%s)", expiry.Round(time.Minute).Local().Format("15:04"), in)
}

// secretPlaceholder puts a secret in this process's environment under name
// and returns the placeholder that reads it, so that the config carries the
// placeholder and not the secret. (A process's own setenv does not show
// in /proc/<pid>/environ.)
func secretPlaceholder(name, value string) string {
	_ = os.Setenv(name, value)
	return "{env." + name + "}"
}

// listenAddress turns --from into a listener address. A missing host means
// loopback; a unix socket (unix//path) is kept as is.
func listenAddress(from string) (string, error) {
	from = strings.TrimPrefix(from, "http://")
	if strings.HasPrefix(from, "unix/") {
		return from, nil
	}
	host, port, err := net.SplitHostPort(from)
	if err != nil {
		return "", fmt.Errorf("--from: want host:port, :port or unix//path, got %q", from)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// config builds the quick start's Caddy config: one server on the --from
// address with apic_auth and reverse_proxy to --to, its Host header, its
// TLS settings and its path prefix. The admin API is off unless --admin
// names an address, and nothing is persisted. Caddy's own start-up lines
// are left out unless --debug: the quick start says what it does itself.
func (o *proxyOptions) config() (*caddy.Config, string, error) {
	toFrom := cmp.Or(o.ToFrom, "--to")
	creds := apic.Credentials{ClientID: o.ClientID, ClientSecret: o.ClientSecret}
	if o.APIKey != "" {
		creds.APIKey = o.APIKey
	} else {
		creds.Realm, creds.Username, creds.Password = o.Realm, o.Username, o.Password
	}
	err := creds.Check(o.To, toolkit.LoginNames())
	if o.To == "" {
		// One list names all that is missing, the server first.
		err = apic.WithMissing(err, "--to (or --server, APIC_SERVER or --credentials: the API Connect platform API base URL)")
	}
	if err != nil {
		return nil, "", err
	}
	if err := apic.CheckServer(o.To); err != nil {
		return nil, "", fmt.Errorf("%s: %v", toFrom, err)
	}
	listen, err := listenAddress(o.From)
	if err != nil {
		return nil, "", err
	}
	admin, err := o.adminConfig()
	if err != nil {
		return nil, "", err
	}
	if o.Timeout < 0 || o.GracePeriod < 0 {
		return nil, "", errors.New("--timeout and --grace-period: want a positive duration")
	}
	for _, s := range o.Scope {
		if err := apic.CheckScope(s); err != nil {
			return nil, "", fmt.Errorf("--scope (APIC_SCOPE): %v", err)
		}
	}
	to, _ := url.Parse(o.To)

	auth := Handler{
		Server: o.To, ClientID: creds.ClientID, ClientSecret: creds.ClientSecret,
		Realm: creds.Realm, Username: creds.Username, Password: creds.Password, APIKey: creds.APIKey,
		TLSInsecureSkipVerify: o.Insecure, TLSTrustedCACerts: o.CACerts,
		AllowedHosts: o.AllowedHosts, Timeout: caddy.Duration(o.Timeout), Scope: o.Scope,
		TokenFile: o.TokenFile, APICConfigFile: o.APICConfigFile,
		SharedSession: o.Shared,
	}
	port := to.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[to.Scheme]
	}
	transport := reverseproxy.HTTPTransport{}
	if to.Scheme == "https" {
		transport.TLS = &reverseproxy.TLSConfig{InsecureSkipVerify: o.Insecure, ServerName: to.Hostname()}
		if len(o.CACerts) > 0 {
			transport.TLS.CARaw = caddyconfig.JSONModuleObject(map[string]any{"pem_files": o.CACerts}, "provider", "file", nil)
		}
	}
	proxy := reverseproxy.Handler{
		TransportRaw: caddyconfig.JSONModuleObject(transport, "protocol", "http", nil),
		Upstreams:    reverseproxy.UpstreamPool{{Dial: net.JoinHostPort(to.Hostname(), port)}},
		Headers: &headers.Handler{Request: &headers.HeaderOps{
			// API Manager routes by host name: send its own.
			Set: http.Header{"Host": []string{"{http.reverse_proxy.upstream.hostport}"}},
		}},
	}
	handlers := []json.RawMessage{caddyconfig.JSONModuleObject(auth, "handler", "apic_auth", nil)}
	if prefix := strings.TrimSuffix(to.Path, "/"); prefix != "" {
		handlers = append(handlers, caddyconfig.JSONModuleObject(rewrite.Rewrite{URI: prefix + "{http.request.uri}"}, "handler", "rewrite", nil))
	}
	handlers = append(handlers, caddyconfig.JSONModuleObject(proxy, "handler", "reverse_proxy", nil))

	server := &caddyhttp.Server{
		Listen:    []string{listen},
		Routes:    caddyhttp.RouteList{{HandlersRaw: handlers}},
		AutoHTTPS: &caddyhttp.AutoHTTPSConfig{Disabled: true},
		// Plain HTTP: HTTP/2 needs TLS (h2c is not offered).
		Protocols: []string{"h1"},
	}
	if o.AccessLog {
		server.Logs = &caddyhttp.ServerLogConfig{}
	}
	app := caddyhttp.App{
		Servers:     map[string]*caddyhttp.Server{"apic_auth_proxy": server},
		GracePeriod: caddy.Duration(o.GracePeriod),
	}
	cfg := &caddy.Config{
		Admin: admin,
		AppsRaw: caddy.ModuleMap{
			"http":      caddyconfig.JSON(app, nil),
			"apic_auth": caddyconfig.JSON(App{LazyLogin: o.Lazy}, nil),
			// Nothing is stored: no certificates to clean up or check.
			"tls": caddyconfig.JSON(caddytls.TLS{DisableStorageClean: true, DisableStorageCheck: true}, nil),
		},
		Logging: &caddy.Logging{Logs: quietLogs(o.Debug, o.AccessLog)},
	}
	return cfg, listen, nil
}

// quietLogs are the quick start's logs: at debug level everything; else
// warnings and errors, without Caddy's lines about its own start (the
// ready line says what the quick start runs) and its admin API's ("admin
// endpoint disabled", "host checking disabled" on a unix socket), nor the
// apic_auth app's (the quick start reports the first login itself), and
// the access log with --access-log.
func quietLogs(debug, accessLog bool) map[string]*caddy.CustomLog {
	if debug {
		return map[string]*caddy.CustomLog{"default": {BaseLog: caddy.BaseLog{Level: zap.DebugLevel.CapitalString()}}}
	}
	exclude := []string{"apic_auth", "http.log.access", "admin"}
	logs := map[string]*caddy.CustomLog{"default": {
		BaseLog: caddy.BaseLog{Level: zap.WarnLevel.CapitalString()},
		Exclude: exclude,
	}}
	if accessLog {
		logs["access"] = &caddy.CustomLog{
			BaseLog: caddy.BaseLog{Level: zap.InfoLevel.CapitalString()},
			Include: []string{"http.log.access"},
		}
	}
	return logs
}

// adminConfig is the admin API's config for --admin: off when empty; a
// unix socket (unix//path, optionally |0600); or a loopback address, whose
// requests must name it in Host and, from a browser, in Origin.
func (o *proxyOptions) adminConfig() (*caddy.AdminConfig, error) {
	persist := false
	cfg := &caddy.AdminConfig{Disabled: true, Config: &caddy.ConfigSettings{Persist: &persist}}
	if o.Admin == "" {
		return cfg, nil
	}
	cfg.Disabled = false
	cfg.Listen = o.Admin
	if strings.HasPrefix(o.Admin, "unix/") {
		return cfg, nil
	}
	host, port, err := net.SplitHostPort(o.Admin)
	if err != nil || port == "0" || beyondLoopback(o.Admin) || host == "" {
		return nil, fmt.Errorf("--admin: want unix//path[|0600] or a loopback host:port (127.0.0.1:2019), got %q: whoever reaches the admin API can read the secrets", o.Admin)
	}
	// Caddy then checks every request's Host, and the Origin of every
	// browser request (Origin or Sec-Fetch-Mode), against the address's
	// loopback names: no DNS rebinding, no cross-site request. (Its
	// enforce_origin would refuse curl too, which sends no Origin.)
	return cfg, nil
}

// DemoTarget is the API Connect server and identity --demo proxies to.
type DemoTarget struct {
	Server, Realm, Username, Password, ClientID, ClientSecret string
}

// Demo starts what --demo proxies to, for the life of the process, as the
// simulator's user of realm ("" for its Cloud Manager user). The
// apic-auth-proxy binary sets it to the built-in simulator; a build of
// this package alone (xcaddy) leaves it nil, and --demo says so.
var Demo func(realm string) (DemoTarget, error)
