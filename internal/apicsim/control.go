package apicsim

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"time"
)

// Outcomes of a token request, as counted by Stats.
const (
	OutcomeOK             = "ok"              // 200 with a token
	OutcomeBadRequest     = "bad_request"     // 400 or 415: malformed request
	OutcomeBadClient      = "bad_client"      // 401: unknown or disabled client, wrong secret
	OutcomeBadCredentials = "bad_credentials" // 401: user, password, realm, API key or refresh token refused
	OutcomeLocked         = "locked"          // 401: user locked out
	OutcomeFault          = "fault"           // an injected fault answered instead
)

// Fault changes how token requests are answered. Hang is applied first;
// then Close, Status or Body answer instead of the server; otherwise the
// request is handled as usual and Omit and Set edit a successful response.
type Fault struct {
	// Hang delays the answer by this long (or until the client gives up).
	Hang time.Duration
	// Close drops the connection without an answer.
	Close bool
	// Status answers with this status and an error in API Connect's shape
	// (or Body, when set).
	Status int
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter string
	// Body answers with this raw body (status 200 unless Status is set),
	// with ContentType (default text/plain).
	Body        string
	ContentType string
	// Omit removes these fields from a successful token response.
	Omit []string
	// Set sets these fields of a successful token response.
	Set map[string]any
	// Echo answers with Status (default 400) and an error whose message
	// quotes the request body, as a careless gateway might.
	Echo bool
}

type faultState struct {
	Fault
	left int // < 0: until cleared
}

// FailTokenRequests applies f to the next n token requests, after the
// faults already queued; n < 0 applies it until ClearFaults.
func (s *Server) FailTokenRequests(n int, f Fault) {
	if n == 0 {
		return
	}
	s.mu.Lock()
	s.faults = append(s.faults, &faultState{Fault: f, left: n})
	s.mu.Unlock()
}

// RefusePath makes every call to path (as decoded) answer 401, whatever
// its token: a resource that refuses even a new token.
func (s *Server) RefusePath(path string) {
	s.mu.Lock()
	if s.refuse == nil {
		s.refuse = make(map[string]bool)
	}
	s.refuse[path] = true
	s.mu.Unlock()
}

// ClearFaults drops every queued fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	s.faults = nil
	s.mu.Unlock()
}

// nextFault takes the fault for one token request, if any. Called with
// s.mu held.
func (s *Server) nextFault() *Fault {
	if len(s.faults) == 0 {
		return nil
	}
	f := s.faults[0]
	if f.left > 0 {
		f.left--
		if f.left == 0 {
			s.faults = s.faults[1:]
		}
	}
	return &f.Fault
}

// SetLockout turns the lockout on (attempts > 0) or off (attempts 0).
func (s *Server) SetLockout(attempts int, d time.Duration) {
	s.mu.Lock()
	s.cfg.Lockout = Lockout{Attempts: attempts, Duration: d}
	s.mu.Unlock()
}

// Settings are the cloud settings that can change while the server runs.
// Nil fields are left as they are.
type Settings struct {
	TokenTTL      *time.Duration
	RefreshTokens *bool
	RefreshTTL    *time.Duration
	APIKeyTTL     *time.Duration
}

// UpdateSettings changes cloud settings for the tokens issued from now on.
func (s *Server) UpdateSettings(st Settings) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.TokenTTL != nil {
		s.cfg.TokenTTL = *st.TokenTTL
	}
	if st.RefreshTokens != nil {
		s.cfg.RefreshTokens = *st.RefreshTokens
	}
	if st.RefreshTTL != nil {
		s.cfg.RefreshTTL = *st.RefreshTTL
	}
	if st.APIKeyTTL != nil {
		s.cfg.APIKeyTTL = *st.APIKeyTTL
	}
}

// RevokeAll revokes every access and refresh token issued so far, as
// raising reject_tokens_issued_before for every user does.
func (s *Server) RevokeAll() {
	s.mu.Lock()
	s.revokedSeq = s.seq
	for _, rt := range s.refresh {
		rt.used = true
	}
	s.mu.Unlock()
}

// RevokeUser revokes the tokens issued so far to one user (that user's
// reject_tokens_issued_before). It reports whether the user exists.
func (s *Server) RevokeUser(realm, username string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[userKey(realm, username)]
	if u == nil {
		return false
	}
	u.rejectBefore = s.seq + 1
	u.rejectBeforeT = s.now()
	for _, rt := range s.refresh {
		if rt.user == u {
			rt.used = true
		}
	}
	return true
}

// Stats is a snapshot of what the server has seen.
type Stats struct {
	// Token counts token requests by grant type and outcome (Outcome*).
	// Requests whose grant could not be read count under "unknown".
	Token map[string]map[string]int `json:"token_requests"`
	// API counts every other /api call by response status.
	API map[int]int `json:"api_calls"`
	// TokensIssued counts access tokens issued.
	TokensIssued int `json:"tokens_issued"`
	// Paths counts every other call by its path as it arrived (escaped).
	Paths map[string]int `json:"paths"`
	// OutsideAPI counts calls whose path is not under /api/: a proxy that
	// confines its token to /api/ sends none.
	OutsideAPI int `json:"outside_api"`
}

type statsState struct {
	token   map[string]map[string]int
	api     map[int]int
	paths   map[string]int
	outside int
	issued  int
}

func (st *statsState) reset() {
	st.token = make(map[string]map[string]int)
	st.api = make(map[int]int)
	st.paths = make(map[string]int)
	st.outside = 0
	st.issued = 0
}

func (st *statsState) countToken(grant, outcome string) {
	m := st.token[grant]
	if m == nil {
		m = make(map[string]int)
		st.token[grant] = m
	}
	m[outcome]++
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Stats{Token: make(map[string]map[string]int), API: maps.Clone(s.stats.api), TokensIssued: s.stats.issued,
		Paths: maps.Clone(s.stats.paths), OutsideAPI: s.stats.outside}
	for g, m := range s.stats.token {
		out.Token[g] = maps.Clone(m)
	}
	return out
}

// TokenRequests counts token requests of a grant type ("" for any) with
// an outcome ("" for any).
func (s *Server) TokenRequests(grant, outcome string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for g, m := range s.stats.token {
		if grant != "" && g != grant {
			continue
		}
		for o, c := range m {
			if outcome == "" || o == outcome {
				n += c
			}
		}
	}
	return n
}

// APICalls counts /api calls other than /api/token answered with status
// (0 for any).
func (s *Server) APICalls(status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if status != 0 {
		return s.stats.api[status]
	}
	n := 0
	for _, c := range s.stats.api {
		n += c
	}
	return n
}

// TokenRequestRecord describes one token request as it arrived, without
// any secret: which body fields and headers it had and how it ended.
type TokenRequestRecord struct {
	Grant       string   `json:"grant"`
	Fields      []string `json:"fields"`
	ContentType string   `json:"content_type"`
	Accept      string   `json:"accept"`
	Realm       string   `json:"realm,omitempty"`
	Username    string   `json:"username,omitempty"`
	Status      int      `json:"status"`
	Outcome     string   `json:"outcome"`
}

const maxRecent = 256

// RecentTokenRequests returns up to the last 256 token requests, oldest
// first.
func (s *Server) RecentTokenRequests() []TokenRequestRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequestRecord(nil), s.recent...)
}

// ResetStats zeroes the counters and forgets recent token requests.
func (s *Server) ResetStats() {
	s.mu.Lock()
	s.stats.reset()
	s.recent = nil
	s.mu.Unlock()
}

func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + r.URL.Path
	switch route {
	case "GET /_sim/stats":
		reply(w, r, http.StatusOK, s.Stats())
	case "GET /_sim/token-requests":
		reply(w, r, http.StatusOK, s.RecentTokenRequests())
	case "POST /_sim/reset":
		s.ResetStats()
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case "POST /_sim/revoke":
		var body struct {
			Realm    string `json:"realm"`
			Username string `json:"username"`
		}
		if !decodeControl(w, r, &body) {
			return
		}
		if body.Username == "" {
			s.RevokeAll()
		} else if !s.RevokeUser(body.Realm, body.Username) {
			writeError(w, r, http.StatusNotFound, fmt.Sprintf("no user %q in realm %q", body.Username, body.Realm))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case "POST /_sim/faults":
		var body struct {
			Count       int            `json:"count"`
			Hang        string         `json:"hang"`
			Close       bool           `json:"close"`
			Status      int            `json:"status"`
			RetryAfter  string         `json:"retry_after"`
			Body        string         `json:"body"`
			ContentType string         `json:"content_type"`
			Omit        []string       `json:"omit"`
			Set         map[string]any `json:"set"`
			Echo        bool           `json:"echo"`
		}
		if !decodeControl(w, r, &body) {
			return
		}
		f := Fault{Close: body.Close, Status: body.Status, RetryAfter: body.RetryAfter, Body: body.Body, ContentType: body.ContentType, Omit: body.Omit, Set: body.Set, Echo: body.Echo}
		if body.Hang != "" {
			d, err := time.ParseDuration(body.Hang)
			if err != nil {
				writeError(w, r, http.StatusBadRequest, "hang: "+err.Error())
				return
			}
			f.Hang = d
		}
		if body.Count == 0 {
			body.Count = 1
		}
		s.FailTokenRequests(body.Count, f)
		w.WriteHeader(http.StatusNoContent)
	case "POST /_sim/refuse-path":
		var body struct {
			Path string `json:"path"`
		}
		if !decodeControl(w, r, &body) {
			return
		}
		if !strings.HasPrefix(body.Path, "/") {
			writeError(w, r, http.StatusBadRequest, "path: want a path such as /api/orgs")
			return
		}
		s.RefusePath(body.Path)
		w.WriteHeader(http.StatusNoContent)
	case "DELETE /_sim/faults":
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case "POST /_sim/lockout":
		var body struct {
			Attempts int    `json:"attempts"`
			Duration string `json:"duration"`
		}
		if !decodeControl(w, r, &body) {
			return
		}
		d, err := parseDuration(body.Duration)
		if err != nil && body.Attempts > 0 {
			writeError(w, r, http.StatusBadRequest, "duration: "+err.Error())
			return
		}
		s.SetLockout(body.Attempts, d)
		w.WriteHeader(http.StatusNoContent)
	case "GET /_sim/clock":
		reply(w, r, http.StatusOK, map[string]string{"now": s.now().Format(time.RFC3339Nano)})
	case "POST /_sim/clock":
		var body struct {
			Advance string `json:"advance"`
		}
		if !decodeControl(w, r, &body) {
			return
		}
		d, err := time.ParseDuration(body.Advance)
		if err != nil {
			writeError(w, r, http.StatusBadRequest, "advance: "+err.Error())
			return
		}
		s.Advance(d)
		reply(w, r, http.StatusOK, map[string]string{"now": s.now().Format(time.RFC3339Nano)})
	case "POST /_sim/settings":
		var body struct {
			TokenTTL      string `json:"token_ttl"`
			RefreshTokens *bool  `json:"refresh_tokens"`
			RefreshTTL    string `json:"refresh_ttl"`
			APIKeyTTL     string `json:"api_key_ttl"`
		}
		if !decodeControl(w, r, &body) {
			return
		}
		st := Settings{RefreshTokens: body.RefreshTokens}
		for _, d := range []struct {
			name, val string
			dst       **time.Duration
		}{{"token_ttl", body.TokenTTL, &st.TokenTTL}, {"refresh_ttl", body.RefreshTTL, &st.RefreshTTL}, {"api_key_ttl", body.APIKeyTTL, &st.APIKeyTTL}} {
			if d.val == "" {
				continue
			}
			v, err := parseDuration(d.val)
			if err != nil || v <= 0 {
				writeError(w, r, http.StatusBadRequest, d.name+": want a positive duration")
				return
			}
			*d.dst = &v
		}
		s.UpdateSettings(st)
		w.WriteHeader(http.StatusNoContent)
	default:
		writeError(w, r, http.StatusNotFound, "no simulator control "+route)
	}
}

// decodeControl reads an optional JSON body of a control request.
func decodeControl(w http.ResponseWriter, r *http.Request, dst any) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, r, http.StatusBadRequest, "reading body: "+err.Error())
		return false
	}
	if len(body) == 0 {
		return true
	}
	if err := json.Unmarshal(body, dst); err != nil {
		writeError(w, r, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}
