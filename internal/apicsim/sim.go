// Package apicsim simulates the IBM API Connect platform (management) REST
// API for tests, benchmarks and demos, as IBM's OpenAPI document of the
// Provider API describes it: POST /api/token with the password, api_key
// and refresh_token grants (scope narrows the token), RS256 access tokens
// that every other /api call checks, each operation's scope from the
// document's security blocks, and a working set of resources held in
// memory: orgs, catalogs, draft APIs and products, publish, the products
// and APIs of a catalog, API keys, registrations and the caller's
// profile. Answers carry only the fields the document's schemas declare,
// in JSON or, when Accept asks for it, YAML; see routes for the
// operations. Controls observe traffic and inject faults.
//
// A Server is an http.Handler, used as net/http/httptest servers are:
//
//	sim, _ := apicsim.New(apicsim.DefaultConfig())
//	ts := httptest.NewServer(sim)
//	defer ts.Close()
//
// The same controls are served as JSON under the reserved prefix /_sim/
// for black-box scripts; see ServeHTTP.
package apicsim

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a simulated API Connect management server. Its methods are safe
// for concurrent use.
type Server struct {
	signer *signer

	clockOffset atomic.Int64 // added to cfg.Now, moved by Advance

	mu          sync.Mutex
	cfg         Config // lists are copied in; guarded by mu
	users       map[string]*userState
	regs        map[string]*regState // by client id
	sessions    map[string]*session
	refresh     map[string]*refreshState
	apiKeys     map[string]*apiKeyState
	revokedSeq  uint64 // tokens with seq <= revokedSeq are revoked
	seq         uint64
	faults      []*faultState
	refuse      map[string]bool // paths that answer 401 to any token
	stats       statsState
	recent      []TokenRequestRecord
	issuedSince int // tokens issued since the last sweep of expired ones

	table   []route     // the operations served, see routes
	cloudID string      // of the toolkit credentials
	orgs    []*orgState // guarded by mu

	tokens sync.Map // access token string -> *accessToken
}

type userState struct {
	User
	id            string
	registryID    string
	failed        int
	lockedUntil   time.Time
	rejectBefore  uint64 // tokens with seq < rejectBefore are rejected
	rejectBeforeT time.Time
	lastLogin     time.Time
	metadata      map[string]string
}

type regState struct {
	Registration
	id       string
	metadata map[string]string
	created  time.Time
	updated  time.Time
}

type session struct {
	id      string
	revoked bool
}

type refreshState struct {
	user    *userState
	reg     *regState
	session *session
	scopes  []string
	expires time.Time
	used    bool
}

type apiKeyState struct {
	id                   string
	user                 *userState
	created, expires     time.Time
	ttl                  time.Duration
	multipleUse          bool
	used                 bool
	clientType           string
	name, title, summary string
	metadata             map[string]string
}

// accessToken is what the server remembers of a token it issued.
type accessToken struct {
	seq     uint64
	user    *userState
	reg     *regState
	session *session
	issued  time.Time
	expires time.Time
	grant   string
	scopes  []string // the registration's, or fewer when the request asked
}

// New returns a Server for cfg. Zero settings take their defaults (see
// Config); the lists are used as given, so start from DefaultConfig to keep
// the built-in users.
func New(cfg Config) (*Server, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	sg, err := newSigner()
	if err != nil {
		return nil, err
	}
	s := &Server{
		signer:   sg,
		cfg:      cfg,
		users:    make(map[string]*userState),
		regs:     make(map[string]*regState),
		sessions: make(map[string]*session),
		refresh:  make(map[string]*refreshState),
		apiKeys:  make(map[string]*apiKeyState),
	}
	s.stats.reset()
	for _, u := range cfg.Users {
		s.users[userKey(u.Realm, u.Username)] = &userState{User: u, id: randomID(), registryID: randomID()}
	}
	now := s.now()
	for _, r := range cfg.Registrations {
		r := r
		if r.State == "" {
			r.State = "enabled"
		}
		if r.ClientType == "" {
			r.ClientType = "toolkit"
		}
		if len(r.Scopes) == 0 {
			r.Scopes = AllScopes
		}
		s.regs[r.ClientID] = &regState{Registration: r, id: randomID(), created: now, updated: now}
	}
	for _, o := range cfg.Orgs {
		s.orgs = append(s.orgs, newOrgState(o, now))
	}
	s.cloudID = randomID()
	s.table = s.routes()
	return s, nil
}

func userKey(realm, username string) string { return realm + "\x00" + username }

// now is the simulator's clock: Config.Now moved on by Advance.
func (s *Server) now() time.Time {
	return s.cfg.Now().Add(time.Duration(s.clockOffset.Load()))
}

// Now returns the simulator's current time.
func (s *Server) Now() time.Time { return s.now() }

// Advance moves the simulator's clock by d (negative d moves it back), so
// tokens, refresh tokens, API keys and lockouts expire without waiting.
func (s *Server) Advance(d time.Duration) { s.clockOffset.Add(int64(d)) }

// ServeHTTP routes /api/... to the simulated platform API and /_sim/... to
// the controls:
//
//	GET    /_sim/stats     counters (see Stats)
//	POST   /_sim/reset     zero the counters and clear faults
//	POST   /_sim/revoke    revoke all tokens issued so far; with
//	                       {"realm":..,"username":..} only that user's
//	POST   /_sim/faults    queue a fault: {"count":N,"status":500,
//	                       "retry_after":"5","hang":"2s","close":true,
//	                       "body":"...","omit":["expires_in"],"set":{...},
//	                       "echo":true}
//	DELETE /_sim/faults    clear queued faults
//	POST   /_sim/refuse-path {"path":"/api/orgs"}: that path answers 401
//	                       to every token
//	POST   /_sim/lockout   {"attempts":3,"duration":"15m"}
//	GET    /_sim/clock     {"now":"..."}
//	POST   /_sim/clock     {"advance":"1h"}
//	POST   /_sim/settings  {"token_ttl":"2s","refresh_tokens":true,
//	                       "refresh_ttl":"1h","api_key_ttl":"5m"}
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.serveControl(w, r)
		return
	}
	if r.URL.Path == "/api/token" {
		s.serveToken(w, r)
		return
	}
	s.mu.Lock()
	s.stats.paths[r.URL.EscapedPath()]++
	if !strings.HasPrefix(r.URL.Path, "/api/") {
		s.stats.outside++
	}
	refused := s.refuse[r.URL.Path]
	s.mu.Unlock()
	rec := &statusRecorder{ResponseWriter: w}
	if refused {
		writeError(rec, r, http.StatusUnauthorized, "Not authorized for this resource.")
	} else {
		s.serveAPI(rec, r)
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	s.mu.Lock()
	s.stats.api[rec.status]++
	s.mu.Unlock()
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
