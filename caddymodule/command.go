package caddymodule

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "apic-proxy",
		Usage: "[--from <addr>] [--to <url>] [--realm <realm>] [--username <user>] [--client-id <id>] [--password-file <file>] [--client-secret-file <file>] [--api-key-file <file>] [--insecure] [--ca-cert <pem>] [--allowed-host <host>] [--demo]",
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
			fs.String("from", envOr("APIC_PROXY_FROM", "127.0.0.1:9080"), "address to listen on ($APIC_PROXY_FROM)")
			addLoginFlags(cmd, "provider/default-idp-2")
			fs.StringArray("allowed-host", nil, "host name clients may use besides loopback ones (repeatable)")
			fs.Bool("demo", false, "proxy to the built-in API Connect simulator")
			fs.Bool("access-log", false, "log every request")
			fs.Bool("debug", false, "log at debug level")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdAPICProxy)
		},
	})
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
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
	var err error
	if opts.CACerts, err = fl.GetStringArray("ca-cert"); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if opts.AllowedHosts, err = fl.GetStringArray("allowed-host"); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if fl.Bool("demo") {
		addr, err := startDemoSimulator()
		if err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
		opts.To = "http://" + addr
		opts.Realm = apicsim.DefaultAdminRealm
		opts.Username = apicsim.DefaultAdminUsername
		opts.ClientID = apicsim.DefaultClientID
		opts.Password = secretPlaceholder("APIC_AUTH_PROXY_DEMO_PASSWORD", apicsim.DefaultAdminPassword)
		opts.ClientSecret = secretPlaceholder("APIC_AUTH_PROXY_DEMO_CLIENT_SECRET", apicsim.DefaultClientSecret)
	} else if err := opts.readSecrets(fl); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}

	cfg, listen, err := opts.config()
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if err := caddy.Run(cfg); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	caddy.Log().Info("apic-auth-proxy ready", zap.String("from", listen), zap.String("to", opts.To), zap.String("user", opts.Username), zap.String("realm", opts.Realm))
	base := "http://" + listen
	if strings.HasPrefix(listen, "unix/") {
		base = "--unix-socket " + strings.TrimPrefix(listen, "unix/") + " http://localhost"
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
	src := gatherCredentials(fl)
	o.ClientSecret = src.clientSecret.placeholder()
	if src.apiKey.set() {
		o.APIKey = src.apiKey.placeholder()
		return nil
	}
	if src.password.set() {
		o.Password = src.password.placeholder()
		return nil
	}
	if o.Username == "" {
		return nil // config() names what is missing
	}
	pw, err := readPassword(os.Stdin, os.Stderr, o.Username)
	if err != nil {
		return err
	}
	o.Password = secretPlaceholder("APIC_AUTH_PROXY_PASSWORD", pw)
	return nil
}

// addLoginFlags registers the flags shared by the commands that log in
// (apic-proxy, apic-token, apic-register): where API Connect is, how to
// trust it, and who logs in. defaultRealm is the realm when neither
// --realm nor APIC_REALM names one. Secrets have file flags only.
func addLoginFlags(cmd *cobra.Command, defaultRealm string) {
	addServerFlags(cmd)
	fs := cmd.Flags()
	fs.String("realm", envOr("APIC_REALM", defaultRealm), "realm of the user ($APIC_REALM)")
	fs.String("username", os.Getenv("APIC_USERNAME"), "user name ($APIC_USERNAME)")
	fs.String("client-id", os.Getenv("APIC_CLIENT_ID"), "registration client id ($APIC_CLIENT_ID)")
	fs.String("password-file", "", "file holding the password (else $APIC_PASSWORD, else standard input)")
	fs.String("client-secret-file", "", "file holding the client secret (else $APIC_CLIENT_SECRET)")
	fs.String("api-key-file", "", "file holding an API key, instead of username and password (else $APIC_API_KEY)")
}

// addServerFlags registers where API Connect is and how to trust it:
// --to, --insecure and --ca-cert.
func addServerFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.String("to", os.Getenv("APIC_SERVER"), "API Connect platform API base URL, scheme://host[:port][/prefix] ($APIC_SERVER)")
	fs.Bool("insecure", false, "do not verify API Connect's TLS certificate (INSECURE)")
	fs.StringArray("ca-cert", nil, "PEM file of a certificate authority to trust for API Connect (repeatable)")
}

// secretSource is where one secret comes from: a file named by a flag, or
// an APIC_* variable. The zero value is neither.
type secretSource struct {
	flag string // the file flag, for errors
	file string
	env  string // the variable's name
}

func (s secretSource) set() bool { return s.file != "" || s.env != "" }

// placeholder is the Caddy placeholder that reads the secret, so that a
// config holds the placeholder and not the secret; "" for none.
func (s secretSource) placeholder() string {
	switch {
	case s.file != "":
		return "{file." + s.file + "}"
	case s.env != "":
		return "{env." + s.env + "}"
	}
	return ""
}

// value reads the secret: the variable's value, or the file's content
// without its final line ending (as Caddy's {file.*} reads it); "" for
// none. Errors name the flag and the file, never the content.
func (s secretSource) value() (string, error) {
	switch {
	case s.file != "":
		b, err := os.ReadFile(s.file)
		if err != nil {
			return "", fmt.Errorf("--%s: %v", s.flag, err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			return "", fmt.Errorf("--%s: %s is empty", s.flag, s.file)
		}
		return v, nil
	case s.env != "":
		return os.Getenv(s.env), nil
	}
	return "", nil
}

// credentialSources are where the secrets of one login come from. A
// password with no source comes from standard input.
type credentialSources struct {
	password, clientSecret, apiKey secretSource
}

// gatherCredentials picks each secret's source, for every command that
// logs in: its --*-file flag first, then its APIC_* variable. With an API
// key there is no password.
func gatherCredentials(fl caddycmd.Flags) credentialSources {
	pick := func(flag, env string) secretSource {
		if f := fl.String(flag); f != "" {
			return secretSource{flag: flag, file: f}
		}
		if os.Getenv(env) != "" {
			return secretSource{flag: flag, env: env}
		}
		return secretSource{flag: flag}
	}
	src := credentialSources{
		clientSecret: pick("client-secret-file", "APIC_CLIENT_SECRET"),
		apiKey:       pick("api-key-file", "APIC_API_KEY"),
	}
	if !src.apiKey.set() {
		src.password = pick("password-file", "APIC_PASSWORD")
	}
	return src
}

// readPassword reads a password from a terminal without echo, or the first
// line of piped input.
func readPassword(in *os.File, prompt io.Writer, user string) (string, error) {
	s := &secretInput{in: in, prompt: prompt}
	return s.read(fmt.Sprintf("API Connect password for %s: ", user), "password",
		"set APIC_PASSWORD, use --password-file, or pipe it on standard input")
}

// secretInput reads secrets from standard input: from a terminal without
// echo, after a prompt; else one line of piped input each, in order.
type secretInput struct {
	in     io.Reader
	prompt io.Writer
	br     *bufio.Reader // piped input, kept between reads
}

// read reads one secret. what names it in errors ("password"); hint says
// where else it can come from.
func (s *secretInput) read(prompt, what, hint string) (string, error) {
	if f, ok := s.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		fmt.Fprint(s.prompt, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(s.prompt)
		if err != nil {
			return "", fmt.Errorf("reading the %s: %v", what, err)
		}
		if len(b) == 0 {
			return "", fmt.Errorf("no %s given", what)
		}
		return string(b), nil
	}
	if s.br == nil {
		s.br = bufio.NewReader(s.in)
	}
	line, err := s.br.ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading the %s from standard input: %v", what, err)
		}
		return "", fmt.Errorf("no %s: %s", what, hint)
	}
	return line, nil
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
	if o.To == "" {
		return nil, "", errors.New("--to (or APIC_SERVER) is required: the API Connect platform API base URL")
	}
	if err := apic.CheckServer(o.To); err != nil {
		return nil, "", fmt.Errorf("--to: %v", err)
	}
	var missing []string
	if o.APIKey == "" {
		if o.Username == "" {
			missing = append(missing, "--username (APIC_USERNAME)")
		}
		if o.Password == "" {
			missing = append(missing, "a password (APIC_PASSWORD, --password-file or standard input)")
		}
	}
	if o.ClientID == "" {
		missing = append(missing, "--client-id (APIC_CLIENT_ID)")
	}
	if o.ClientSecret == "" {
		missing = append(missing, "a client secret (APIC_CLIENT_SECRET or --client-secret-file)")
	}
	if len(missing) > 0 {
		return nil, "", fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	listen, err := listenAddress(o.From)
	if err != nil {
		return nil, "", err
	}
	to, _ := url.Parse(o.To)

	auth := Handler{
		Server: o.To, ClientID: o.ClientID, ClientSecret: o.ClientSecret,
		TLSInsecureSkipVerify: o.Insecure, TLSTrustedCACerts: o.CACerts,
		AllowedHosts: o.AllowedHosts,
	}
	if o.APIKey != "" {
		auth.APIKey = o.APIKey
	} else {
		auth.Realm, auth.Username, auth.Password = o.Realm, o.Username, o.Password
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

// startDemoSimulator serves the API Connect simulator on a loopback port
// for the life of the process.
func startDemoSimulator() (string, error) {
	sim, err := apicsim.New(apicsim.DefaultConfig())
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("starting the demo simulator: %v", err)
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
}
