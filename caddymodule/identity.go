package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/guard"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
)

// identities holds one token session per identity (server, user,
// registration and connection settings), shared by every handler that
// names it and kept across config reloads.
var identities = caddy.NewUsagePool()

// identity is a token session and what it needs.
type identity struct {
	name     string
	grant    string
	server   string
	realm    string
	user     string
	http     *http.Client
	client   *apic.Client
	sess     *session.Manager
	env      atomic.Pointer[provisionEnv]
	stats    identityStats
	relogins guard.Relogins
	// scrub removes the credentials from any text the identity shows:
	// the 502 body, the status, events and logs.
	scrub *apic.Scrubber
	// sinks are the token files it writes (sinks.go).
	sinks identitySinks
	// shared is the shared session's record and storage (shared.go);
	// nil without one.
	shared *sharedIdentity
	first  firstLogin
	// scope is the scope its tokens are narrowed to (sorted); nil for
	// the registration's.
	scope []string
	// scopeNote is the last comparison of a token's scopes with scope
	// (checkTokenScopes), so that each difference is logged once.
	scopeNote atomic.Pointer[string]
}

// firstLogin is the outcome of an identity's first login, started by the
// first config that uses the identity (loginAtStart).
type firstLogin struct {
	once sync.Once
	done chan struct{} // closed when tok or err is set
	tok  *session.Token
	err  error
}

// provisionEnv is what the latest config that uses an identity gave it:
// the session's hooks log and emit events through it.
type provisionEnv struct {
	logger *zap.Logger
	ctx    caddy.Context
	events *caddyevents.App
}

// poolKey is a hash of everything that makes a session: two handlers with
// the same key share one token. The secrets are in it only hashed.
func (c *resolved) poolKey() string {
	h := sha256.New()
	parts := []string{
		c.name, c.server, c.creds.Realm, c.creds.Username, c.creds.Password, c.creds.APIKey,
		c.creds.ClientID, c.creds.ClientSecret, c.refreshBefore.String(), c.timeout.String(),
		strconv.FormatBool(c.insecure), strconv.FormatBool(c.signOutOnStop),
		"scope", strings.Join(c.scope, " "),
	}
	parts = append(parts, c.caFiles...)
	parts = append(parts, c.shared.poolParts()...)
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return "apic_auth:" + hex.EncodeToString(h.Sum(nil))
}

func newIdentity(ctx caddy.Context, l *zap.Logger, c *resolved) (*identity, error) {
	hc, err := apic.NewHTTPClient(c.insecure, c.caFiles)
	if err != nil {
		return nil, fmt.Errorf("tls_trusted_ca_certs: %v", err)
	}
	client := &apic.Client{Server: c.server, Credentials: c.creds, HTTP: hc, CAOption: "tls_trusted_ca_certs (apic-proxy --ca-cert)",
		Scope: c.scope, ScopeOption: "scope (apic-proxy --scope)"}
	id := &identity{server: c.server, realm: c.creds.Realm, user: c.creds.Username, grant: c.creds.Grant(), scope: c.scope, http: hc, client: client, scrub: client.Scrubber()}
	if c.shared != nil && c.shared.key != "" {
		id.scrub = apic.NewScrubber(c.creds.Password, c.creds.APIKey, c.creds.ClientSecret, c.shared.key)
	}
	if c.creds.APIKey != "" {
		id.user = "(api key)"
		id.realm = ""
	}
	id.name = c.name
	if id.name == "" {
		id.name = defaultName(c)
	}
	id.first.done = make(chan struct{})
	id.setEnv(ctx, l)
	if c.noSignOut != "" {
		l.Info(c.noSignOut, zap.String("identity", id.name), zap.Strings("scope", c.scope))
	}
	opts := session.Options{
		Fetcher:          client,
		Grant:            c.creds.Grant(),
		RefreshBefore:    c.refreshBefore,
		Timeout:          c.timeout,
		OnToken:          id.onToken,
		OnFailure:        id.onFailure,
		OnRefreshRefused: id.onRefreshRefused,
	}
	if c.signOutOnStop {
		opts.SignOut = id.signOutUpstream
	}
	if c.shared != nil {
		if id.shared, err = newSharedIdentity(ctx, id, c); err != nil {
			hc.CloseIdleConnections()
			return nil, err
		}
		opts.Shared, opts.LockWait, opts.OnShared = id.shared.store, c.shared.lockWait, id.onShared
	}
	id.sess = session.New(opts)
	return id, nil
}

// defaultName labels an identity by the server's host and the realm (or
// "api_key"), and its scope when it has one: nothing secret, no user
// name, no client id.
func defaultName(c *resolved) string {
	host := c.server
	if u, err := url.Parse(c.server); err == nil {
		host = u.Host + strings.TrimSuffix(u.Path, "/")
	}
	name := host + "/" + c.creds.Realm
	if c.creds.APIKey != "" {
		name = host + "/api_key"
	}
	if len(c.scope) > 0 {
		// A narrower token of the same user is another identity.
		name += " (scope " + strings.Join(c.scope, " ") + ")"
	}
	return name
}

// setEnv makes the session log and emit events through the latest config.
func (id *identity) setEnv(ctx caddy.Context, l *zap.Logger) {
	env := &provisionEnv{logger: l, ctx: ctx}
	if app, err := ctx.AppIfConfigured("events"); err == nil { // no subscriber otherwise
		env.events, _ = app.(*caddyevents.App)
	}
	id.env.Store(env)
}

func (id *identity) log() *zap.Logger { return id.env.Load().logger }

// emit sends a Caddy event, when the events app is configured.
func (id *identity) emit(name string, data map[string]any) {
	env := id.env.Load()
	if env.events == nil {
		return
	}
	data["identity"] = id.name
	data["server"] = id.server
	env.events.Emit(env.ctx, name, data)
}

// Events the identity emits.
const (
	EventTokenObtained = "apic_auth_token_obtained"
	EventTokenFailed   = "apic_auth_token_failed"
)

// loginAtStart starts the identity's first login in the background, once
// in its life: later configs that use it find it logged in already. l logs
// the outcome, and listen names the addresses whose requests get the
// token: one INFO line when the token arrives, or one ERROR line with what
// to do about the failure (the requests get 502 meanwhile, and the
// session retries as it always does). The token request is bounded by the
// identity's timeout, and ends when the session closes.
func (id *identity) loginAtStart(l *zap.Logger, listen []string) {
	id.first.once.Do(func() {
		go func() {
			tok, err := id.sess.Get(context.Background())
			id.first.tok, id.first.err = tok, err
			close(id.first.done)
			switch {
			case err == nil:
				l.Info("apic_auth ready: requests to these addresses are sent to API Connect as this user",
					zap.Strings("listen", listen),
					zap.String("identity", id.name),
					zap.String("server", id.server),
					zap.String("user", id.user),
					zap.String("realm", id.realm),
					zap.Time("token_valid_until", tok.Expiry))
			case errors.Is(err, session.ErrClosed):
			default:
				l.Error("API Connect login at start failed: requests get 502 until a login succeeds",
					zap.Strings("listen", listen),
					zap.String("identity", id.name),
					zap.String("server", id.server),
					zap.String("cause", session.Cause(err)),
					zap.String("error", id.scrub.Scrub(err.Error())),
					zap.String("hint", apic.LoginHint(err, id.server, apic.HintSettings{
						Server: "server", CACert: "tls_trusted_ca_certs", Timeout: "timeout", APIKey: id.grant == apic.GrantAPIKey,
					})))
			}
		}()
	})
}

// firstOutcome waits for the first login that loginAtStart started.
func (id *identity) firstOutcome(ctx context.Context) (*session.Token, error) {
	select {
	case <-id.first.done:
		return id.first.tok, id.first.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// onToken logs a new token, obtained by this proxy or adopted from the
// fleet's shared session, and writes the token files. Only a token this
// proxy requested counts in the token request durations.
func (id *identity) onToken(t *session.Token, took time.Duration) {
	if id.shared != nil {
		id.shared.refusedOnce.Store(false)
	}
	data := map[string]any{"grant": t.Grant, "expires": t.Expiry, "refresh_at": t.RefreshAt}
	fields := []zap.Field{
		zap.String("identity", id.name),
		zap.String("server", id.server),
		zap.String("grant", t.Grant),
		zap.String("realm", id.realm),
		zap.String("user", id.user),
		zap.Time("expires", t.Expiry),
		zap.Time("refresh_at", t.RefreshAt),
	}
	if id.shared != nil {
		data["generation"], data["adopted"] = t.Generation, t.Adopted
		fields = append(fields, zap.Uint64("generation", t.Generation))
	}
	msg := "obtained API Connect token"
	if t.Adopted {
		msg = "adopted the fleet's API Connect token"
		fields = append(fields, zap.String("written_by", t.WrittenBy), zap.Time("written_at", t.WrittenAt))
	} else {
		id.stats.tokenRequestTook(took)
		fields = append(fields, zap.Duration("took", took))
	}
	id.emit(EventTokenObtained, data)
	id.log().Info(msg, fields...)
	id.checkTokenScopes(t)
	id.writeSinks(t)
}

func (id *identity) onFailure(err error, retryAt time.Time, took time.Duration) {
	fields := []zap.Field{
		zap.String("identity", id.name),
		zap.String("server", id.server),
		zap.Time("retry_at", retryAt),
		zap.Duration("took", took),
		zap.String("error", id.scrub.Scrub(err.Error())),
	}
	grant, cause, status := id.grant, session.Cause(err), 0
	fields = append(fields, zap.String("cause", cause))
	var ae *apic.Error
	if errors.As(err, &ae) {
		grant, status = ae.Grant, ae.Status
		fields = append(fields, zap.Int("status", status), zap.Strings("server_message", id.scrub.ScrubAll(append([]string(nil), ae.Messages...))))
	}
	id.stats.tokenRequestTook(took)
	id.emit(EventTokenFailed, map[string]any{"grant": grant, "cause": cause, "status": status, "error": id.scrub.Scrub(err.Error()), "retry_at": retryAt})
	id.log().Warn("API Connect token request failed", fields...)
}

func (id *identity) onRefreshRefused(err error) {
	id.log().Info("refresh token refused; logging in again",
		zap.String("identity", id.name), zap.String("error", id.scrub.Scrub(err.Error())))
}

// signOutUpstream ends the API Connect session of t: the session's
// SignOut when sign_out_on_stop is on.
func (id *identity) signOutUpstream(ctx context.Context, t *session.Token) error {
	if err := id.client.SignOut(ctx, t.Token); err != nil {
		id.log().Warn("could not sign the API Connect session out", zap.String("identity", id.name), zap.String("error", id.scrub.Scrub(err.Error())))
		return err
	}
	id.log().Info("signed the API Connect session out", zap.String("identity", id.name))
	return nil
}

// Destruct stops the session when the last config using it is unloaded;
// the session signs out upstream unless sign_out_on_stop is off.
func (id *identity) Destruct() error {
	defer id.http.CloseIdleConnections()
	_ = id.sess.Close() // a failed sign-out is logged; the token expires anyway
	id.shared.close()
	return nil
}

// countReplay counts a replay by outcome.
func (id *identity) countReplay(outcome string) { id.stats.count(&id.stats.replays, outcome) }

// statusClientClosedRequest is what Caddy reports when the client left.
const statusClientClosedRequest = 499

// fail answers a request for which no token could be had: 502 with API
// Connect's error body naming the cause, and Retry-After when the next
// token request's time is known.
func (id *identity) fail(w http.ResponseWriter, r *http.Request, err error) error {
	if r.Context().Err() != nil {
		return caddyhttp.Error(statusClientClosedRequest, err)
	}
	msg := "apic_auth could not obtain an API Connect token: " + id.scrub.Scrub(err.Error())
	cause := session.Cause(err)
	if cause == "closing" {
		msg = "apic_auth: the token session is closing with its configuration; retry"
	}
	id.stats.count(&id.stats.failures, cause)
	var un *session.Unavailable
	if errors.As(err, &un) && !un.RetryAt.IsZero() {
		setRetryAfter(w.Header(), un.RetryAt)
	}
	if ce := id.log().Check(zap.DebugLevel, "no token for request"); ce != nil {
		ce.Write(zap.String("identity", id.name), zap.String("error", msg))
	}
	writeAPIError(w, http.StatusBadGateway, msg)
	return nil
}

// setRetryAfter sets Retry-After to the whole seconds until at, at least 1.
func setRetryAfter(h http.Header, at time.Time) {
	secs := int64(math.Ceil(time.Until(at).Seconds()))
	h.Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
}

// writeAPIError answers in API Connect's error shape.
func writeAPIError(w http.ResponseWriter, status int, msg ...string) {
	body, _ := json.Marshal(struct {
		Status  int      `json:"status"`
		Message []string `json:"message"`
	}{status, msg})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// plainHTTPBeyondLoopback reports whether server is plain http:// to a host
// other than this machine's loopback.
func plainHTTPBeyondLoopback(server string) bool {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "http" {
		return false
	}
	host := strings.ToLower(u.Hostname())
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// Interface guards
var _ caddy.Destructor = (*identity)(nil)
