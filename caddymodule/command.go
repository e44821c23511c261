package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/rewrite"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/toolkit"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "apic-proxy",
		Usage: "[--from <addr>] [--to <url>] [--realm <realm>] [--username <user>] [--client-id <id>] [--password-file <file>] [--client-secret-file <file>] [--api-key-file <file>] [--insecure] [--ca-cert <pem>] [--allowed-host <host>] [--token-file <file>] [--apic-config-file <file>] [--demo]",
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

--from listens on 127.0.0.1:9080 by default. A port alone (":9080")
stays on loopback; name another address to listen beyond this machine, and
put authentication in front (see README).

Only requests for a loopback host name (localhost, 127.0.0.1, [::1]) are
forwarded, so that no web page can reach the proxy by DNS rebinding, and
no request from a web page (Origin or Sec-Fetch-Site) is forwarded at all.
--allowed-host names one more host clients may use (repeatable), such as
a Kubernetes Service name.

--demo starts the built-in API Connect simulator on a loopback port and
proxies to it as its Cloud Manager user, so everything can be tried
without an API Manager.
`,
		CobraFunc: func(cmd *cobra.Command) {
			fs := cmd.Flags()
			fs.String("from", toolkit.EnvOr("APIC_PROXY_FROM", "127.0.0.1:9080"), "address to listen on ($APIC_PROXY_FROM)")
			toolkit.AddLoginFlags(cmd, "provider/default-idp-2")
			fs.StringArray("allowed-host", nil, "host name clients may use besides loopback ones (repeatable)")
			fs.String("token-file", "", "keep this file with the current token, for tools that cannot use the proxy")
			fs.String("apic-config-file", "", "keep the token in this apic toolkit token file (such as ~/.apiconnect/token)")
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
	From         string
	To           string
	Realm        string
	Username     string
	Password     string
	APIKey       string
	ClientID     string
	ClientSecret string
	Insecure     bool
	CACerts      []string
	AllowedHosts []string
	AccessLog    bool
	Debug        bool

	// TokenFile and APICConfigFile are the handler's token_file and
	// apic_config_file.
	TokenFile, APICConfigFile string
}

func cmdAPICProxy(fl caddycmd.Flags) (int, error) {
	caddy.TrapSignals()
	opts := proxyOptions{
		From:      fl.String("from"),
		To:        fl.String("to"),
		Realm:     fl.String("realm"),
		Username:  fl.String("username"),
		ClientID:  fl.String("client-id"),
		Insecure:  fl.Bool("insecure"),
		AccessLog: fl.Bool("access-log"),
		Debug:     fl.Bool("debug"),
	}
	opts.TokenFile, opts.APICConfigFile = fl.String("token-file"), fl.String("apic-config-file")
	var err error
	if opts.CACerts, err = fl.GetStringArray("ca-cert"); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if opts.AllowedHosts, err = fl.GetStringArray("allowed-host"); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if fl.Bool("demo") {
		if Demo == nil {
			return caddy.ExitCodeFailedStartup, errors.New("--demo: this build has no simulator; the apic-auth-proxy binary (cmd/apic-auth-proxy) has one")
		}
		d, err := Demo()
		if err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		opts.To, opts.Realm, opts.Username, opts.ClientID = d.Server, d.Realm, d.Username, d.ClientID
		opts.Password = secretPlaceholder("APIC_AUTH_PROXY_DEMO_PASSWORD", d.Password)
		opts.ClientSecret = secretPlaceholder("APIC_AUTH_PROXY_DEMO_CLIENT_SECRET", d.ClientSecret)
	} else if err := opts.readSecrets(fl); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}

	cfg, listen, err := opts.config()
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if err := caddy.Run(cfg); err != nil {
		return caddy.ExitCodeFailedStartup, errors.New(ErrorMessage(err))
	}
	caddy.Log().Info("apic-auth-proxy ready", zap.String("from", listen), zap.String("to", opts.To), zap.String("user", opts.Username), zap.String("realm", opts.Realm))
	base := "http://" + listen
	if strings.HasPrefix(listen, "unix/") {
		path, _, _ := strings.Cut(strings.TrimPrefix(listen, "unix/"), "|") // without the file mode
		base = "--unix-socket " + path + " http://localhost"
	}
	if fl.Bool("demo") {
		fmt.Printf(`
apic-auth-proxy demo: proxying %s to the built-in API Connect simulator at %s
as the Cloud Manager user %s (realm %s). Try:

  curl %s/api/me
  curl %s/api/orgs
  curl %s/api/cloud/orgs
  curl %s/api/cloud/registrations

Stop with Ctrl-C.
`, base, opts.To, opts.Username, opts.Realm, base, base, base, base)
	}
	select {}
}

// secretPlaceholder puts a secret in this process's environment under name
// and returns the placeholder that reads it, so that the config carries the
// placeholder and not the secret. (A process's own setenv does not show
// in /proc/<pid>/environ.)
func secretPlaceholder(name, value string) string {
	_ = os.Setenv(name, value)
	return "{env." + name + "}"
}

// readSecrets picks each secret's source: a file, an APIC_* variable, or
// (for the password) standard input.
func (o *proxyOptions) readSecrets(fl caddycmd.Flags) error {
	src := toolkit.GatherCredentials(fl)
	o.ClientSecret = src.ClientSecret.Placeholder()
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
// TLS settings and its path prefix. The admin API is off and nothing is
// persisted.
func (o *proxyOptions) config() (*caddy.Config, string, error) {
	creds := apic.Credentials{ClientID: o.ClientID, ClientSecret: o.ClientSecret}
	if o.APIKey != "" {
		creds.APIKey = o.APIKey
	} else {
		creds.Realm, creds.Username, creds.Password = o.Realm, o.Username, o.Password
	}
	err := creds.Check(o.To, toolkit.LoginNames())
	if o.To == "" {
		// One list names all that is missing, the server first.
		err = apic.WithMissing(err, "--to (APIC_SERVER: the API Connect platform API base URL)")
	}
	if err != nil {
		return nil, "", err
	}
	if err := apic.CheckServer(o.To); err != nil {
		return nil, "", fmt.Errorf("--to: %v", err)
	}
	listen, err := listenAddress(o.From)
	if err != nil {
		return nil, "", err
	}
	to, _ := url.Parse(o.To)

	auth := Handler{
		Server: o.To, ClientID: creds.ClientID, ClientSecret: creds.ClientSecret,
		Realm: creds.Realm, Username: creds.Username, Password: creds.Password, APIKey: creds.APIKey,
		TLSInsecureSkipVerify: o.Insecure, TLSTrustedCACerts: o.CACerts,
		AllowedHosts: o.AllowedHosts,
		TokenFile:    o.TokenFile, APICConfigFile: o.APICConfigFile,
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
	}
	if o.AccessLog {
		server.Logs = &caddyhttp.ServerLogConfig{}
	}
	app := caddyhttp.App{Servers: map[string]*caddyhttp.Server{"apic_auth_proxy": server}}
	persist := false
	cfg := &caddy.Config{
		Admin:   &caddy.AdminConfig{Disabled: true, Config: &caddy.ConfigSettings{Persist: &persist}},
		AppsRaw: caddy.ModuleMap{"http": caddyconfig.JSON(app, nil)},
	}
	if o.Debug {
		cfg.Logging = &caddy.Logging{Logs: map[string]*caddy.CustomLog{
			"default": {BaseLog: caddy.BaseLog{Level: zap.DebugLevel.CapitalString()}},
		}}
	}
	return cfg, listen, nil
}

// DemoTarget is the API Connect server and identity --demo proxies to.
type DemoTarget struct {
	Server, Realm, Username, Password, ClientID, ClientSecret string
}

// Demo starts what --demo proxies to, for the life of the process. The
// apic-auth-proxy binary sets it to the built-in simulator; a build of
// this package alone (xcaddy) leaves it nil, and --demo says so.
var Demo func() (DemoTarget, error)
