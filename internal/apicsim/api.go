package apicsim

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

const apiVersion = "2.0.0"

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

// baseURL is the scheme and host the request came to, which every url
// field starts with, so that urls resolve on this server.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/api"
}

// timestamp formats t as the API's date-time fields do.
func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// identityProviderView is IdentityProvider in a list, as the document
// declares it.
type identityProviderView struct {
	Name         string `json:"name"`
	Title        string `json:"title"`
	Default      bool   `json:"default"`
	RegistryType string `json:"registry_type"`
	UserManaged  bool   `json:"user_managed"`
	Realm        string `json:"realm"`
}

func (s *Server) listIdentityProviders(scope string) func(http.ResponseWriter, *http.Request, *call) {
	return func(w http.ResponseWriter, r *http.Request, _ *call) {
		s.mu.Lock()
		var results []identityProviderView
		for _, p := range s.cfg.IdentityProviders {
			if p.Scope == scope {
				results = append(results, identityProviderView{Name: p.Name, Title: p.Title, Default: p.Default, RegistryType: p.RegistryType, UserManaged: p.UserManaged, Realm: p.Realm()})
			}
		}
		s.mu.Unlock()
		replyList(w, r, results)
	}
}

// meView is the Me schema: the caller's profile (no id, title or realm).
type meView struct {
	Type                string            `json:"type"`
	APIVersion          string            `json:"api_version"`
	Name                string            `json:"name"`
	Username            string            `json:"username"`
	Email               string            `json:"email,omitempty"`
	FirstName           string            `json:"first_name,omitempty"`
	LastName            string            `json:"last_name,omitempty"`
	State               string            `json:"state"`
	IdentityProvider    string            `json:"identity_provider"`
	ForcePasswordChange bool              `json:"force_password_change"`
	LastLoginAt         string            `json:"last_login_at,omitempty"`
	Metadata            map[string]string `json:"metadata,omitempty"`
	URL                 string            `json:"url"`
}

// meView is called with s.mu held.
func (s *Server) meView(r *http.Request, u *userState) meView {
	v := meView{
		Type: "me", APIVersion: apiVersion, Name: u.Username, Username: u.Username,
		Email: u.Email, FirstName: u.FirstName, LastName: u.LastName, State: "enabled",
		IdentityProvider: u.Realm[strings.IndexByte(u.Realm, '/')+1:], Metadata: u.metadata,
		URL: baseURL(r) + "/me",
	}
	if !u.lastLogin.IsZero() {
		v.LastLoginAt = timestamp(u.lastLogin)
	}
	return v
}

func (s *Server) getMe(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	v := s.meView(r, c.tok.user)
	s.mu.Unlock()
	replyOne(w, r, http.StatusOK, v)
}

// meUpdate is PUT /me's body: the Me schema. The profile fields change;
// the read-only ones are ignored; the others must keep their value.
type meUpdate struct {
	Type                *string           `json:"type"`
	APIVersion          *string           `json:"api_version"`
	Name                *string           `json:"name"`
	URL                 *string           `json:"url"`
	Email               *string           `json:"email"`
	FirstName           *string           `json:"first_name"`
	LastName            *string           `json:"last_name"`
	Metadata            map[string]string `json:"metadata"`
	Username            *string           `json:"username"`
	State               *string           `json:"state"`
	IdentityProvider    *string           `json:"identity_provider"`
	ForcePasswordChange *bool             `json:"force_password_change"`
	LastLoginAt         *string           `json:"last_login_at"`
	Photo               *string           `json:"photo"`
	Studio              map[string]any    `json:"studio"`
}

func (s *Server) updateMe(w http.ResponseWriter, r *http.Request, c *call) {
	var body meUpdate
	if e := s.readBody(r, &body); e != nil {
		writeError(w, r, e.status, e.msg)
		return
	}
	if e := checkEnum("state", deref(body.State), "enabled", "disabled"); e != nil {
		writeError(w, r, e.status, e.msg)
		return
	}
	s.mu.Lock()
	u := c.tok.user
	cur := s.meView(r, u)
	for _, f := range []struct {
		name      string
		got, have string
	}{
		{"username", deref(body.Username), cur.Username},
		{"state", deref(body.State), cur.State},
		{"identity_provider", deref(body.IdentityProvider), cur.IdentityProvider},
	} {
		if f.got != "" && f.got != f.have {
			s.mu.Unlock()
			writeError(w, r, http.StatusBadRequest, fmt.Sprintf("property %s cannot be changed with PUT /me (it is %q)", f.name, f.have))
			return
		}
	}
	if body.Email != nil {
		u.Email = *body.Email
	}
	if body.FirstName != nil {
		u.FirstName = *body.FirstName
	}
	if body.LastName != nil {
		u.LastName = *body.LastName
	}
	if body.Metadata != nil {
		u.metadata = body.Metadata
	}
	v := s.meView(r, u)
	s.mu.Unlock()
	replyOne(w, r, http.StatusOK, v)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// readBody decodes a JSON or YAML request body into dst, refusing
// undeclared properties.
func (s *Server) readBody(r *http.Request, dst any) *requestError {
	doc, e := readDoc(r, 4<<20, true)
	if e != nil {
		return e
	}
	return decodeDoc(doc, dst)
}

func (s *Server) signOut(w http.ResponseWriter, _ *http.Request, c *call) {
	s.mu.Lock()
	c.tok.session.revoked = true
	for k, rt := range s.refresh {
		if rt.session == c.tok.session {
			delete(s.refresh, k)
		}
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// apiKeyView is the APIKey schema. The secret is shown once, on creation.
type apiKeyView struct {
	Type        string            `json:"type"`
	APIVersion  string            `json:"api_version"`
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Title       string            `json:"title,omitempty"`
	Summary     string            `json:"summary,omitempty"`
	APIKey      string            `json:"api_key,omitempty"`
	ClientType  string            `json:"client_type"`
	MultipleUse bool              `json:"multiple_use"`
	TTL         int64             `json:"ttl"`
	Realm       string            `json:"realm"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	ExpiresAt   string            `json:"expires_at"`
	CreatedAt   string            `json:"created_at"`
	UpdatedAt   string            `json:"updated_at"`
	URL         string            `json:"url"`
}

func (k *apiKeyState) view(r *http.Request, secret string) apiKeyView {
	return apiKeyView{
		Type: "api_key", APIVersion: apiVersion, ID: k.id, Name: k.name, Title: k.title, Summary: k.summary,
		APIKey: secret, ClientType: k.clientType, MultipleUse: k.multipleUse, TTL: int64(k.ttl / time.Second),
		Realm: k.user.Realm, Metadata: k.metadata, ExpiresAt: timestamp(k.expires),
		CreatedAt: timestamp(k.created), UpdatedAt: timestamp(k.created), URL: baseURL(r) + "/cloud/api-keys/" + k.id,
	}
}

// readOnly are the read-only properties of every resource's schema: a
// request may carry them, and they are ignored.
type readOnly struct {
	Type       string `json:"type"`
	APIVersion string `json:"api_version"`
	ID         string `json:"id"`
	URL        string `json:"url"`
	CreatedAt  string `json:"created_at"`
	UpdatedAt  string `json:"updated_at"`
}

// apiKeyCreate is POST /api/cloud/api-keys's body: the APIKey schema, and
// description, which the operation requires though the schema does not
// declare it.
type apiKeyCreate struct {
	ClientType  string            `json:"client_type"`
	Description string            `json:"description"`
	Name        string            `json:"name"`
	Title       string            `json:"title"`
	Summary     string            `json:"summary"`
	TTL         *int64            `json:"ttl"`
	MultipleUse bool              `json:"multiple_use"`
	Metadata    map[string]string `json:"metadata"`
	Realm       string            `json:"realm"`
	ExpiresAt   string            `json:"expires_at"`
	IDToken     string            `json:"id_token"`
	TokenExp    *int64            `json:"token_exp"`
	TokenIat    *int64            `json:"token_iat"`
	TokenJTI    string            `json:"token_jti"`
	UserURL     string            `json:"user_url"`
	APIKey      string            `json:"api_key"`
	readOnly
}

func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request, c *call) {
	doc, e := readDoc(r, 64<<10, true)
	if e == nil {
		e = requireProps(doc, "client_type", "description")
	}
	var body apiKeyCreate
	if e == nil {
		e = decodeDoc(doc, &body)
	}
	if e == nil {
		e = checkEnum("client_type", body.ClientType, "toolkit", "atm", "ai")
	}
	if e == nil && body.TTL != nil && *body.TTL <= 0 {
		e = badRequest("property ttl must be a positive number of seconds, got %d", *body.TTL)
	}
	if e == nil && body.APIKey != "" {
		e = badRequest("property api_key is made by the server and cannot be given")
	}
	if e != nil {
		writeError(w, r, e.status, e.msg)
		return
	}
	s.mu.Lock()
	now := s.now()
	ttl := s.cfg.APIKeyTTL
	if body.TTL != nil {
		ttl = time.Duration(*body.TTL) * time.Second
	}
	key := &apiKeyState{
		id: randomID(), user: c.tok.user, created: now, expires: now.Add(ttl), ttl: ttl, multipleUse: body.MultipleUse,
		clientType: body.ClientType, name: body.Name, title: body.Title, summary: body.Summary, metadata: body.Metadata,
	}
	if key.summary == "" {
		key.summary = body.Description
	}
	if key.name == "" {
		key.name = "api-key-" + key.id[:8]
	}
	secret := randomSecret(32)
	s.apiKeys[secret] = key
	v := key.view(r, secret)
	s.mu.Unlock()
	reply(w, r, http.StatusCreated, v)
}

// userAPIKeys returns the caller's live API keys, oldest first. Called
// with s.mu held.
func (s *Server) userAPIKeys(u *userState) []*apiKeyState {
	now := s.now()
	var keys []*apiKeyState
	for _, k := range s.apiKeys {
		if k.user == u && now.Before(k.expires) && !(k.used && !k.multipleUse) {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if !keys[i].created.Equal(keys[j].created) {
			return keys[i].created.Before(keys[j].created)
		}
		return keys[i].id < keys[j].id
	})
	return keys
}

func (s *Server) listAPIKeys(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	views := viewsOf(s.userAPIKeys(c.tok.user), func(k *apiKeyState) apiKeyView { return k.view(r, "") })
	s.mu.Unlock()
	replyList(w, r, views)
}

// findAPIKey finds one of the caller's keys by id or name and returns its
// secret too. Called with s.mu held.
func (s *Server) findAPIKey(u *userState, ref string) (*apiKeyState, string) {
	for _, k := range s.userAPIKeys(u) {
		if k.id == ref || k.name == ref {
			for secret, k2 := range s.apiKeys {
				if k2 == k {
					return k, secret
				}
			}
		}
	}
	return nil, ""
}

func (s *Server) getAPIKey(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	k, _ := s.findAPIKey(c.tok.user, c.params["key"])
	var v apiKeyView
	if k != nil {
		v = k.view(r, "")
	}
	s.mu.Unlock()
	if k == nil {
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("API key %s not found.", c.params["key"]))
		return
	}
	replyOne(w, r, http.StatusOK, v)
}

func (s *Server) deleteAPIKey(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	k, secret := s.findAPIKey(c.tok.user, c.params["key"])
	var v apiKeyView
	if k != nil {
		delete(s.apiKeys, secret)
		v = k.view(r, "")
	}
	s.mu.Unlock()
	if k == nil {
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("API key %s not found.", c.params["key"]))
		return
	}
	reply(w, r, http.StatusOK, v)
}

// registrationClientTypes are the document's values of client_type.
var registrationClientTypes = []string{
	"ui", "toolkit", "consumer_ui", "consumer_toolkit", "juhu", "designer", "atm", "ai", "gateway",
	"wm_api_gateway_proxy", "portal", "dev_portal", "ibm_cloud", "compliance", "discovery", "analytics",
	"transition_helper", "analytics_proxy",
}

// registrationView is the Registration schema.
type registrationView struct {
	Type         string            `json:"type"`
	APIVersion   string            `json:"api_version"`
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Title        string            `json:"title,omitempty"`
	Summary      string            `json:"summary,omitempty"`
	State        string            `json:"state"`
	ClientType   string            `json:"client_type"`
	ClientID     string            `json:"client_id"`
	ClientSecret string            `json:"client_secret"`
	Scopes       []string          `json:"scopes"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	CreatedAt    string            `json:"created_at"`
	UpdatedAt    string            `json:"updated_at"`
	URL          string            `json:"url"`
}

const maskedSecret = "********"

func (reg *regState) view(r *http.Request, secret string) registrationView {
	return registrationView{
		Type: "registration", APIVersion: apiVersion, ID: reg.id, Name: reg.Name, Title: reg.Title,
		Summary: reg.Summary, State: reg.State, ClientType: reg.ClientType, ClientID: reg.ClientID,
		ClientSecret: secret, Scopes: reg.Scopes, Metadata: reg.metadata,
		CreatedAt: timestamp(reg.created), UpdatedAt: timestamp(reg.updated), URL: baseURL(r) + "/cloud/registrations/" + reg.id,
	}
}

// registrationDoc is the Registration schema as a request body, in YAML or
// JSON, as `apic registrations:create` sends it.
type registrationDoc struct {
	Name                          *string           `json:"name"`
	Title                         *string           `json:"title"`
	Summary                       *string           `json:"summary"`
	State                         *string           `json:"state"`
	ClientType                    *string           `json:"client_type"`
	ClientID                      *string           `json:"client_id"`
	ClientSecret                  *string           `json:"client_secret"`
	Scopes                        []string          `json:"scopes"`
	Metadata                      map[string]string `json:"metadata"`
	RegistrationPublicCertificate *string           `json:"registration_public_certificate"`
	CloudSettingURLs              []string          `json:"cloud_setting_urls"`
	readOnly
}

// check refuses values outside the document's enums.
func (d *registrationDoc) check() *requestError {
	if e := checkEnum("state", deref(d.State), "enabled", "disabled"); e != nil {
		return e
	}
	return checkEnum("client_type", deref(d.ClientType), registrationClientTypes...)
}

// sortedRegistrations returns the registrations by name. Called with s.mu
// held.
func (s *Server) sortedRegistrations() []*regState {
	regs := make([]*regState, 0, len(s.regs))
	for _, reg := range s.regs {
		regs = append(regs, reg)
	}
	sort.Slice(regs, func(i, j int) bool { return regs[i].Name < regs[j].Name })
	return regs
}

func (s *Server) listRegistrations(w http.ResponseWriter, r *http.Request, _ *call) {
	s.mu.Lock()
	views := viewsOf(s.sortedRegistrations(), func(reg *regState) registrationView { return reg.view(r, maskedSecret) })
	s.mu.Unlock()
	replyList(w, r, views)
}

// findRegistration finds a registration by name or id. Called with s.mu
// held.
func (s *Server) findRegistration(ref string) *regState {
	for _, reg := range s.regs {
		if reg.id == ref || reg.Name == ref {
			return reg
		}
	}
	return nil
}

func (s *Server) createRegistration(w http.ResponseWriter, r *http.Request, _ *call) {
	var doc registrationDoc
	e := s.readBody(r, &doc)
	if e == nil {
		e = doc.check()
	}
	if e == nil && deref(doc.Name) == "" {
		e = badRequest("missing required properties: name")
	}
	if e != nil {
		writeError(w, r, e.status, e.msg)
		return
	}
	reg := &regState{Registration: Registration{
		Name: *doc.Name, Title: deref(doc.Title), Summary: deref(doc.Summary), State: deref(doc.State),
		ClientType: deref(doc.ClientType), ClientID: deref(doc.ClientID), ClientSecret: deref(doc.ClientSecret), Scopes: doc.Scopes,
	}, metadata: doc.Metadata}
	if reg.State == "" {
		reg.State = "enabled"
	}
	if reg.ClientType == "" {
		reg.ClientType = "toolkit"
	}
	if len(reg.Scopes) == 0 {
		reg.Scopes = AllScopes
	}
	// A secret the server makes up is shown once, on creation; one the
	// caller chose is masked.
	shown := maskedSecret
	if reg.ClientID == "" {
		reg.ClientID = randomID()
	}
	if reg.ClientSecret == "" {
		reg.ClientSecret = randomSecret(24)
		shown = reg.ClientSecret
	}
	s.mu.Lock()
	for _, other := range s.regs {
		if other.Name == reg.Name || other.ClientID == reg.ClientID {
			s.mu.Unlock()
			writeError(w, r, http.StatusConflict, fmt.Sprintf("A registration with the name %s or the client id already exists.", reg.Name))
			return
		}
	}
	reg.id, reg.created, reg.updated = randomID(), s.now(), s.now()
	s.regs[reg.ClientID] = reg
	v := reg.view(r, shown)
	s.mu.Unlock()
	reply(w, r, http.StatusCreated, v)
}

func (s *Server) getRegistration(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	reg := s.findRegistration(c.params["registration"])
	var v registrationView
	if reg != nil {
		v = reg.view(r, maskedSecret)
	}
	s.mu.Unlock()
	if reg == nil {
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("Registration %s not found.", c.params["registration"]))
		return
	}
	replyOne(w, r, http.StatusOK, v)
}

func (s *Server) updateRegistration(w http.ResponseWriter, r *http.Request, c *call) {
	var doc registrationDoc
	e := s.readBody(r, &doc)
	if e == nil {
		e = doc.check()
	}
	if e != nil {
		writeError(w, r, e.status, e.msg)
		return
	}
	s.mu.Lock()
	reg := s.findRegistration(c.params["registration"])
	if reg == nil {
		s.mu.Unlock()
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("Registration %s not found.", c.params["registration"]))
		return
	}
	if doc.ClientID != nil && *doc.ClientID != reg.ClientID {
		s.mu.Unlock()
		writeError(w, r, http.StatusBadRequest, "property client_id cannot be changed")
		return
	}
	if n := deref(doc.Name); n != "" && n != reg.Name {
		if other := s.findRegistration(n); other != nil {
			s.mu.Unlock()
			writeError(w, r, http.StatusConflict, fmt.Sprintf("A registration with the name %s already exists.", n))
			return
		}
		reg.Name = n
	}
	for _, f := range []struct {
		src *string
		dst *string
	}{{doc.Title, &reg.Title}, {doc.Summary, &reg.Summary}, {doc.State, &reg.State}, {doc.ClientType, &reg.ClientType}, {doc.ClientSecret, &reg.ClientSecret}} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	if doc.Scopes != nil {
		reg.Scopes = slices.Clone(doc.Scopes)
	}
	if doc.Metadata != nil {
		reg.metadata = doc.Metadata
	}
	reg.updated = s.now()
	v := reg.view(r, maskedSecret)
	s.mu.Unlock()
	reply(w, r, http.StatusOK, v)
}

func (s *Server) deleteRegistration(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	reg := s.findRegistration(c.params["registration"])
	var v registrationView
	if reg != nil {
		delete(s.regs, reg.ClientID)
		v = reg.view(r, maskedSecret)
	}
	s.mu.Unlock()
	if reg == nil {
		writeError(w, r, http.StatusNotFound, fmt.Sprintf("Registration %s not found.", c.params["registration"]))
		return
	}
	reply(w, r, http.StatusOK, v)
}

// toolkitCredential is one client of the toolkit credentials.
type toolkitCredential struct {
	Endpoint     string `json:"endpoint"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

// toolkitCredentials answers what "Download toolkit" saves as
// credentials.json: the first enabled registration (by name) of client
// type toolkit and of consumer_toolkit.
func (s *Server) toolkitCredentials(w http.ResponseWriter, r *http.Request, _ *call) {
	out := map[string]any{"cloud_id": s.cloudID}
	s.mu.Lock()
	for _, reg := range s.sortedRegistrations() {
		if reg.State != "enabled" {
			continue
		}
		if key := reg.ClientType; (key == "toolkit" || key == "consumer_toolkit") && out[key] == nil {
			out[key] = toolkitCredential{Endpoint: baseURL(r), ClientID: reg.ClientID, ClientSecret: reg.ClientSecret}
		}
	}
	s.mu.Unlock()
	reply(w, r, http.StatusOK, out)
}
