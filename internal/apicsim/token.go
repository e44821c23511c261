package apicsim

import (
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

// FaultHeader marks an answer shaped by a queued fault (see
// FailTokenRequests) rather than by the platform API's rules.
const FaultHeader = "Apicsim-Fault"

// Grant types of POST /api/token.
const (
	GrantPassword     = "password"
	GrantAPIKey       = "api_key"
	GrantRefreshToken = "refresh_token"
)

// tokenFields are the properties the token request schema allows
// (additionalProperties: false).
var tokenFields = map[string]bool{
	"grant_type": true, "username": true, "password": true, "realm": true,
	"client_id": true, "client_secret": true, "api_key": true, "refresh_token": true,
	"scope": true, "assertion": true, "code": true,
}

// otherGrants are valid grant types that the simulator does not serve.
var otherGrants = map[string]bool{
	"client_credentials": true, "authorization_code": true,
	"urn:ietf:params:oauth:grant-type:jwt-bearer": true,
}

// tokenClaims are the claims of an access token, after decoded real ones.
type tokenClaims struct {
	JTI             string   `json:"jti"`
	Namespace       string   `json:"namespace"`
	Aud             string   `json:"aud"`
	Sub             string   `json:"sub"`
	Iss             string   `json:"iss"`
	GrantType       string   `json:"grant_type"`
	UserRegistryURL string   `json:"user_registry_url"`
	Realm           string   `json:"realm"`
	Username        string   `json:"username"`
	IDToken         string   `json:"id_token"`
	Scopes          []string `json:"scopes"`
	Iat             int64    `json:"iat"`
	Exp             int64    `json:"exp"`
}

// idTokenClaims are the claims of the nested id_token.
type idTokenClaims struct {
	JTI               string `json:"jti"`
	Iss               string `json:"iss"`
	Sub               string `json:"sub"`
	Email             string `json:"email"`
	PreferredUsername string `json:"preferred_username"`
	Iat               int64  `json:"iat"`
	Exp               int64  `json:"exp"`
}

// tokenReply is a token request's answer, decided under s.mu and written
// after it is released.
type tokenReply struct {
	status     int
	outcome    string
	msg        string
	retryAfter string
	fault      *Fault
	issue      *issueOrder
}

// issueOrder is everything needed to sign a token outside the lock.
type issueOrder struct {
	tok          *accessToken
	refreshToken string
	refreshTTL   time.Duration
	ttl          time.Duration
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	rec := TokenRequestRecord{Grant: "unknown", ContentType: r.Header.Get("Content-Type"), Accept: r.Header.Get("Accept")}
	finish := func(status int, outcome string) {
		rec.Status, rec.Outcome = status, outcome
		s.mu.Lock()
		s.stats.countToken(rec.Grant, outcome)
		s.recent = append(s.recent, rec)
		if len(s.recent) > maxRecent {
			s.recent = s.recent[len(s.recent)-maxRecent:]
		}
		s.mu.Unlock()
	}
	fail := func(status int, outcome string, msg string) {
		writeError(w, r, status, msg)
		finish(status, outcome)
	}

	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed, OutcomeBadRequest, "method "+r.Method+" is not allowed on /api/token; use POST")
		return
	}
	body, readErr := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	fields, parseErr := parseTokenBody(r.Header.Get("Content-Type"), body)
	if g := fields["grant_type"]; g != "" {
		rec.Grant = g
	}
	rec.Realm, rec.Username = fields["realm"], fields["username"]
	for k := range fields {
		rec.Fields = append(rec.Fields, k)
	}
	sort.Strings(rec.Fields)

	// Faults come before any check, as a broken gateway in front would.
	s.mu.Lock()
	fault := s.nextFault()
	s.mu.Unlock()
	if fault != nil {
		// The answer is what a test asked for, not what the document
		// says: the mark lets a conformance check skip it.
		w.Header().Set(FaultHeader, "1")
		if fault.Hang > 0 {
			t := time.NewTimer(fault.Hang)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				finish(0, OutcomeFault)
				return
			}
		}
		switch {
		case fault.Close:
			finish(0, OutcomeFault)
			closeConnection(w)
			return
		case fault.Echo:
			status := fault.Status
			if status == 0 {
				status = http.StatusBadRequest
			}
			writeError(w, r, status, "cannot process the request "+string(body))
			finish(status, OutcomeFault)
			return
		case fault.Status != 0 || fault.Body != "":
			if fault.RetryAfter != "" {
				w.Header().Set("Retry-After", fault.RetryAfter)
			}
			status := fault.Status
			if status == 0 {
				status = http.StatusOK
			}
			if fault.Body != "" {
				ct := fault.ContentType
				if ct == "" {
					ct = "text/plain; charset=utf-8"
				}
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(status)
				_, _ = io.WriteString(w, fault.Body)
			} else {
				writeError(w, r, status, fmt.Sprintf("simulated failure with status %d", status))
			}
			finish(status, OutcomeFault)
			return
		}
	}

	switch {
	case readErr != nil:
		fail(http.StatusBadRequest, OutcomeBadRequest, "could not read the request body")
		return
	case parseErr != nil:
		fail(parseErr.status, OutcomeBadRequest, parseErr.msg)
		return
	}
	if fields["client_id"] == "" && fields["client_secret"] == "" {
		// X-IBM-Client-Id and X-IBM-Client-Secret are tolerated in place
		// of the body fields.
		if id := r.Header.Get("X-IBM-Client-Id"); id != "" {
			fields["client_id"] = id
			fields["client_secret"] = r.Header.Get("X-IBM-Client-Secret")
		}
	}

	s.mu.Lock()
	decision := s.decideToken(fields)
	s.mu.Unlock()
	if decision.issue == nil {
		fail(decision.status, decision.outcome, decision.msg)
		return
	}
	resp, err := s.issue(decision.issue)
	if err != nil {
		fail(http.StatusInternalServerError, OutcomeBadRequest, "could not sign the token")
		return
	}
	if fault != nil {
		for _, k := range fault.Omit {
			delete(resp, k)
		}
		for k, v := range fault.Set {
			resp[k] = v
		}
	}
	reply(w, r, http.StatusOK, resp)
	finish(http.StatusOK, OutcomeOK)
}

// closeConnection drops the client's connection without an answer.
func closeConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2 cannot hijack; abort the stream instead.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// parseTokenBody decodes a token request body, JSON or YAML by its
// Content-Type, of string properties, refusing undeclared ones. Every
// property is kept, so that the request record lists all the names that
// arrived, even when the request is refused.
func parseTokenBody(contentType string, body []byte) (map[string]string, *requestError) {
	fields := make(map[string]string)
	if contentType == "" {
		return fields, &requestError{http.StatusUnsupportedMediaType, "Content-Type is required; send application/json or application/yaml"}
	}
	doc, rerr := parseDoc(contentType, body, true)
	if rerr != nil {
		return fields, rerr
	}
	var unknown, notString []string
	for k, v := range doc {
		sv, ok := v.(string)
		if !ok {
			notString = append(notString, k)
		}
		if !tokenFields[k] {
			unknown = append(unknown, k)
		}
		fields[k] = sv
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fields, badRequest("unknown properties are not allowed: %s", strings.Join(unknown, ", "))
	}
	if len(notString) > 0 {
		sort.Strings(notString)
		return fields, badRequest("property %s must be a string", strings.Join(notString, ", "))
	}
	return fields, nil
}

// decideToken checks a token request and, when it succeeds, reserves the
// token. Called with s.mu held.
func (s *Server) decideToken(f map[string]string) tokenReply {
	grant := f["grant_type"]
	var required []string
	switch {
	case grant == "":
		return tokenReply{status: 400, outcome: OutcomeBadRequest, msg: "grant_type is required"}
	case grant == GrantPassword:
		required = []string{"username", "password", "realm", "client_id", "client_secret"}
	case grant == GrantAPIKey:
		required = []string{"api_key", "client_id", "client_secret"}
	case grant == GrantRefreshToken:
		required = []string{"refresh_token", "client_id", "client_secret"}
	case otherGrants[grant]:
		return tokenReply{status: 400, outcome: OutcomeBadRequest, msg: fmt.Sprintf("grant_type %s is not supported by this server", grant)}
	default:
		return tokenReply{status: 400, outcome: OutcomeBadRequest, msg: fmt.Sprintf("grant_type %q is not valid", grant)}
	}
	var missing []string
	for _, k := range required {
		if f[k] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return tokenReply{status: 400, outcome: OutcomeBadRequest, msg: "missing required properties: " + strings.Join(missing, ", ")}
	}

	reg := s.regs[f["client_id"]]
	if reg == nil || subtle.ConstantTimeCompare([]byte(reg.ClientSecret), []byte(f["client_secret"])) != 1 {
		return tokenReply{status: 401, outcome: OutcomeBadClient, msg: "Invalid client id or secret."}
	}
	if reg.State != "enabled" {
		return tokenReply{status: 401, outcome: OutcomeBadClient, msg: "The client registration is disabled."}
	}

	now := s.now()
	var (
		user      *userState
		sess      *session
		refreshed *refreshState
	)
	switch grant {
	case GrantPassword:
		realm := f["realm"]
		user = s.users[userKey(realm, f["username"])]
		if user == nil {
			if !s.realmExists(realm) || s.userInOtherRealm(f["username"], realm) {
				return tokenReply{status: s.cfg.RealmErrorStatus, outcome: OutcomeBadCredentials, msg: fmt.Sprintf("Invalid realm %s for this user.", realm)}
			}
			return tokenReply{status: 401, outcome: OutcomeBadCredentials, msg: "Invalid username or password."}
		}
		if now.Before(user.lockedUntil) {
			return tokenReply{status: 401, outcome: OutcomeLocked, msg: "The account is locked after too many failed login attempts. Try again later."}
		}
		if subtle.ConstantTimeCompare([]byte(user.Password), []byte(f["password"])) != 1 {
			user.failed++
			if s.cfg.Lockout.Attempts > 0 && user.failed >= s.cfg.Lockout.Attempts {
				user.lockedUntil = now.Add(s.cfg.Lockout.Duration)
				user.failed = 0
			}
			return tokenReply{status: 401, outcome: OutcomeBadCredentials, msg: "Invalid username or password."}
		}
		user.failed = 0
	case GrantAPIKey:
		k := s.apiKeys[f["api_key"]]
		switch {
		case k == nil:
			return tokenReply{status: 401, outcome: OutcomeBadCredentials, msg: "Invalid API key."}
		case !now.Before(k.expires):
			return tokenReply{status: 401, outcome: OutcomeBadCredentials, msg: "The API key has expired."}
		case k.used && !k.multipleUse:
			return tokenReply{status: 401, outcome: OutcomeBadCredentials, msg: "The API key has already been used."}
		}
		k.used = true
		user = k.user
	case GrantRefreshToken:
		rt := s.refresh[f["refresh_token"]]
		switch {
		case rt == nil || rt.used || rt.session.revoked:
			return tokenReply{status: 401, outcome: OutcomeBadCredentials, msg: "Invalid refresh token."}
		case !now.Before(rt.expires):
			return tokenReply{status: 401, outcome: OutcomeBadCredentials, msg: "The refresh token has expired."}
		case rt.reg != reg:
			return tokenReply{status: 401, outcome: OutcomeBadCredentials, msg: "The refresh token was issued to another client."}
		case f["realm"] != "" && f["realm"] != rt.user.Realm:
			return tokenReply{status: s.cfg.RealmErrorStatus, outcome: OutcomeBadCredentials, msg: fmt.Sprintf("Invalid realm %s for this user.", f["realm"])}
		}
		user, sess, refreshed = rt.user, rt.session, rt
	}
	scopes := reg.Scopes
	if grant == GrantRefreshToken {
		scopes = refreshed.scopes
	}
	if f["scope"] != "" {
		var err *requestError
		if scopes, err = narrowScopes(scopes, f["scope"]); err != nil {
			return tokenReply{status: err.status, outcome: OutcomeBadRequest, msg: err.msg}
		}
	}
	if grant == GrantRefreshToken {
		refreshed.used = true // refresh tokens rotate: each is good once
	}
	if grant != GrantRefreshToken {
		user.lastLogin = now
	}
	if sess == nil {
		sess = &session{id: randomID()}
		s.sessions[sess.id] = sess
	}

	s.seq++
	order := &issueOrder{
		tok: &accessToken{seq: s.seq, user: user, reg: reg, session: sess, issued: now, expires: now.Add(s.cfg.TokenTTL), grant: grant, scopes: scopes},
		ttl: s.cfg.TokenTTL,
	}
	if s.cfg.RefreshTokens {
		order.refreshToken = randomSecret(48)
		order.refreshTTL = s.cfg.RefreshTTL
		s.refresh[order.refreshToken] = &refreshState{user: user, reg: reg, session: sess, scopes: scopes, expires: now.Add(s.cfg.RefreshTTL)}
	}
	s.stats.issued++
	s.issuedSince++
	if s.issuedSince >= 1000 {
		s.issuedSince = 0
		s.sweep(now)
	}
	return tokenReply{issue: order}
}

// narrowScopes returns the scopes of the space-separated list requested,
// each of which must be one of granted: a token request may ask for fewer
// scopes than the registration has, never for others.
func narrowScopes(granted []string, requested string) ([]string, *requestError) {
	var out, refused []string
	for _, sc := range strings.Fields(requested) {
		switch {
		case slices.Contains(out, sc):
		case slices.Contains(granted, sc):
			out = append(out, sc)
		default:
			refused = append(refused, sc)
		}
	}
	if len(refused) > 0 {
		return nil, badRequest("scope %s is not granted to this client registration", strings.Join(refused, " "))
	}
	if len(out) == 0 {
		return nil, badRequest("scope must name at least one scope")
	}
	return out, nil
}

func (s *Server) realmExists(realm string) bool {
	return slices.ContainsFunc(s.cfg.IdentityProviders, func(p IdentityProvider) bool { return p.Realm() == realm })
}

func (s *Server) userInOtherRealm(username, realm string) bool {
	for _, u := range s.users {
		if u.Username == username && u.Realm != realm {
			return true
		}
	}
	return false
}

// sweep forgets expired tokens, refresh tokens and API keys. Called with
// s.mu held. A forgotten access token still verifies as expired.
func (s *Server) sweep(now time.Time) {
	s.tokens.Range(func(k, v any) bool {
		if !now.Before(v.(*accessToken).expires) {
			s.tokens.Delete(k)
		}
		return true
	})
	for k, rt := range s.refresh {
		if rt.used || !now.Before(rt.expires) {
			delete(s.refresh, k)
		}
	}
	for k, ak := range s.apiKeys {
		if !now.Before(ak.expires) {
			delete(s.apiKeys, k)
		}
	}
}

// issue signs the access token and returns the token response.
func (s *Server) issue(o *issueOrder) (map[string]any, error) {
	t := o.tok
	expiresIn := int64(o.ttl / time.Second)
	iat := t.issued.Unix()
	registryURL := "/api/user-registries/" + t.user.registryID + "/" + strings.ReplaceAll(t.user.Realm, "/", "-")
	idToken, err := s.signer.sign(idTokenClaims{
		JTI: randomID(), Iss: "IBM API Connect", Sub: t.user.id, Email: t.user.Email,
		PreferredUsername: t.user.Username,
		Iat:               iat, Exp: iat + expiresIn,
	})
	if err != nil {
		return nil, err
	}
	access, err := s.signer.sign(tokenClaims{
		JTI:             randomID(),
		Namespace:       t.user.Realm,
		Aud:             "/api/cloud/registrations/" + t.reg.id,
		Sub:             registryURL + "/users/" + t.user.id,
		Iss:             "IBM API Connect",
		GrantType:       t.grant,
		UserRegistryURL: registryURL,
		Realm:           t.user.Realm,
		Username:        t.user.Username,
		IDToken:         idToken,
		Scopes:          t.scopes,
		Iat:             iat,
		Exp:             iat + expiresIn,
	})
	if err != nil {
		return nil, err
	}
	s.tokens.Store(access, t)
	resp := map[string]any{
		"access_token": access,
		"token_type":   "Bearer",
		"expires_in":   expiresIn,
	}
	if o.refreshToken != "" {
		resp["refresh_token"] = o.refreshToken
		resp["refresh_expires_in"] = int64(o.refreshTTL / time.Second)
	}
	return resp, nil
}
