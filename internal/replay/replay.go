// Package replay lets apic_auth send a request again after API Manager
// refused its token: Body keeps what the first attempt read of the request
// body, and Writer holds back a 401 so that the client sees only the
// second attempt's answer.
package replay

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"

	"github.com/apic-tools/apic-auth-proxy/internal/guard"
)

// Body passes a request body through while keeping what was read,
// up to max bytes, so that the request can be sent again. Reads are
// serialised, so that detach sees every byte an earlier attempt consumed.
type Body struct {
	mu       sync.Mutex
	rc       io.ReadCloser
	buf      []byte
	max      int64
	over     bool // more than max was read: no replay
	detached bool
}

var errBodyReplayed = errors.New("request body handed to a replay")

func (b *Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.detached {
		return 0, errBodyReplayed
	}
	n, err := b.rc.Read(p)
	if n > 0 && !b.over {
		switch need := int64(len(b.buf) + n); {
		case need > b.max:
			b.over, b.buf = true, nil
		case need > int64(cap(b.buf)):
			// Grow by doubling, but never past max: append alone would
			// leave up to twice max allocated for a body near the limit.
			grown := make([]byte, len(b.buf), min(max(2*int64(cap(b.buf)), need, 4096), b.max))
			copy(grown, b.buf)
			b.buf = append(grown, p[:n]...)
		default:
			b.buf = append(b.buf, p[:n]...)
		}
	}
	return n, err
}

// Close does not close the client's body: a replay still reads its rest.
// The server closes it when the handler returns.
func (b *Body) Close() error { return nil }

// NewBody wraps a request body, keeping up to max bytes of it.
func NewBody(rc io.ReadCloser, max int64) *Body { return &Body{rc: rc, max: max} }

// exceeded reports whether more than max bytes were read.
func (b *Body) exceeded() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.over
}

// Detach ends the first attempt's use of the body (a transport still
// sending it gets an error) and returns a reader of the whole body: the
// bytes read so far, then the rest. It fails when more than max bytes
// were read.
func (b *Body) Detach() (io.ReadCloser, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.over {
		return nil, false
	}
	b.detached = true
	return replayReader{io.MultiReader(bytes.NewReader(b.buf), b.rc)}, true
}

type replayReader struct{ io.Reader }

func (replayReader) Close() error { return nil }

// maxHeld401Body bounds what is kept of a held 401's body.
const maxHeld401Body = 64 << 10

// Writer passes a response through unless it is a 401 that may be
// replayed: that one is held (status, headers and up to 64 KiB of body)
// and the client sees nothing of it. Until the status is known, headers go
// to a map of its own, so that a held response leaves no trace.
type Writer struct {
	w    http.ResponseWriter
	hdr  http.Header
	hold bool  // a 401 may be held
	body *Body // nil: no body; a body over its limit forbids holding
	// origin is the allowed origin of a browser request, "" for none:
	// the upstream's Access-Control-* headers are replaced (see
	// fixCORSHeaders).
	origin string

	status   int
	passed   bool
	held     bool
	heldBody []byte
}

// writers are reused: the hot path allocates none.
var writers = sync.Pool{New: func() any { return &Writer{hdr: make(http.Header)} }}

// NewWriter wraps w; hold says whether a 401 may be held, as long as
// body (when not nil) has not outgrown its limit; origin is the allowed
// origin of a browser request, or "". Give it back with Put.
func NewWriter(w http.ResponseWriter, hold bool, body *Body, origin string) *Writer {
	rw := writers.Get().(*Writer)
	rw.w, rw.hold, rw.body, rw.origin = w, hold, body, origin
	for k, v := range w.Header() {
		rw.hdr[k] = v
	}
	return rw
}

// Put returns rw to the pool; it must not be used after.
func (rw *Writer) Put() {
	clear(rw.hdr)
	held := rw.heldBody[:0]
	if cap(held) > maxHeld401Body {
		held = nil
	}
	*rw = Writer{hdr: rw.hdr, heldBody: held}
	writers.Put(rw)
}

func (rw *Writer) mayHold() bool {
	return rw.hold && (rw.body == nil || !rw.body.exceeded())
}

func (rw *Writer) Header() http.Header {
	if rw.passed {
		return rw.w.Header()
	}
	return rw.hdr
}

func (rw *Writer) WriteHeader(code int) {
	switch {
	case rw.held:
		return
	case rw.passed:
		rw.w.WriteHeader(code)
		return
	case code < 200:
		// Informational (100 Continue, 101 Switching Protocols, 103
		// Early Hints): pass on with the headers so far.
		rw.copyHeader()
		rw.w.WriteHeader(code)
		return
	}
	rw.status = code
	if code == http.StatusUnauthorized && rw.mayHold() {
		rw.held = true
		return
	}
	rw.copyHeader()
	rw.passed = true
	rw.w.WriteHeader(code)
}

// copyHeader makes the real header map equal to rw.hdr, with the CORS
// headers fixed.
func (rw *Writer) copyHeader() {
	dst := rw.w.Header()
	clear(dst)
	for k, v := range rw.hdr {
		dst[k] = v
	}
	guard.FixCORSHeaders(dst, rw.origin)
}

func (rw *Writer) Write(p []byte) (int, error) {
	if !rw.passed && !rw.held {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.held {
		if room := maxHeld401Body - len(rw.heldBody); room > 0 {
			rw.heldBody = append(rw.heldBody, p[:min(room, len(p))]...)
		}
		return len(p), nil
	}
	return rw.w.Write(p)
}

// FlushError flushes a response that is passed through; http.
// ResponseController finds it before Unwrap.
func (rw *Writer) FlushError() error {
	if !rw.passed {
		return nil
	}
	return http.NewResponseController(rw.w).Flush()
}

// Flush implements http.Flusher.
func (rw *Writer) Flush() { _ = rw.FlushError() }

// Unwrap gives http.ResponseController the real writer (hijacking for
// upgrades, deadlines).
func (rw *Writer) Unwrap() http.ResponseWriter { return rw.w }

// Release sends a held 401 to the client as it came.
func (rw *Writer) Release() {
	rw.held = false
	rw.copyHeader()
	rw.passed = true
	rw.w.Header().Del("Content-Length")
	rw.w.WriteHeader(rw.status)
	_, _ = rw.w.Write(rw.heldBody)
}

// Held reports whether the response is a 401 held back for a replay.
func (rw *Writer) Held() bool { return rw.held }

// Status is the response's status, 0 before WriteHeader.
func (rw *Writer) Status() int { return rw.status }

// Interface guards
var (
	_ io.ReadCloser                   = (*Body)(nil)
	_ io.ReadCloser                   = replayReader{}
	_ http.ResponseWriter             = (*Writer)(nil)
	_ http.Flusher                    = (*Writer)(nil)
	_ interface{ FlushError() error } = (*Writer)(nil)
)
