// Package caddymodule is the apic_auth HTTP handler for Caddy: it logs in
// to the IBM API Connect platform API with a registration and a user, keeps
// the bearer token fresh, and sets Authorization on every request before
// reverse_proxy forwards it to API Manager.
package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/guard"
	"github.com/apic-tools/apic-auth-proxy/internal/linkrewrite"
	"github.com/apic-tools/apic-auth-proxy/internal/replay"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
	"github.com/apic-tools/apic-auth-proxy/internal/tokensink"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler obtains an API Connect access token for one user and
// registration and sets `Authorization: Bearer <token>` on every request it
// passes on. Put it before reverse_proxy (the Caddyfile directive is
// ordered after request_header, so it runs before handle and route blocks).
//
// Every credential field takes {env.NAME} and {file./path} placeholders,
// resolved when the config loads; they stay placeholders in the JSON
// config, so the admin API and autosave.json never hold the secret.
type Handler struct {
	// Name labels this identity in metrics, events, logs and the admin
	// API. Default: the server's host and the realm (or "api_key"), never
	// a secret, a user name or a client id.
	Name string `json:"name,omitempty"`
	// Credentials is a toolkit credentials.json ("Download toolkit" in API
	// Manager): server, client_id and client_secret come from its toolkit
	// section unless set here. Default none.
	Credentials string `json:"credentials,omitempty"`
	// Server is the platform API's base URL, scheme://host[:port][/prefix];
	// the token endpoint is <server>/api/token. Required (or credentials).
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
	// Scope narrows the token to these of the registration's scopes, such
	// as my:view org:view product:view for a proxy that only reads: it is
	// sent in every token request, and a scope the registration lacks is
	// refused by the server. Without my:manage the token cannot sign out:
	// SignOutOnStop is then off, and setting it on is an error. Names the
	// platform is not known to have are logged as a warning. Default none:
	// the token has every scope of the registration.
	Scope []string `json:"scope,omitempty"`
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
	// ReplayMaxBody bounds the request body kept, as it streams, to
	// replay a request once when API Manager refuses the token with 401
	// (revoked before its expiry): the token is renewed and the request
	// sent again. A larger body streams through unbuffered and its 401
	// goes to the client. Bytes; default 4 MiB; -1 turns replay off.
	ReplayMaxBody int64 `json:"replay_max_body,omitempty"`
	// ClientAuthorization is what happens to a request that brings its
	// own Authorization header: "overwrite" (default) replaces it with
	// the proxy's token, "keep" forwards the request untouched, "reject"
	// answers 400.
	ClientAuthorization string `json:"client_authorization,omitempty"`
	// PassSignOut forwards POST /api/me/sign-out to API Manager. By
	// default it is answered here with 204, since it would end the
	// session that every client of the proxy shares.
	PassSignOut bool `json:"pass_sign_out,omitempty"`
	// SignOutOnStop signs the session out upstream when the last config
	// using this identity is unloaded (Caddy stops, or a reload drops
	// it), so that no session outlives the proxy. Default true; false
	// with SharedSession, since one proxy's stop would sign out the
	// session the whole fleet uses (set true, and any one proxy's stop
	// does: the others then log in again).
	SignOutOnStop *bool `json:"sign_out_on_stop,omitempty"`
	// AllowedHosts are host names (or IP addresses), besides loopback
	// ones, that a request's Host may name. A request for any other host
	// is answered 403 and never forwarded, so that a web page whose name
	// rebinds to this machine cannot use the proxy. Requests over a unix
	// socket are not checked. Default none: localhost, 127.0.0.0/8 and
	// [::1] only, on any port.
	AllowedHosts []string `json:"allowed_hosts,omitempty"`
	// AllowedOrigins are the web origins (scheme://host[:port]) whose
	// pages may use the proxy; CORS preflights are answered for them.
	// Any other request from a browser (it carries Origin, or
	// Sec-Fetch-Site other than none) is answered 403. Default none.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
	// RequireHeader names a request header that every request must carry
	// (any non-empty value), as one more guard against callers that cannot
	// set headers. Default none.
	RequireHeader string `json:"require_header,omitempty"`
	// Paths are the path prefixes whose requests get the token; other
	// paths are answered 404. Default /api/.
	Paths []string `json:"paths,omitempty"`
	// TokenFile is a file kept with the identity's current access token
	// and a newline, for tools that cannot send their requests through
	// the proxy: replaced atomically by a new file of mode 0600 at every
	// new token, and removed when the config stops. Its directory must
	// be writable by this user alone (or have the sticky bit), and the
	// file must not be a symbolic link. A leading ~/ is the home
	// directory. Default none.
	TokenFile string `json:"token_file,omitempty"`
	// APICConfigFile is the apic toolkit's token file
	// (~/.apiconnect/token) kept, like TokenFile, with the access token
	// in this server's entry (other servers' entries are kept), so that
	// apic commands work without apic login; on stop the entry is
	// removed. Default none.
	APICConfigFile string `json:"apic_config_file,omitempty"`
	// RewriteLinks rewrites the absolute URLs of the server (its
	// scheme://host[:port][/prefix], as API Connect writes them in url
	// fields) into URLs of the proxy as the client reached it (the
	// request's scheme and Host, which the Host check has let in): in
	// JSON response bodies, as they stream, and in the Location and
	// Content-Location headers. The client's Accept-Encoding is not
	// forwarded, so that bodies arrive decoded. Default off.
	RewriteLinks bool `json:"rewrite_links,omitempty"`
	// RewriteLinksMaxBody bounds how much of a body is rewritten; the
	// rest streams through unchanged. Bytes; default 16 MiB. Only with
	// RewriteLinks.
	RewriteLinksMaxBody int64 `json:"rewrite_links_max_body,omitempty"`
	// SharedSession shares one API Connect session among the proxies
	// that log in as this identity, and across restarts, in a Caddy
	// storage module (see SharedSession). Default none: this proxy logs
	// in on its own.
	SharedSession *SharedSession `json:"shared_session,omitempty"`

	logger *zap.Logger
	// serverHost is the server's host[:port], to name API Manager in
	// error bodies.
	serverHost string
	// links is the server's base URL when links are rewritten, else nil.
	links     *linkrewrite.Base
	linksMax  int64
	key       string
	id        *identity
	replayMax int64
	guard     *guard.Guard
}

// sinkOptions are the options that keep a token file, with their formats.
var sinkOptions = []struct {
	name   string
	format tokensink.Format
}{
	{"token_file", tokensink.Plain},
	{"apic_config_file", tokensink.Toolkit},
}

// DefaultReplayMaxBody is the default of ReplayMaxBody.
const DefaultReplayMaxBody = 4 << 20

// DefaultRewriteLinksMaxBody is the default of RewriteLinksMaxBody.
const DefaultRewriteLinksMaxBody = 16 << 20

// Values of ClientAuthorization.
const (
	ClientAuthOverwrite = "overwrite"
	ClientAuthKeep      = "keep"
	ClientAuthReject    = "reject"
)

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
	name          string
	server        string
	creds         apic.Credentials
	refreshBefore time.Duration
	timeout       time.Duration
	insecure      bool
	caFiles       []string
	signOutOnStop bool
	// scope is the Scope's set, sorted; nil for none.
	scope []string
	// noSignOut says why the session is not signed out at stop although
	// sign_out_on_stop is on by default: "" when it is not left out.
	noSignOut string
	// shared is the resolved shared_session, nil without one.
	shared *resolvedShared
	// sinkPaths are the resolved TokenFile and APICConfigFile (as
	// sinkOptions), "" when unset. They are the handler's, not the
	// identity's: not in poolKey, so that handlers that differ only in
	// them share one session.
	sinkPaths [2]string
	// problems are the fields whose value could not be had, each with
	// why.
	problems []string
}

// Provision resolves placeholders, checks the configuration and joins (or
// starts) the token session of this identity. It makes no network call.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	switch h.ClientAuthorization {
	case "", ClientAuthOverwrite, ClientAuthKeep, ClientAuthReject:
	default:
		return fmt.Errorf("client_authorization: want overwrite, keep or reject, got %q", h.ClientAuthorization)
	}
	var err error
	switch {
	case h.ReplayMaxBody == 0:
		h.replayMax = DefaultReplayMaxBody
	case h.ReplayMaxBody < -1:
		return fmt.Errorf("replay_max_body: want a size in bytes, or -1 for off, got %d", h.ReplayMaxBody)
	default:
		h.replayMax = h.ReplayMaxBody
	}
	if h.guard, err = guard.New(guard.Options{AllowedHosts: h.AllowedHosts, AllowedOrigins: h.AllowedOrigins, RequireHeader: h.RequireHeader, Paths: h.Paths}); err != nil {
		return err
	}
	h.warnLiteralSecrets()
	cfg, err := h.resolve()
	if err != nil {
		return err
	}
	if err := cfg.check(); err != nil {
		return err
	}
	h.warnUnknownScopes(cfg.scope)
	if err := checkUpstreams(ctx); err != nil {
		return err
	}
	if plainHTTPBeyondLoopback(cfg.server) {
		h.logger.Warn("the API Connect server is plain http:// on a host beyond this machine: the password and client secret travel in clear text",
			zap.String("server", cfg.server))
	}
	if cfg.insecure {
		h.logger.Warn("TLS verification of the token endpoint is off (tls_insecure_skip_verify): the credentials can be intercepted",
			zap.String("server", cfg.server))
	}
	if u, err := url.Parse(cfg.server); err == nil {
		h.serverHost = u.Host
	}
	if err := h.provisionLinks(cfg.server); err != nil {
		return err
	}
	h.key = cfg.poolKey()
	val, _, err := identities.LoadOrNew(h.key, func() (caddy.Destructor, error) {
		return newIdentity(ctx, h.logger, cfg)
	})
	if err != nil {
		return err
	}
	h.id = val.(*identity)
	h.id.setEnv(ctx, h.logger)
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	// The app checks what a handler cannot see from here, starts the
	// first login when the config starts, and starts the token files of
	// its config.
	app, err := ctx.App("apic_auth")
	if err != nil {
		return err
	}
	for i, opt := range sinkOptions {
		if path := cfg.sinkPaths[i]; path != "" {
			if err := app.(*App).claimSink(opt.name, tokensink.New(opt.format, path, cfg.server), h.id); err != nil {
				return err
			}
		}
	}
	app.(*App).checkListeners(ctx)
	if h.id.shared != nil && h.id.shared.global {
		app.(*App).useGlobalStorage(h.id)
	}
	return nil
}

// resolve replaces {env.*} and {file.*} placeholders in every string
// field. A field whose value cannot be had (an unset placeholder, a shell
// variable) is a problem of cfg, all of them reported together by check.
func (h *Handler) resolve() (*resolved, error) {
	repl := caddy.NewReplacer()
	cfg := &resolved{
		refreshBefore: time.Duration(h.RefreshBefore),
		timeout:       time.Duration(h.Timeout),
		insecure:      h.TLSInsecureSkipVerify,
		signOutOnStop: h.SharedSession == nil,
	}
	if h.SignOutOnStop != nil {
		cfg.signOutOnStop = *h.SignOutOnStop
	}
	var err error
	if cfg.scope, err = resolveScope(h.Scope); err != nil {
		return nil, err
	}
	if cfg.noSignOut, err = cfg.checkSignOutScope(h.SignOutOnStop); err != nil {
		return nil, err
	}
	get := func(field, raw string) string {
		v, err := resolvePlaceholders(repl, field, raw)
		if err != nil {
			cfg.problems = append(cfg.problems, err.Error())
			// Counted as given, so that it is not reported missing too.
			return unresolved
		}
		return v
	}
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
		*f.dst = get(f.name, f.raw)
	}
	if h.Credentials != "" {
		switch path := get("credentials", h.Credentials); path {
		case unresolved:
			// What the file would give is not missing either.
			for _, dst := range []*string{&cfg.server, &cfg.creds.ClientID, &cfg.creds.ClientSecret} {
				if *dst == "" {
					*dst = unresolved
				}
			}
		default:
			tk, err := apic.LoadToolkitCredentials(path)
			if err != nil {
				return nil, err
			}
			if cfg.server == "" {
				cfg.server = tk.Server
			}
			if cfg.creds.ClientID == "" {
				cfg.creds.ClientID, cfg.creds.ClientSecret = tk.ClientID, tk.ClientSecret
			}
		}
	}
	cfg.name = get("name", h.Name)
	for i, raw := range []string{h.TokenFile, h.APICConfigFile} {
		name := sinkOptions[i].name
		if raw == "" {
			continue
		}
		path := get(name, raw)
		if path == unresolved {
			continue
		}
		if cfg.sinkPaths[i], err = tokensink.Resolve(path); err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
	}
	if p := cfg.sinkPaths[0]; p != "" && p == cfg.sinkPaths[1] {
		return nil, fmt.Errorf("token_file and apic_config_file name the same file, %s: a file holds one format", p)
	}
	for i, p := range h.TLSTrustedCACerts {
		cfg.caFiles = append(cfg.caFiles, get(fmt.Sprintf("tls_trusted_ca_certs[%d]", i), p))
	}
	if h.SharedSession != nil {
		if cfg.shared, err = h.SharedSession.resolve(get); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// unresolved stands for a field's value that could not be had.
const unresolved = "\x00unresolved"

// check reports what is missing or contradictory, naming the fields: all
// that is missing and every field whose value could not be had, at once.
func (c *resolved) check() error {
	if c.creds.APIKey != "" && (c.creds.Username != "" || c.creds.Password != "") {
		return fmt.Errorf("set either api_key or username and password, not both")
	}
	err := c.creds.Check(c.server, configNames)
	if c.server == "" {
		// One list names all that is missing, the server first.
		err = apic.WithMissing(err, "server")
	}
	var missing *apic.MissingError
	if errors.As(err, &missing) || len(c.problems) > 0 {
		var all []string
		if missing != nil {
			all = append(all, missing.Error())
		}
		// Any other problem of the credentials may come of a value
		// that could not be had: it waits.
		return errors.New(strings.Join(append(all, c.problems...), "; "))
	}
	if err != nil {
		return err
	}
	if err := apic.CheckServer(c.server); err != nil {
		return fmt.Errorf("server: %v", err)
	}
	if c.refreshBefore < 0 {
		return fmt.Errorf("refresh_before: want a positive duration")
	}
	if c.timeout < 0 {
		return fmt.Errorf("timeout: want a positive duration")
	}
	if c.insecure && len(c.caFiles) > 0 {
		return fmt.Errorf("tls_insecure_skip_verify and tls_trusted_ca_certs exclude each other")
	}
	return nil
}

// configNames name the credentials in check's errors: the config's own
// names, with the alternative to the password grant.
var configNames = map[string]string{"username": "username (or api_key)", "password": "password (or api_key)"}

// Cleanup leaves the token session; the last handler using it stops it.
func (h *Handler) Cleanup() error {
	if h.key == "" {
		return nil
	}
	_, err := identities.Delete(h.key)
	// h.id stays: on a reload Caddy cleans the old config up while its
	// server still finishes requests, and those must not find it nil. A
	// session stopped by the last Delete answers them with ErrClosed.
	h.key = ""
	return err
}

// ServeHTTP checks who sent the request and where it goes (see guard),
// sets the Authorization header and calls the next handler. When no token
// can be had it answers 502 with API Connect's error body. A 401 from API
// Manager to a request that carried the session's token renews the token
// and replays the request once.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	origin, refused := h.guard.CheckCaller(r)
	if refused != nil {
		h.refuse(w, r, refused)
		return nil
	}
	if origin != "" && guard.IsPreflight(r) {
		guard.AnswerPreflight(w, r, origin)
		return nil
	}
	routed, err := guard.RoutedPath(r.URL)
	if err != nil {
		h.refuse(w, r, &guard.Refusal{Status: http.StatusBadRequest, Msg: "apic_auth: refused: " + err.Error()})
		return nil
	}
	if !h.guard.PathAllowed(routed) {
		h.refuse(w, r, &guard.Refusal{Status: http.StatusNotFound, Msg: h.guard.OutsidePaths()})
		return nil
	}
	if !h.PassSignOut && strings.EqualFold(r.Method, http.MethodPost) && guard.IsSignOut(routed) {
		// Signing out would end the session every client shares.
		h.debug("sign-out answered by the proxy")
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if name := h.guard.Header(); name != "" {
		r.Header.Del(name)
	}
	guard.StripConnectionAuth(r.Header)
	if len(r.Header["Authorization"]) > 0 {
		switch h.ClientAuthorization {
		case ClientAuthKeep:
			h.debug("request keeps its own Authorization")
			return h.servePlain(w, r, next, origin)
		case ClientAuthReject:
			writeAPIError(w, http.StatusBadRequest, "apic_auth: this proxy adds the Authorization header; send the request without one")
			return nil
		}
	}
	t, err := h.id.sess.Get(r.Context())
	if err != nil {
		return h.id.fail(w, r, err)
	}
	// The slice is shared by every request with this token; handlers
	// replace header values, they do not write into them.
	r.Header["Authorization"] = t.HeaderValues
	h.debug("bearer token set")
	if h.links != nil {
		// Go's transport then asks API Manager for gzip itself and
		// decodes it: the body arrives as text to rewrite.
		r.Header.Del("Accept-Encoding")
	}
	if h.replayMax < 0 || r.ContentLength > h.replayMax {
		return h.servePlain(w, r, next, origin)
	}
	return h.serveReplayable(w, r, next, t, routed, origin)
}

// refuse answers a request the guard refused, logging why at Debug.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, ref *guard.Refusal) {
	h.id.stats.count(&h.id.stats.refused, strconv.Itoa(ref.Status))
	if ce := h.logger.Check(zapcore.DebugLevel, "request refused"); ce != nil {
		ce.Write(zap.String("identity", h.id.name), zap.Int("status", ref.Status), zap.String("reason", ref.Msg),
			zap.String("method", r.Method), zap.String("host", r.Host))
	}
	writeAPIError(w, ref.Status, ref.Msg)
}

// servePlain passes the request on without replay, with the response's
// CORS headers fixed.
func (h *Handler) servePlain(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, origin string) error {
	if lw := h.linkWriter(w, r); lw != nil {
		defer h.closeLinks(lw)
		w = lw
	}
	rw := replay.NewWriter(w, false, nil, origin)
	defer rw.Put()
	return h.answerProxyError(rw, r, next.ServeHTTP(rw, r))
}

// serveReplayable sends the request on, keeping its body, and on a 401
// renews the token and sends it once more.
func (h *Handler) serveReplayable(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, t *session.Token, routed, origin string) error {
	// A failed token request's message names the token endpoint as it
	// is: it goes to the client's writer, not through the rewriting.
	client := w
	if lw := h.linkWriter(w, r); lw != nil {
		defer h.closeLinks(lw)
		w = lw
	}
	var body *replay.Body
	if r.Body != nil && r.Body != http.NoBody {
		body = replay.NewBody(r.Body, h.replayMax)
		r.Body = body
	}
	rw := replay.NewWriter(w, true, body, origin)
	err := next.ServeHTTP(rw, r)
	if !rw.Held() {
		defer rw.Put()
		return h.answerProxyError(rw, r, err)
	}
	defer rw.Put()
	if body != nil {
		rest, ok := body.Detach()
		if !ok {
			h.id.countReplay("body_too_large")
			rw.Release()
			return err
		}
		r.Body = rest
	}
	if h.id.relogins.Suppressed(routed, time.Now()) {
		// This resource refused a new token lately: its 401 is its own.
		h.id.countReplay("suppressed")
		rw.Release()
		return err
	}
	// API Manager refused a token that has not expired: revoked, signed
	// out elsewhere, or signed with a key it no longer has. Retire exactly
	// that token; a newer one another request fetched stays.
	h.id.sess.Invalidate(t)
	t2, gerr := h.id.sess.Get(r.Context())
	if gerr != nil {
		h.id.countReplay("no_token")
		return h.id.fail(client, r, gerr)
	}
	h.id.log().Info("API Manager refused the token before its expiry; replaying with a new one",
		zap.String("identity", h.id.name), zap.String("method", r.Method), zap.String("path", r.URL.Path))
	r.Header["Authorization"] = t2.HeaderValues
	second := replay.NewWriter(w, false, nil, origin)
	defer second.Put()
	err = h.answerProxyError(second, r, next.ServeHTTP(second, r))
	if second.Status() != http.StatusUnauthorized {
		h.id.relogins.Replayed(routed)
		h.id.countReplay("ok")
		return err
	}
	h.id.countReplay("refused_again")
	pause, whole := h.id.relogins.RefusedAgain(routed, time.Now())
	scope := zap.String("path", r.URL.Path)
	if whole {
		scope = zap.String("scope", "every path of this identity")
	}
	h.id.log().Warn("API Manager refused a new token too: the resource refuses, not the token; its 401s go to the client without a new login for a while",
		zap.String("identity", h.id.name), scope, zap.Duration("pause", pause))
	return err
}

func (h *Handler) debug(msg string) {
	if ce := h.logger.Check(zapcore.DebugLevel, msg); ce != nil {
		ce.Write(zap.String("identity", h.id.name))
	}
}

// Interface guards
var (
	_ caddy.Module                = (*Handler)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
