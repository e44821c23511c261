// Package guard holds the checks a request passes before apic_auth lets it
// carry the token: who may send it (Host, Origin, a required header),
// where it may go (path), and how often a 401 may cost a new login. Every
// check is closed by default.
package guard

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Guard holds the checks a request passes before it may carry the token:
// who may send it (Host, Origin, a required header) and where it may go
// (path). Every one is closed by default.
type Guard struct {
	hosts   map[string]bool // allowed_hosts, lower-case, without port
	origins map[string]bool // allowed_origins, scheme://host[:port], lower-case
	header  string          // require_header, canonical
	paths   []string        // paths, lower-case, each ending in "/"
	// outsidePaths is the message for a path outside paths.
	outsidePaths string
}

// Options are the handler's guard options: allowed_hosts,
// allowed_origins, require_header and paths.
type Options struct {
	AllowedHosts   []string
	AllowedOrigins []string
	RequireHeader  string
	Paths          []string
}

// OutsidePaths is the message for a path outside the allowed paths.
func (g *Guard) OutsidePaths() string { return g.outsidePaths }

// Header is the required header's canonical name, or "".
func (g *Guard) Header() string { return g.header }

// DefaultPaths are the path prefixes that get the token by default.
var DefaultPaths = []string{"/api/"}

// New checks and normalises the options.
func New(o Options) (*Guard, error) {
	g := &Guard{hosts: map[string]bool{}, origins: map[string]bool{}}
	for _, v := range o.AllowedHosts {
		host, err := allowedHost(v)
		if err != nil {
			return nil, fmt.Errorf("allowed_hosts: %v", err)
		}
		g.hosts[host] = true
	}
	for _, v := range o.AllowedOrigins {
		o, err := allowedOrigin(v)
		if err != nil {
			return nil, fmt.Errorf("allowed_origins: %v", err)
		}
		g.origins[o] = true
	}
	if o.RequireHeader != "" {
		name := http.CanonicalHeaderKey(o.RequireHeader)
		if strings.ContainsAny(name, " :\t\r\n") {
			return nil, fmt.Errorf("require_header: want a header name such as X-Requested-By, got %q", o.RequireHeader)
		}
		g.header = name
	}
	paths := o.Paths
	if len(paths) == 0 {
		paths = DefaultPaths
	}
	for _, p := range paths {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\%?#") {
			return nil, fmt.Errorf("paths: want a path prefix such as /api/, got %q", p)
		}
		p = strings.ToLower(p)
		if !strings.HasSuffix(p, "/") {
			p += "/"
		}
		g.paths = append(g.paths, p)
	}
	g.outsidePaths = "apic_auth: this proxy forwards only paths under " + strings.Join(g.paths, ", ") + " (paths)"
	return g, nil
}

// allowedHost reads an allowed_hosts entry: a host name or IP address,
// without scheme, port or path.
func allowedHost(v string) (string, error) {
	host := strings.TrimSuffix(strings.ToLower(v), ".")
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if host == "" || (strings.ContainsAny(host, "/:@ *?#") && net.ParseIP(host) == nil) {
		return "", fmt.Errorf("want a host name or IP address without scheme, port or path, such as apic-auth-proxy.tools.svc, got %q", v)
	}
	return host, nil
}

// allowedOrigin reads an allowed_origins entry: scheme://host[:port].
func allowedOrigin(v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("want an origin such as https://tools.example.com (scheme, host and port only; never null or *), got %q", v)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// Refusal is why a request may not go on: the status and the message, in
// API Connect's error shape.
type Refusal struct {
	Status int
	Msg    string
}

// CheckCaller refuses a request whose Host is not a loopback name or an
// allowed host (unless it came over a unix socket), that comes from a web
// page whose origin is not allowed, or that lacks the required header. It
// returns the allowed origin of a browser request ("" for none).
func (g *Guard) CheckCaller(r *http.Request) (string, *Refusal) {
	if !overUnixSocket(r) && !g.hostAllowed(r.Host) {
		return "", &Refusal{http.StatusForbidden, fmt.Sprintf(
			"apic_auth: requests for host %q are refused: only loopback names (localhost, 127.0.0.1, [::1]) and the hosts in allowed_hosts may use this proxy", r.Host)}
	}
	origin, browser := browserOrigin(r)
	if browser {
		if origin == "" || !g.origins[strings.ToLower(origin)] {
			shown := origin
			if shown == "" {
				shown = r.Header.Get("Sec-Fetch-Site") + " request"
			}
			return "", &Refusal{http.StatusForbidden, fmt.Sprintf(
				"apic_auth: requests from web pages are refused (origin %q): list the origin in allowed_origins to let it use this proxy", shown)}
		}
	}
	if g.header != "" && r.Header.Get(g.header) == "" {
		return "", &Refusal{http.StatusForbidden, fmt.Sprintf(
			"apic_auth: this proxy requires the %s request header (require_header)", g.header)}
	}
	return origin, nil
}

// hostAllowed reports whether a Host header names this machine's loopback
// or an allowed host, on any port. It runs on every request: it does not
// allocate.
func (g *Guard) hostAllowed(hostport string) bool {
	host := hostport
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		if !digits(host[i+1:]) {
			return false // what follows the host is not a port
		}
		host = host[:i] // a port; an IPv6 address is in brackets
	}
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().IsLoopback()
	}
	return len(g.hosts) > 0 && g.hosts[strings.ToLower(host)]
}

// digits reports whether s is ASCII digits only (or empty).
func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// overUnixSocket reports whether r came over a unix socket, which only
// those the file mode lets in can reach.
func overUnixSocket(r *http.Request) bool {
	addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return ok && strings.HasPrefix(addr.Network(), "unix")
}

// browserOrigin reports whether r comes from a web page, and its origin
// when known: the Origin header (any value, null included), or for a
// same-origin request without one, the proxy's own origin. A
// Sec-Fetch-Site other than none marks a browser request too.
func browserOrigin(r *http.Request) (string, bool) {
	if v, ok := r.Header["Origin"]; ok {
		if len(v) == 0 {
			return "", true
		}
		return v[0], true
	}
	var site string
	if v := r.Header["Sec-Fetch-Site"]; len(v) > 0 {
		site = v[0]
	}
	switch site {
	case "", "none":
		return "", false
	case "same-origin":
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		return scheme + "://" + r.Host, true
	default:
		return "", true
	}
}

// errPathEscape is a path that could leave the server prefix.
var errPathEscape = errors.New("the path has dot-segments, backslashes or encoded slashes")

// RoutedPath returns the path of r as API Manager would route it:
// decoded, repeated slashes folded, no trailing slash, lower-case. It
// fails for a path that, in any of three rounds of percent-decoding, has a
// dot-segment (also as "..;"), a backslash or an encoded slash: forwarded,
// such a path could be normalised by an ingress into one outside the
// configured server prefix, with the token.
func RoutedPath(u *url.URL) (string, error) {
	if p, ok := plainPath(u); ok {
		return p, nil
	}
	return checkedPath(u)
}

// checkedPath is routedPath for any path.
func checkedPath(u *url.URL) (string, error) {
	cur := u.EscapedPath()
	for range 3 {
		if strings.ContainsRune(cur, '\\') || containsFold(cur, "%2f") || containsFold(cur, "%5c") {
			return "", errPathEscape
		}
		for seg := range strings.SplitSeq(cur, "/") {
			seg, _, _ = strings.Cut(seg, ";")
			if seg == "." || seg == ".." || strings.EqualFold(seg, "%2e") || strings.EqualFold(seg, "%2e%2e") ||
				strings.EqualFold(seg, ".%2e") || strings.EqualFold(seg, "%2e.") {
				return "", errPathEscape
			}
		}
		if !strings.Contains(cur, "%") {
			break
		}
		next, err := url.PathUnescape(cur)
		if err != nil {
			return "", fmt.Errorf("the path is not valid percent-encoding")
		}
		cur = next
	}
	p := strings.ToLower(u.Path)
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return p, nil
}

// plainPath is routedPath's fast path for the common case, a path of
// lower-case letters, digits and - _ . ~ : @ without "//", "/." or
// escapes: it is its own routed path (without a trailing slash).
func plainPath(u *url.URL) (string, bool) {
	p := u.Path
	if u.RawPath != "" || p == "" || p[0] != '/' {
		return "", false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '~', c == ':', c == '@':
		case c == '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return "", false
			}
		case c == '.':
			if p[i-1] == '/' {
				return "", false
			}
		default:
			return "", false
		}
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return p, true
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), sub)
}

// PathAllowed reports whether a routed path is under one of the prefixes
// that get the token.
func (g *Guard) PathAllowed(routed string) bool {
	for _, p := range g.paths {
		if strings.HasPrefix(routed+"/", p) {
			return true
		}
	}
	return false
}

// IsSignOut reports whether a routed path is API Manager's sign-out.
func IsSignOut(routed string) bool {
	return strings.HasSuffix(routed, "/api/me/sign-out")
}

// StripConnectionAuth removes Authorization and Proxy-Authorization from
// the Connection header's list, where reverse_proxy would take them for
// hop-by-hop headers and drop the injected token.
func StripConnectionAuth(h http.Header) {
	vals, ok := h["Connection"]
	if !ok {
		return
	}
	var keep []string
	changed := false
	for _, v := range vals {
		for tok := range strings.SplitSeq(v, ",") {
			tok = strings.TrimSpace(tok)
			if strings.EqualFold(tok, "Authorization") || strings.EqualFold(tok, "Proxy-Authorization") {
				changed = true
				continue
			}
			if tok != "" {
				keep = append(keep, tok)
			}
		}
	}
	if !changed {
		return
	}
	if len(keep) == 0 {
		h.Del("Connection")
		return
	}
	h["Connection"] = []string{strings.Join(keep, ", ")}
}

// AnswerPreflight answers a CORS preflight of an allowed origin here: it
// never reaches API Manager.
func AnswerPreflight(w http.ResponseWriter, r *http.Request, origin string) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, PATCH, DELETE")
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
		h.Set("Access-Control-Allow-Headers", req)
	}
	if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
		h.Set("Access-Control-Allow-Private-Network", "true")
	}
	h.Set("Access-Control-Max-Age", "600")
	h.Add("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	w.WriteHeader(http.StatusNoContent)
}

// IsPreflight reports whether r is a CORS preflight.
func IsPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
}

// FixCORSHeaders removes the upstream's Access-Control-* response headers
// and, for an allowed origin, allows it.
func FixCORSHeaders(h http.Header, origin string) {
	for k := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			delete(h, k)
		}
	}
	if origin != "" {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
	}
}

// Bounds of the pause in re-logins for a resource that refuses even a new
// token.
const (
	SuppressMin   = 10 * time.Second
	SuppressMax   = 5 * time.Minute
	suppressPaths = 256 // paths tracked at most
	// SuppressSpread is how many paths refusing new tokens at once make
	// the pause the identity's, so that many different always-401 paths
	// cost no more logins than one.
	SuppressSpread = 3
)

// Relogins stops 401s from forcing logins. A 401 for the current token
// renews it and replays the request, however soon after the login it
// comes; but when the replay with the new token is refused too, the
// resource refuses, not the token: further re-logins for that path are
// Suppressed for a pause that doubles from 10 s to 5 min, and its 401s go
// to the client. When several paths do so at once, the pause covers the
// whole identity.
type Relogins struct {
	mu       sync.Mutex
	paths    map[string]*pause
	identity pause
}

// pause is a suppression: until when, and how many times in a row.
type pause struct {
	until time.Time
	n     int
}

func (p *pause) extend(now time.Time) time.Duration {
	if now.After(p.until.Add(SuppressMax)) {
		p.n = 0 // long quiet: start again from the shortest pause
	}
	p.n++
	d := SuppressMin
	for i := 1; i < p.n && d < SuppressMax; i++ {
		d *= 2
	}
	d = min(d, SuppressMax)
	p.until = now.Add(d)
	return d
}

// Suppressed reports whether a 401 for path must go to the client without
// a new login.
func (g *Relogins) Suppressed(path string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Before(g.identity.until) {
		return true
	}
	p := g.paths[path]
	return p != nil && now.Before(p.until)
}

// RefusedAgain records that path refused a new token, and returns the
// pause and whether it covers the whole identity.
func (g *Relogins) RefusedAgain(path string, now time.Time) (time.Duration, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paths == nil {
		g.paths = make(map[string]*pause)
	}
	p := g.paths[path]
	if p == nil {
		if len(g.paths) >= suppressPaths {
			for k, old := range g.paths {
				if now.After(old.until.Add(SuppressMax)) {
					delete(g.paths, k)
				}
			}
		}
		if len(g.paths) >= suppressPaths {
			return g.identity.extend(now), true
		}
		p = &pause{}
		g.paths[path] = p
	}
	d := p.extend(now)
	active := 0
	for _, q := range g.paths {
		if now.Before(q.until) {
			active++
		}
	}
	if active >= SuppressSpread {
		return g.identity.extend(now), true
	}
	return d, false
}

// Replayed records that path took a new token: it is not paused.
func (g *Relogins) Replayed(path string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.paths, path)
}

// Status reports the paths paused now and the identity's pause.
func (g *Relogins) Status(now time.Time) (paths int, identityUntil time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.paths {
		if now.Before(p.until) {
			paths++
		}
	}
	if now.Before(g.identity.until) {
		identityUntil = g.identity.until
	}
	return paths, identityUntil
}
