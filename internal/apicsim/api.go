package apicsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// serveAPI answers every /api call but /api/token.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch p {
	case "/api/cloud/admin/identity-providers":
		if s.allow(w, r, http.MethodGet) {
			s.listIdentityProviders(w, r, "admin")
		}
		return
	case "/api/cloud/provider/identity-providers":
		if s.allow(w, r, http.MethodGet) {
			s.listIdentityProviders(w, r, "provider")
		}
		return
	}
	type route struct {
		method string
		scope  string
		admin  bool
		serve  func(http.ResponseWriter, *http.Request, *accessToken)
	}
	var rt *route
	switch {
	case p == "/api/me":
		rt = &route{http.MethodGet, "my:view", false, s.getMe}
	case p == "/api/me/sign-out":
		rt = &route{http.MethodPost, "my:manage", false, s.signOut}
	case p == "/api/orgs":
		rt = &route{http.MethodGet, "org:view", false, s.listOrgs}
	case p == "/api/cloud/orgs":
		rt = &route{http.MethodGet, "cloud:view", true, s.listCloudOrgs}
	case p == "/api/cloud/api-keys":
		rt = &route{http.MethodPost, "my:manage", false, s.createAPIKey}
	case p == "/api/cloud/registrations" && r.Method == http.MethodPost:
		rt = &route{http.MethodPost, "cloud:manage", true, s.createRegistration}
	case p == "/api/cloud/registrations":
		rt = &route{http.MethodGet, "cloud:view", true, s.listRegistrations}
	case isPublishPath(p):
		rt = &route{http.MethodPost, "product:stage", false, s.publish}
	default:
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("%s %s is not a valid API path.", r.Method, r.URL.Path))
		return
	}
	if !s.allow(w, r, rt.method) {
		return
	}
	tok, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if rt.admin && !strings.HasPrefix(tok.user.Realm, "admin/") {
		writeError(w, r, http.StatusForbidden, "This operation needs a Cloud Manager user (realm admin/...).")
		return
	}
	if rt.scope != "" && !slices.Contains(tok.scopes, rt.scope) {
		writeError(w, r, http.StatusForbidden, fmt.Sprintf("The token lacks the scope %s.", rt.scope))
		return
	}
	rt.serve(w, r, tok)
}

// allow answers 405 unless the request has the method.
func (s *Server) allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeError(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
	return false
}

// authenticate checks the bearer token: signature, expiry, revocation.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*accessToken, bool) {
	const prefix = "bearer "
	h := r.Header.Get("Authorization")
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		writeError(w, r, http.StatusUnauthorized, "Authorization header with a bearer token is required.")
		return nil, false
	}
	raw := strings.TrimSpace(h[len(prefix):])
	now := s.now()
	v, ok := s.tokens.Load(raw)
	if !ok {
		var c tokenClaims
		if err := s.signer.verify(raw, &c); err != nil {
			writeError(w, r, http.StatusUnauthorized, "Invalid token.")
			return nil, false
		}
		// Signed here but forgotten: only expired tokens are forgotten.
		writeError(w, r, http.StatusUnauthorized, "The token has expired.")
		return nil, false
	}
	tok := v.(*accessToken)
	if !now.Before(tok.expires) {
		writeError(w, r, http.StatusUnauthorized, "The token has expired.")
		return nil, false
	}
	s.mu.Lock()
	revoked := tok.seq <= s.revokedSeq || tok.seq < tok.user.rejectBefore || tok.session.revoked
	s.mu.Unlock()
	if revoked {
		writeError(w, r, http.StatusUnauthorized, "The token has been revoked.")
		return nil, false
	}
	return tok, true
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Server) listIdentityProviders(w http.ResponseWriter, r *http.Request, scope string) {
	type idp struct {
		Type string `json:"type"`
		IdentityProvider
		RealmS string `json:"realm"`
	}
	s.mu.Lock()
	results := []idp{}
	for _, p := range s.cfg.IdentityProviders {
		if p.Scope == scope {
			results = append(results, idp{Type: "configured_identity_provider", IdentityProvider: p, RealmS: p.Realm()})
		}
	}
	s.mu.Unlock()
	reply(w, r, http.StatusOK, map[string]any{"total_results": len(results), "results": results})
}

func (s *Server) getMe(w http.ResponseWriter, r *http.Request, tok *accessToken) {
	u := tok.user
	idp := u.Realm[strings.IndexByte(u.Realm, '/')+1:]
	me := map[string]any{
		"type": "me", "api_version": "2.0.0", "id": u.id, "name": u.Username,
		"title": u.Username, "state": "enabled", "identity_provider": idp,
		"username": u.Username, "email": u.Email, "first_name": u.FirstName,
		"last_name": u.LastName, "realm": u.Realm, "url": baseURL(r) + "/api/me",
	}
	if f := r.URL.Query().Get("fields"); f != "" {
		sel := make(map[string]any)
		for _, k := range strings.Split(f, ",") {
			if v, ok := me[strings.TrimSpace(k)]; ok {
				sel[strings.TrimSpace(k)] = v
			}
		}
		me = sel
	}
	reply(w, r, http.StatusOK, me)
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request, tok *accessToken) {
	s.mu.Lock()
	tok.session.revoked = true
	for k, rt := range s.refresh {
		if rt.session == tok.session {
			delete(s.refresh, k)
		}
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) orgJSON(r *http.Request, o Org) map[string]any {
	t := o.OrgType
	if t == "" {
		t = "provider"
	}
	return map[string]any{
		"type": "org", "api_version": "2.0.0", "id": o.Name, "name": o.Name, "title": o.Title,
		"state": "enabled", "org_type": t, "url": baseURL(r) + "/api/orgs/" + o.Name,
	}
}

func (s *Server) listOrgs(w http.ResponseWriter, r *http.Request, tok *accessToken) {
	s.mu.Lock()
	results := []map[string]any{}
	for _, o := range s.cfg.Orgs {
		isAdminOrg := o.OrgType == "admin"
		adminUser := strings.HasPrefix(tok.user.Realm, "admin/")
		member := o.Owner == tok.user.Username || slices.Contains(o.Members, tok.user.Username)
		if (isAdminOrg && adminUser) || (!isAdminOrg && !adminUser && member) {
			results = append(results, s.orgJSON(r, o))
		}
	}
	s.mu.Unlock()
	reply(w, r, http.StatusOK, map[string]any{"total_results": len(results), "results": results})
}

func (s *Server) listCloudOrgs(w http.ResponseWriter, r *http.Request, _ *accessToken) {
	s.mu.Lock()
	results := []map[string]any{}
	for _, o := range s.cfg.Orgs {
		results = append(results, s.orgJSON(r, o))
	}
	s.mu.Unlock()
	reply(w, r, http.StatusOK, map[string]any{"total_results": len(results), "results": results})
}

func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request, tok *accessToken) {
	var body struct {
		ClientType  string `json:"client_type"`
		Description string `json:"description"`
		TTL         *int64 `json:"ttl"`
		MultipleUse bool   `json:"multiple_use"`
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeError(w, r, http.StatusBadRequest, "could not read the request body")
		return
	}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			writeError(w, r, http.StatusBadRequest, "invalid API key request: "+err.Error())
			return
		}
	}
	s.mu.Lock()
	ttl := s.cfg.APIKeyTTL
	if body.TTL != nil {
		if *body.TTL <= 0 {
			s.mu.Unlock()
			writeError(w, r, http.StatusBadRequest, "ttl must be a positive number of seconds")
			return
		}
		ttl = time.Duration(*body.TTL) * time.Second
	}
	key := &apiKeyState{id: randomID(), user: tok.user, expires: s.now().Add(ttl), multipleUse: body.MultipleUse}
	secret := randomSecret(32)
	s.apiKeys[secret] = key
	s.mu.Unlock()
	reply(w, r, http.StatusCreated, map[string]any{
		"type": "api_key", "api_version": "2.0.0", "id": key.id, "api_key": secret,
		"client_type": body.ClientType, "description": body.Description,
		"ttl": int64(ttl / time.Second), "multiple_use": body.MultipleUse,
		"url": baseURL(r) + "/api/cloud/api-keys/" + key.id,
	})
}

// registrationDoc is the document POST /api/cloud/registrations takes, in
// YAML or JSON, as `apic registrations:create` sends it.
type registrationDoc struct {
	Type         string   `yaml:"type"`
	APIVersion   string   `yaml:"api_version"`
	ID           string   `yaml:"id"`
	URL          string   `yaml:"url"`
	Name         string   `yaml:"name"`
	Title        string   `yaml:"title"`
	Summary      string   `yaml:"summary"`
	State        string   `yaml:"state"`
	ClientType   string   `yaml:"client_type"`
	ClientID     string   `yaml:"client_id"`
	ClientSecret string   `yaml:"client_secret"`
	Scopes       []string `yaml:"scopes"`
}

func (s *Server) registrationJSON(r *http.Request, reg *regState, secret string) map[string]any {
	return map[string]any{
		"type": "registration", "api_version": "2.0.0", "id": reg.id, "name": reg.Name,
		"title": reg.Title, "summary": reg.Summary, "state": reg.State,
		"client_type": reg.ClientType, "client_id": reg.ClientID, "client_secret": secret,
		"scopes": reg.Scopes, "created_at": reg.created.UTC().Format(time.RFC3339),
		"url": baseURL(r) + "/api/cloud/registrations/" + reg.id,
	}
}

const maskedSecret = "********"

func (s *Server) listRegistrations(w http.ResponseWriter, r *http.Request, _ *accessToken) {
	s.mu.Lock()
	regs := make([]*regState, 0, len(s.regs))
	for _, reg := range s.regs {
		regs = append(regs, reg)
	}
	s.mu.Unlock()
	sort.Slice(regs, func(i, j int) bool { return regs[i].Name < regs[j].Name })
	results := make([]map[string]any, 0, len(regs))
	for _, reg := range regs {
		results = append(results, s.registrationJSON(r, reg, maskedSecret))
	}
	reply(w, r, http.StatusOK, map[string]any{"total_results": len(results), "results": results})
}

func (s *Server) createRegistration(w http.ResponseWriter, r *http.Request, _ *accessToken) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, r, http.StatusBadRequest, "could not read the request body")
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "":
	default:
		writeError(w, r, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not supported; send application/json or application/yaml", mt))
		return
	}
	var doc registrationDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		writeError(w, r, http.StatusBadRequest, "invalid registration: "+err.Error())
		return
	}
	if doc.Name == "" {
		writeError(w, r, http.StatusBadRequest, "invalid registration: name is required")
		return
	}
	switch doc.State {
	case "":
		doc.State = "enabled"
	case "enabled", "disabled":
	default:
		writeError(w, r, http.StatusBadRequest, fmt.Sprintf("invalid registration: state must be enabled or disabled, got %q", doc.State))
		return
	}
	if doc.ClientType == "" {
		doc.ClientType = "toolkit"
	}
	if len(doc.Scopes) == 0 {
		doc.Scopes = AllScopes
	}
	// A secret the server makes up is shown once, on creation; one the
	// caller chose is masked.
	shown := maskedSecret
	if doc.ClientID == "" {
		doc.ClientID = randomID()
	}
	if doc.ClientSecret == "" {
		doc.ClientSecret = randomSecret(24)
		shown = doc.ClientSecret
	}
	s.mu.Lock()
	for _, reg := range s.regs {
		if reg.Name == doc.Name || reg.ClientID == doc.ClientID {
			s.mu.Unlock()
			writeError(w, r, http.StatusConflict, fmt.Sprintf("A registration with the name %s or the client id already exists.", doc.Name))
			return
		}
	}
	reg := &regState{
		Registration: Registration{Name: doc.Name, Title: doc.Title, Summary: doc.Summary, State: doc.State, ClientType: doc.ClientType, ClientID: doc.ClientID, ClientSecret: doc.ClientSecret, Scopes: doc.Scopes},
		id:           randomID(),
		created:      s.now(),
	}
	s.regs[reg.ClientID] = reg
	s.mu.Unlock()
	reply(w, r, http.StatusCreated, s.registrationJSON(r, reg, shown))
}

// isPublishPath matches /api/catalogs/{org}/{catalog}/publish.
func isPublishPath(p string) bool {
	parts := strings.Split(p, "/")
	return len(parts) == 6 && parts[1] == "api" && parts[2] == "catalogs" && parts[3] != "" && parts[4] != "" && parts[5] == "publish"
}

// publish streams a multipart upload of any size, checks that it is well
// formed, and answers with the byte count and SHA-256 of the whole body.
func (s *Server) publish(w http.ResponseWriter, r *http.Request, _ *accessToken) {
	parts := strings.Split(strings.TrimSuffix(r.URL.Path, "/"), "/")
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		writeError(w, r, http.StatusBadRequest, "publish takes multipart/form-data with a boundary")
		return
	}
	h := sha256.New()
	counter := &countingWriter{}
	tee := io.TeeReader(r.Body, io.MultiWriter(h, counter))
	mr := multipart.NewReader(tee, params["boundary"])
	var names []string
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			writeError(w, r, http.StatusBadRequest, "malformed multipart body: "+err.Error())
			return
		}
		names = append(names, part.FormName())
		if _, err := io.Copy(io.Discard, part); err != nil {
			writeError(w, r, http.StatusBadRequest, "malformed multipart body: "+err.Error())
			return
		}
	}
	// Count the epilogue too, so the hash covers the body byte for byte.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		writeError(w, r, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	reply(w, r, http.StatusCreated, map[string]any{
		"type": "publish", "org": parts[3], "catalog": parts[4], "state": "published",
		"parts": names, "received_bytes": counter.n, "sha256": hex.EncodeToString(h.Sum(nil)),
	})
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
