// Package caddymodule is the apic_auth HTTP handler for Caddy: it logs in
// to the IBM API Connect platform API with a registration and a user, keeps
// the bearer token fresh, and sets Authorization on every request before
// reverse_proxy forwards it to API Manager.
package caddymodule

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// now is the clock of every session; tests replace it.
var now = time.Now

// Handler obtains an API Connect access token for one user and
// registration and sets `Authorization: Bearer <token>` on every request it
// passes on. Put it before reverse_proxy (the Caddyfile directive is
// ordered after request_header, so it runs before handle and route blocks).
//
// Every credential field takes {env.NAME} and {file./path} placeholders,
// resolved when the config loads; they stay placeholders in the JSON
// config, so the admin API and autosave.json never hold the secret.
type Handler struct {
	// Server is the platform API's base URL, scheme://host[:port][/prefix];
	// the token endpoint is <server>/api/token. Required.
	Server string `json:"server,omitempty"`
	// Realm of the user's identity provider, such as
	// provider/default-idp-2 (API Manager) or admin/default-idp-1 (Cloud
	// Manager). Required with username and password.
	Realm string `json:"realm,omitempty"`
	// Username and Password log in with the password grant.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// APIKey logs in with the api_key grant instead (SSO users).
	APIKey string `json:"api_key,omitempty"`
	// ClientID and ClientSecret are the registration's. Required.
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
	// RefreshBefore is how long before expiry a new token is fetched in
	// the background. Default: a quarter of the token's lifetime (2 h of
	// API Connect's default 8 h).
	RefreshBefore caddy.Duration `json:"refresh_before,omitempty"`
	// Timeout bounds one token request. Default 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// TLSInsecureSkipVerify turns off verification of the token
	// endpoint's certificate. Default off; a warning is logged when on.
	TLSInsecureSkipVerify bool `json:"tls_insecure_skip_verify,omitempty"`
	// TLSTrustedCACerts are PEM files of the authorities trusted for the
	// token endpoint instead of the system's. Default: the system's.
	TLSTrustedCACerts []string `json:"tls_trusted_ca_certs,omitempty"`

	logger *zap.Logger
	key    string
	id     *identity
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apic_auth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// resolved is a Handler's configuration with placeholders resolved. It
// holds secrets: it is never logged, printed or put in an error.
type resolved struct {
	server        string
	creds         apic.Credentials
	refreshBefore time.Duration
	timeout       time.Duration
	insecure      bool
	caFiles       []string
}

// Provision resolves placeholders, checks the configuration and joins (or
// starts) the token session of this identity. It makes no network call.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	cfg, err := h.resolve()
	if err != nil {
		return err
	}
	if err := cfg.check(); err != nil {
		return err
	}
	if cfg.insecure {
		h.logger.Warn("TLS verification of the token endpoint is off (tls_insecure_skip_verify): the credentials can be intercepted",
			zap.String("server", cfg.server))
	}
	h.key = cfg.poolKey()
	val, _, err := identities.LoadOrNew(h.key, func() (caddy.Destructor, error) {
		return newIdentity(cfg)
	})
	if err != nil {
		return err
	}
	h.id = val.(*identity)
	h.id.setLogger(h.logger)
	return nil
}

// placeholderRE finds placeholders, to name them in errors without
// quoting any literal text around them.
var placeholderRE = regexp.MustCompile(`\{[^{}]+\}`)

// resolve replaces {env.*} and {file.*} placeholders in every string field.
func (h *Handler) resolve() (*resolved, error) {
	repl := caddy.NewReplacer()
	get := func(field, raw string) (string, error) {
		v, err := repl.ReplaceOrErr(raw, true, true)
		if err != nil {
			names := placeholderRE.FindAllString(raw, -1)
			return "", fmt.Errorf("apic_auth: %s: placeholder %s is unset, empty or unreadable", field, strings.Join(names, ", "))
		}
		return v, nil
	}
	cfg := &resolved{
		refreshBefore: time.Duration(h.RefreshBefore),
		timeout:       time.Duration(h.Timeout),
		insecure:      h.TLSInsecureSkipVerify,
	}
	var err error
	for _, f := range []struct {
		name string
		raw  string
		dst  *string
	}{
		{"server", h.Server, &cfg.server},
		{"realm", h.Realm, &cfg.creds.Realm},
		{"username", h.Username, &cfg.creds.Username},
		{"password", h.Password, &cfg.creds.Password},
		{"api_key", h.APIKey, &cfg.creds.APIKey},
		{"client_id", h.ClientID, &cfg.creds.ClientID},
		{"client_secret", h.ClientSecret, &cfg.creds.ClientSecret},
	} {
		if *f.dst, err = get(f.name, f.raw); err != nil {
			return nil, err
		}
	}
	for i, p := range h.TLSTrustedCACerts {
		v, err := get(fmt.Sprintf("tls_trusted_ca_certs[%d]", i), p)
		if err != nil {
			return nil, err
		}
		cfg.caFiles = append(cfg.caFiles, v)
	}
	return cfg, nil
}

// check reports what is missing or contradictory, naming the fields.
func (c *resolved) check() error {
	var missing []string
	if c.server == "" {
		missing = append(missing, "server")
	}
	switch {
	case c.creds.APIKey != "" && (c.creds.Username != "" || c.creds.Password != ""):
		return fmt.Errorf("apic_auth: set either api_key or username and password, not both")
	case c.creds.APIKey == "":
		if c.creds.Username == "" {
			missing = append(missing, "username (or api_key)")
		}
		if c.creds.Password == "" {
			missing = append(missing, "password (or api_key)")
		}
		if c.creds.Realm == "" {
			missing = append(missing, "realm")
		}
	}
	if c.creds.ClientID == "" {
		missing = append(missing, "client_id")
	}
	if c.creds.ClientSecret == "" {
		missing = append(missing, "client_secret")
	}
	if len(missing) > 0 {
		return fmt.Errorf("apic_auth: missing %s", strings.Join(missing, ", "))
	}
	if err := apic.CheckServer(c.server); err != nil {
		return fmt.Errorf("apic_auth: server: %v", err)
	}
	if c.creds.Realm != "" && !strings.Contains(c.creds.Realm, "/") {
		return fmt.Errorf("apic_auth: realm: want <scope>/<identity provider> such as provider/default-idp-2, got %q", c.creds.Realm)
	}
	if c.refreshBefore < 0 {
		return fmt.Errorf("apic_auth: refresh_before: want a positive duration")
	}
	if c.timeout < 0 {
		return fmt.Errorf("apic_auth: timeout: want a positive duration")
	}
	if c.insecure && len(c.caFiles) > 0 {
		return fmt.Errorf("apic_auth: tls_insecure_skip_verify and tls_trusted_ca_certs exclude each other")
	}
	return nil
}

// Validate checks the configuration; Provision has resolved it already.
func (h *Handler) Validate() error {
	if h.id == nil {
		return fmt.Errorf("apic_auth: not provisioned")
	}
	return nil
}

// Cleanup leaves the token session; the last handler using it stops it.
func (h *Handler) Cleanup() error {
	if h.key == "" {
		return nil
	}
	_, err := identities.Delete(h.key)
	h.key, h.id = "", nil
	return err
}

// ServeHTTP sets the Authorization header and calls the next handler. When
// no token can be had it answers 502 with API Connect's error body.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	t, err := h.id.sess.Get(r.Context())
	if err != nil {
		return h.id.fail(w, r, err)
	}
	// The slice is shared by every request with this token; handlers
	// replace header values, they do not write into them.
	r.Header["Authorization"] = t.HeaderValues
	if ce := h.logger.Check(zapcore.DebugLevel, "bearer token set"); ce != nil {
		ce.Write(zap.String("identity", h.id.name), zap.Time("token_expires", t.Expiry))
	}
	return next.ServeHTTP(w, r)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
