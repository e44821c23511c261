// Command upstream is the benchmark's upstream: a small, fast HTTP server
// that answers every request 200 with a small JSON body, after reading and
// discarding the request body (so a large upload streams through).
//
// It checks that every request carried a bearer token. GET /_count
// answers its counters as JSON (and is not counted itself); POST /_reset
// zeroes them:
//
//	{"requests":123,"bad_auth":0,"expired":0,"distinct_tokens":1,"body_bytes":0}
//
// The counters are:
//   - bad_auth: requests whose Authorization is missing, or not "Bearer "
//     followed by something;
//   - expired: requests whose bearer token is a JWT with an exp claim at
//     least 1 s in the past (API Connect's exp is in whole seconds, so a
//     token may stay valid for up to a second after it: only a token
//     certainly expired is counted);
//   - distinct_tokens: how many different bearer tokens were seen.
//
// The token is never printed.
//
//	go run ./bench/upstream -listen 127.0.0.1:0
//
// It prints "upstream on http://ADDR" on standard output once it listens.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type tokenInfo struct {
	token string
	exp   int64 // the JWT's exp claim (Unix seconds); 0 when not a JWT
}

type server struct {
	requests  atomic.Int64
	badAuth   atomic.Int64
	expired   atomic.Int64
	bodyBytes atomic.Int64

	last atomic.Pointer[tokenInfo] // the token of the latest request

	mu   sync.Mutex
	seen map[string]*tokenInfo
}

// tokenInfo returns what is known of tok, parsing it the first time.
func (s *server) tokenInfo(tok string) *tokenInfo {
	if ti := s.last.Load(); ti != nil && ti.token == tok {
		return ti
	}
	s.mu.Lock()
	ti := s.seen[tok]
	if ti == nil {
		ti = &tokenInfo{token: tok, exp: jwtExp(tok)}
		s.seen[tok] = ti
	}
	s.mu.Unlock()
	s.last.Store(ti)
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

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/_count" && r.Method == http.MethodGet:
		s.mu.Lock()
		distinct := len(s.seen)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"requests":%d,"bad_auth":%d,"expired":%d,"distinct_tokens":%d,"body_bytes":%d}`+"\n",
			s.requests.Load(), s.badAuth.Load(), s.expired.Load(), distinct, s.bodyBytes.Load())
		return
	case r.URL.Path == "/_reset" && r.Method == http.MethodPost:
		s.requests.Store(0)
		s.badAuth.Store(0)
		s.expired.Store(0)
		s.bodyBytes.Store(0)
		s.mu.Lock()
		s.seen = make(map[string]*tokenInfo)
		s.mu.Unlock()
		s.last.Store(nil)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.requests.Add(1)
	auth := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(auth, "Bearer "); !ok || strings.TrimSpace(tok) == "" {
		s.badAuth.Add(1)
	} else if ti := s.tokenInfo(tok); ti.exp > 0 && time.Now().Unix() >= ti.exp+1 {
		s.expired.Add(1)
	}
	var n int64
	if r.Body != nil {
		var err error
		n, err = io.Copy(io.Discard, r.Body)
		s.bodyBytes.Add(n)
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	b := make([]byte, 0, 64)
	b = append(b, `{"status":"ok","received_bytes":`...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler:           &server{seen: make(map[string]*tokenInfo)},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, "upstream: ", log.LstdFlags),
	}
	fmt.Printf("upstream on http://%s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
}
