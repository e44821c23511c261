package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
)

// nopWriter is a ResponseWriter that keeps nothing, so that benchmarks
// count the handler's allocations, not a recorder's.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

// benchHandler is a provisioned handler holding a token.
func benchHandler(b *testing.B) *Handler {
	b.Helper()
	_, srv := simtest.Start(b)
	h := simHandler(srv.URL)
	if err := provision(b, h); err != nil {
		b.Fatal(err)
	}
	// Production logs at INFO: a debug logger would measure the logging.
	h.logger = zap.NewNop()
	h.id.setEnv(caddy.Context{}, zap.NewNop())
	return h
}

// BenchmarkServeHTTP is the hot path: a GET with a held token, through to
// a next handler that answers 200.
func BenchmarkServeHTTP(b *testing.B) {
	h := benchHandler(b)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusOK)
		return nil
	})
	req := httptest.NewRequest("GET", "http://localhost/api/me", nil)
	w := &nopWriter{h: make(http.Header)}
	if err := h.ServeHTTP(w, req, next); err != nil { // fetch the token
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeHTTPParallel is the same from every core at once.
func BenchmarkServeHTTPParallel(b *testing.B) {
	h := benchHandler(b)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusOK)
		return nil
	})
	if err := h.ServeHTTP(&nopWriter{h: make(http.Header)}, httptest.NewRequest("GET", "http://localhost/api/me", nil), next); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest("GET", "http://localhost/api/me", nil)
		w := &nopWriter{h: make(http.Header)}
		for pb.Next() {
			if err := h.ServeHTTP(w, req, next); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkBaseline is the next handler alone: what ServeHTTP adds is the
// difference.
func BenchmarkBaseline(b *testing.B) {
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		r.Header["Authorization"] = []string{"Bearer static"}
		w.WriteHeader(http.StatusOK)
		return nil
	})
	req := httptest.NewRequest("GET", "http://localhost/api/me", nil)
	w := &nopWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		_ = next.ServeHTTP(w, req)
	}
}

// BenchmarkRewriteLinks is an 11 KB list of 30 organizations, each with
// its url, through the handler to a next handler that answers it as
// reverse_proxy would (headers, then the body in one write), with
// rewrite_links off and on. BENCHMARKS.md has the ratio.
func BenchmarkRewriteLinks(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			_, srv := simtest.Start(b)
			h := simHandler(srv.URL)
			h.RewriteLinks = on
			if err := provision(b, h); err != nil {
				b.Fatal(err)
			}
			h.logger = zap.NewNop()
			h.id.setEnv(caddy.Context{}, zap.NewNop())
			body := orgList(srv.URL, 30)
			contentType, length := []string{"application/json"}, []string{strconv.Itoa(len(body))}
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				hdr := w.Header()
				hdr["Content-Type"], hdr["Content-Length"] = contentType, length
				w.WriteHeader(http.StatusOK)
				_, err := w.Write(body)
				return err
			})
			req := httptest.NewRequest("GET", "http://127.0.0.1:9080/api/orgs", nil)
			w := &nopWriter{h: make(http.Header)}
			if err := h.ServeHTTP(w, req, next); err != nil { // fetch the token
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				clear(w.h)
				if err := h.ServeHTTP(w, req, next); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
