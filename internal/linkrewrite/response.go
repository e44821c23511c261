package linkrewrite

import (
	"net/http"
	"strings"
	"sync"
)

// ResponseWriter rewrites the links of one response on its way to the
// client: the Location and Content-Location headers of any response, and
// the body of a JSON one (Content-Type application/json or */*+json) up
// to a bound. A body with a Content-Encoding other than identity passes
// unchanged (see Skipped). When a rewritten link is not as long as the
// base, the response's Content-Length is dropped and the body goes out
// chunked. Give it back with Close.
type ResponseWriter struct {
	w       http.ResponseWriter
	base    *Base
	target  string
	max     int64
	z       Rewriter
	body    bool // the body is rewritten
	wrote   bool // the final status was written
	skipped string
}

var writers = sync.Pool{New: func() any { return new(ResponseWriter) }}

// NewResponseWriter rewrites the links of base to target in the response
// written to it, in at most max bytes of the body, and passes it on to w.
func NewResponseWriter(w http.ResponseWriter, base *Base, target string, max int64) *ResponseWriter {
	rw := writers.Get().(*ResponseWriter)
	rw.w, rw.base, rw.target, rw.max = w, base, target, max
	return rw
}

// Header returns the response's header map.
func (rw *ResponseWriter) Header() http.Header { return rw.w.Header() }

// WriteHeader rewrites the headers and decides whether the body is.
func (rw *ResponseWriter) WriteHeader(code int) {
	if rw.wrote || code < 200 {
		rw.w.WriteHeader(code)
		return
	}
	rw.wrote = true
	h := rw.w.Header()
	for _, k := range []string{"Location", "Content-Location"} {
		if v := h[k]; len(v) == 1 {
			if nv := rw.base.Replace(v[0], rw.target); nv != v[0] {
				h[k] = []string{nv}
			}
		}
	}
	switch ce := h.Get("Content-Encoding"); {
	case code == http.StatusNoContent || code == http.StatusNotModified || !IsJSON(h.Get("Content-Type")):
	case ce != "" && !strings.EqualFold(ce, "identity"):
		rw.skipped = "the body is encoded (Content-Encoding " + ce + ")"
	default:
		rw.body = true
		rw.z.Reset(rw.w, rw.base, rw.target, rw.max)
		if len(rw.target) != len(rw.base.pat) {
			h.Del("Content-Length")
		}
	}
	rw.w.WriteHeader(code)
}

// Write passes on the body, rewritten when it is JSON.
func (rw *ResponseWriter) Write(p []byte) (int, error) {
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.body {
		return rw.z.Write(p)
	}
	return rw.w.Write(p)
}

// FlushError passes on all of the body written so far but a match in
// progress, and flushes the client's connection; http.ResponseController
// finds it before Unwrap.
func (rw *ResponseWriter) FlushError() error {
	if rw.body {
		rw.z.flush()
		if rw.z.err != nil {
			return rw.z.err
		}
	}
	return http.NewResponseController(rw.w).Flush()
}

// Flush implements http.Flusher.
func (rw *ResponseWriter) Flush() { _ = rw.FlushError() }

// Unwrap gives http.ResponseController the client's writer.
func (rw *ResponseWriter) Unwrap() http.ResponseWriter { return rw.w }

// Skipped says why a JSON body passed unchanged, or "".
func (rw *ResponseWriter) Skipped() string { return rw.skipped }

// Close passes on the rest of the body, and gives rw back to the pool;
// rw must not be used after.
func (rw *ResponseWriter) Close() error {
	var err error
	if rw.body {
		err = rw.z.Close()
	}
	z := rw.z
	z.Reset(nil, nil, "", 0)
	*rw = ResponseWriter{z: z}
	writers.Put(rw)
	return err
}

// IsJSON reports whether a Content-Type is JSON: application/json or a
// structured syntax suffix +json, with any parameters.
func IsJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(mt)
	if strings.EqualFold(mt, "application/json") {
		return true
	}
	slash := strings.IndexByte(mt, '/')
	return slash > 0 && len(mt) > slash+len("+json") && strings.EqualFold(mt[len(mt)-len("+json"):], "+json")
}

// Interface guards
var (
	_ http.ResponseWriter             = (*ResponseWriter)(nil)
	_ http.Flusher                    = (*ResponseWriter)(nil)
	_ interface{ FlushError() error } = (*ResponseWriter)(nil)
)
