package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the apic_auth endpoints of Caddy's admin API:
//
//	GET  /apic_auth/status   every identity's state, never a secret or token
//	POST /apic_auth/refresh  fetch a new token now (?name=<identity> for one)
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
		{Pattern: "/apic_auth/refresh", Handler: caddy.AdminHandlerFunc(a.handleRefresh)},
	}
}

// identityStatus is one identity in GET /apic_auth/status.
type identityStatus struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	Realm  string `json:"realm,omitempty"`
	User   string `json:"user"`
	Grant  string `json:"grant"`
	// State is the session's: no_token, valid, refreshing, expired,
	// backing_off or cooling_down (see session.State).
	State        string        `json:"state"`
	TokenGrant   string        `json:"token_grant,omitempty"`
	TokenExpires *time.Time    `json:"token_expires,omitempty"`
	RefreshAt    *time.Time    `json:"refresh_at,omitempty"`
	LastRefresh  *time.Time    `json:"last_refresh,omitempty"`
	LastError    string        `json:"last_error,omitempty"`
	RetryAt      *time.Time    `json:"retry_at,omitempty"`
	Counts       statsSnapshot `json:"counts"`
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
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (id *identity) status() identityStatus {
	st := id.sess.Status()
	out := identityStatus{
		Name: id.name, Server: id.server, Realm: id.realm, User: id.user, Grant: id.grant,
		State: string(st.State), LastRefresh: timePtr(st.LastObtained), RetryAt: timePtr(st.RetryAt),
		Counts: id.stats.snapshot(st.Requests), Waits: st.Waited,
	}
	if st.LastError != nil {
		out.LastError = id.scrub.Scrub(st.LastError.Error())
	}
	paths, until := id.relogins.Status(time.Now())
	out.SuppressedPaths, out.ReloginsSuppressedUntil = paths, timePtr(until)
	out.TokenFiles = id.sinkStatus()
	if t := st.Token; t != nil {
		out.TokenGrant = t.Grant
		out.TokenExpires = timePtr(t.Expiry)
		out.RefreshAt = timePtr(t.RefreshAt)
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
		Error        string     `json:"error,omitempty"`
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
