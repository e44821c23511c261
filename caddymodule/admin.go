package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the apic_auth endpoints of Caddy's admin API:
//
//	GET  /apic_auth/status   every identity's state, never a secret or token
//	GET  /apic_auth/ready    200 while every identity holds a valid token, else 503
//	POST /apic_auth/refresh  fetch a new token now (for the whole fleet with shared_session)
//
// Each takes ?name=<identity> to report on (or refresh) that one alone.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.apic_auth",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/apic_auth/status", Handler: caddy.AdminHandlerFunc(a.handleStatus)},
		{Pattern: "/apic_auth/ready", Handler: caddy.AdminHandlerFunc(a.handleReady)},
		{Pattern: "/apic_auth/refresh", Handler: caddy.AdminHandlerFunc(a.handleRefresh)},
	}
}

// identityReadiness is one identity in GET /apic_auth/ready, and the
// first fields of its status: what a probe, or whoever reads why it
// fails, needs.
type identityReadiness struct {
	Name string `json:"name"`
	// State is the session's: no_token, valid, refreshing, expired,
	// backing_off or cooling_down (see session.State).
	State string `json:"state"`
	// Ready is whether requests get the held token now (see
	// session.Status.Ready): also while a refresh is under way or backs
	// off with the token still valid.
	Ready bool `json:"ready"`
	// Cause and LastError say why the last token request failed (the
	// error scrubbed of every secret), RetryAt when the next is due.
	Cause        string     `json:"cause,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	RetryAt      *time.Time `json:"retry_at,omitempty"`
	TokenExpires *time.Time `json:"token_expires,omitempty"`
}

// identityStatus is one identity in GET /apic_auth/status.
type identityStatus struct {
	identityReadiness
	Server      string        `json:"server"`
	Realm       string        `json:"realm,omitempty"`
	User        string        `json:"user"`
	Grant       string        `json:"grant"`
	TokenGrant  string        `json:"token_grant,omitempty"`
	RefreshAt   *time.Time    `json:"refresh_at,omitempty"`
	LastRefresh *time.Time    `json:"last_refresh,omitempty"`
	Counts      statsSnapshot `json:"counts"`
	// Scope is the scope the tokens are asked for; absent for the
	// registration's. TokenScopes are the held token's own, as its
	// scopes claim names them: what it can do.
	Scope       []string `json:"scope,omitempty"`
	TokenScopes []string `json:"token_scopes,omitempty"`
	// Waits counts requests that waited for a token after the first one
	// (the held token had expired or was refused): 0 when refreshing in
	// time.
	Waits int `json:"waits"`
	// SuppressedPaths counts the paths whose 401s go to the client
	// without a new login: they refused a new token lately.
	SuppressedPaths int `json:"suppressed_paths,omitempty"`
	// ReloginsSuppressedUntil is set while no 401 makes a new login at
	// all: several paths refused new tokens at once.
	ReloginsSuppressedUntil *time.Time `json:"relogins_suppressed_until,omitempty"`
	// TokenFiles are the files kept with the token (token_file,
	// apic_config_file), with the last write's time and failure.
	TokenFiles []sinkStatus `json:"token_files,omitempty"`
	// SharedSession is the shared session's state (shared_session);
	// absent without one.
	SharedSession *sharedStatus `json:"shared_session,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// readiness formats the session's status st.
func (id *identity) readiness(st session.Status) identityReadiness {
	out := identityReadiness{Name: id.name, State: string(st.State), Ready: st.Ready, Cause: st.Cause, RetryAt: timePtr(st.RetryAt)}
	if st.LastError != nil {
		out.LastError = id.scrub.Scrub(st.LastError.Error())
	}
	if st.Token != nil {
		out.TokenExpires = timePtr(st.Token.Expiry)
	}
	return out
}

func (id *identity) status() identityStatus {
	st := id.sess.Status()
	out := identityStatus{
		identityReadiness: id.readiness(st),
		Server:            id.server, Realm: id.realm, User: id.user, Grant: id.grant, Scope: id.scope,
		LastRefresh: timePtr(st.LastObtained), Counts: id.stats.snapshot(st.Requests), Waits: st.Waited,
	}
	paths, until := id.relogins.Status(time.Now())
	out.SuppressedPaths, out.ReloginsSuppressedUntil = paths, timePtr(until)
	out.TokenFiles = id.sinkStatus()
	out.SharedSession = id.sharedStatus(st.Shared)
	if t := st.Token; t != nil {
		out.TokenGrant = t.Grant
		out.RefreshAt = timePtr(t.RefreshAt)
		out.TokenScopes, _ = apic.TokenScopes(t.AccessToken)
	}
	return out
}

func liveIdentities(name string) []*identity {
	var ids []*identity
	identities.Range(func(_, v any) bool {
		if id := v.(*identity); name == "" || id.name == name {
			ids = append(ids, id)
		}
		return true
	})
	sort.Slice(ids, func(i, j int) bool { return ids[i].name < ids[j].name })
	return ids
}

func (adminAPI) handleStatus(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed; use GET")}
	}
	out := []identityStatus{}
	for _, id := range liveIdentities(r.URL.Query().Get("name")) {
		out = append(out, id.status())
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(out)
}

// handleReady answers 200 while every identity (or the one ?name= names)
// holds a valid token, and 503 otherwise, also when there is none; the
// body lists each identity's readiness. Retry-After, on a 503, is when
// the last of the identities that are not ready may try again, when
// each of them knows it.
func (adminAPI) handleReady(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed; use GET or HEAD")}
	}
	name := r.URL.Query().Get("name")
	ids := liveIdentities(name)
	switch {
	case len(ids) == 0 && name != "":
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no apic_auth identity named %q", name)}
	case len(ids) == 0:
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("no apic_auth identity is configured: nothing to be ready for")}
	}
	out := make([]identityReadiness, 0, len(ids))
	status := http.StatusOK
	var retryAt time.Time
	known := true // every identity that is not ready knows its next attempt
	for _, id := range ids {
		rd := id.readiness(id.sess.Status())
		out = append(out, rd)
		if rd.Ready {
			continue
		}
		status = http.StatusServiceUnavailable
		if rd.RetryAt == nil {
			known = false
		} else if rd.RetryAt.After(retryAt) {
			retryAt = *rd.RetryAt
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if status != http.StatusOK && known && retryAt.After(time.Now()) {
		setRetryAfter(h, retryAt)
	}
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(out)
}

// refreshTimeout bounds POST /apic_auth/refresh.
const refreshTimeout = 30 * time.Second

func (adminAPI) handleRefresh(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed; use POST")}
	}
	name := r.URL.Query().Get("name")
	ids := liveIdentities(name)
	if len(ids) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no apic_auth identity named %q", name)}
	}
	ctx, cancel := context.WithTimeout(r.Context(), refreshTimeout)
	defer cancel()
	type result struct {
		Name         string     `json:"name"`
		OK           bool       `json:"ok"`
		TokenExpires *time.Time `json:"token_expires,omitempty"`
		// Generation is the shared session's new generation: the
		// refresh is the fleet's. Absent without a shared session.
		Generation *uint64 `json:"generation,omitempty"`
		Error      string  `json:"error,omitempty"`
	}
	out := []result{}
	status := http.StatusOK
	for _, id := range ids {
		res := result{Name: id.name}
		t, err := id.sess.Refresh(ctx)
		if err != nil {
			res.Error = id.scrub.Scrub(err.Error())
			status = http.StatusBadGateway
		} else {
			res.OK, res.TokenExpires = true, timePtr(t.Expiry)
			if id.shared != nil {
				res.Generation = &t.Generation
			}
		}
		out = append(out, res)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(out)
}

// Interface guards
var (
	_ caddy.Module      = (*adminAPI)(nil)
	_ caddy.AdminRouter = (*adminAPI)(nil)
)
