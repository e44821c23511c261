package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// upstream is the benchmark's upstream: it answers every request 200 with
// a small JSON body, after reading and discarding the request body (so
// that a large upload streams through), and counts what it saw:
//
//   - badAuth: requests whose Authorization is missing, or not "Bearer "
//     followed by something;
//   - expired: requests whose bearer token is a JWT with an exp claim at
//     least 1 s in the past (API Connect's exp is in whole seconds, so a
//     token may stay valid for up to a second after it: only a token
//     certainly expired is counted);
//   - the number of distinct bearer tokens.
//
// The token is never printed.
type upstream struct {
	requests  atomic.Int64
	badAuth   atomic.Int64
	expired   atomic.Int64
	bodyBytes atomic.Int64

	last atomic.Pointer[tokenInfo] // the token of the latest request

	mu   sync.Mutex
	seen map[string]*tokenInfo
}

type tokenInfo struct {
	token string
	exp   int64 // the JWT's exp claim (Unix seconds); 0 when not a JWT
}

// upstreamCounts is a snapshot of the upstream's counters.
type upstreamCounts struct {
	Requests       int64 `json:"requests"`
	BadAuth        int64 `json:"bad_auth"`
	Expired        int64 `json:"expired"`
	DistinctTokens int   `json:"distinct_tokens"`
	BodyBytes      int64 `json:"body_bytes"`
}

func newUpstream() *upstream {
	return &upstream{seen: make(map[string]*tokenInfo)}
}

// counts returns the counters.
func (u *upstream) counts() upstreamCounts {
	u.mu.Lock()
	distinct := len(u.seen)
	u.mu.Unlock()
	return upstreamCounts{
		Requests: u.requests.Load(), BadAuth: u.badAuth.Load(), Expired: u.expired.Load(),
		DistinctTokens: distinct, BodyBytes: u.bodyBytes.Load(),
	}
}

// tokenInfo returns what is known of tok, parsing it the first time.
func (u *upstream) tokenInfo(tok string) *tokenInfo {
	if ti := u.last.Load(); ti != nil && ti.token == tok {
		return ti
	}
	u.mu.Lock()
	ti := u.seen[tok]
	if ti == nil {
		ti = &tokenInfo{token: tok, exp: jwtExp(tok)}
		u.seen[tok] = ti
	}
	u.mu.Unlock()
	u.last.Store(ti)
	return ti
}

// jwtExp returns the exp claim of a JWT, or 0.
func jwtExp(tok string) int64 {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return 0
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return 0
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return 0
	}
	return claims.Exp
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	auth := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(auth, "Bearer "); !ok || strings.TrimSpace(tok) == "" {
		u.badAuth.Add(1)
	} else if ti := u.tokenInfo(tok); ti.exp > 0 && time.Now().Unix() >= ti.exp+1 {
		u.expired.Add(1)
	}
	n, err := io.Copy(io.Discard, r.Body)
	u.bodyBytes.Add(n)
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	b := make([]byte, 0, 64)
	b = append(b, `{"status":"ok","received_bytes":`...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}
