package conformance

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
)

// maxKeep bounds the bytes of one JSON or YAML request body, and of one
// response body, that Wrap keeps to check. A larger request body is not
// checked; a larger response counts as skipped. Multipart uploads are
// read as they stream and never kept, whatever their size.
const maxKeep = 8 << 20

// maxDrain bounds what Wrap reads of a request body that the handler
// accepted without reading to its end.
const maxDrain = 64 << 20

// Wrap returns a handler that serves with h and checks every answer h
// gives, as Check does. Requests under /_sim/ pass through unchecked.
// The answer reaches the client unchanged and as h writes it; the
// ResponseWriter h sees still hijacks and flushes.
func (c *Checker) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/_sim/") {
			h.ServeHTTP(w, r)
			return
		}
		reqHeader := r.Header.Clone()
		var body *bodyCapture
		if r.Body != nil && r.Body != http.NoBody {
			body = newBodyCapture(r.Body, isMultipart(r.Header), r.Header.Get("Content-Type"))
			r.Body = body
		}
		rec := &recorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)

		status, header := rec.status, rec.header
		if status == 0 {
			if rec.hijacked || r.Context().Err() != nil {
				// No answer: a dropped connection, or a client gone.
				if body != nil {
					body.finish(false)
				}
				c.skip()
				return
			}
			// Nothing written: net/http answers 200 with no body.
			status, header = http.StatusOK, w.Header().Clone()
		}
		if rec.over {
			if body != nil {
				body.finish(false)
			}
			c.skip()
			return
		}
		rb := requestBody{complete: true}
		if body != nil {
			rb = body.finish(status >= 200 && status < 300)
		}
		c.check(Answer{
			Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), ReqHeader: reqHeader,
			Status: status, Header: header, Body: rec.body.Bytes(),
		}, rb)
	})
}

func (c *Checker) skip() {
	c.mu.Lock()
	c.skipped++
	c.mu.Unlock()
}

// recorder passes an answer through and keeps its status, headers (as
// sent) and body.
type recorder struct {
	http.ResponseWriter
	status   int
	header   http.Header
	body     bytes.Buffer
	over     bool // the body passed maxKeep
	hijacked bool
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		w.status = code
		w.header = w.ResponseWriter.Header().Clone()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.over {
		if w.body.Len()+len(b) > maxKeep {
			w.over = true
			w.body = bytes.Buffer{}
		} else {
			w.body.Write(b)
		}
	}
	return w.ResponseWriter.Write(b)
}

// Hijack hands over the connection: there is no answer to check.
func (w *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return conn, rw, err
}

// FlushError flushes the answer as http.ResponseController does.
func (w *recorder) FlushError() error {
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bodyCapture keeps what the handler reads of a request body: the bytes
// of a JSON or YAML body (up to maxKeep), the part names of a multipart
// one, which a goroutine reads from a pipe as the body streams.
type bodyCapture struct {
	io.ReadCloser
	buf     bytes.Buffer
	over    bool
	eof     bool
	readErr error

	pw       *io.PipeWriter // multipart only
	pipeDown bool           // the part reader stopped: no more writes
	done     chan struct{}
	parts    []string
	partsErr error
}

func newBodyCapture(rc io.ReadCloser, isMultipart bool, contentType string) *bodyCapture {
	b := &bodyCapture{ReadCloser: rc}
	if isMultipart {
		pr, pw := io.Pipe()
		b.pw, b.done = pw, make(chan struct{})
		go func() {
			defer close(b.done)
			b.parts, b.partsErr = partNames(contentType, pr)
			// Whatever follows the last part is read and dropped, so
			// that writes to the pipe never block.
			_, _ = io.Copy(io.Discard, pr)
		}()
	}
	return b
}

func (b *bodyCapture) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.keep(p[:n])
	}
	switch {
	case errors.Is(err, io.EOF):
		b.eof = true
	case err != nil && b.readErr == nil:
		b.readErr = err
	}
	return n, err
}

func (b *bodyCapture) keep(p []byte) {
	if b.pw != nil {
		if !b.pipeDown {
			if _, err := b.pw.Write(p); err != nil {
				b.pipeDown = true
			}
		}
		return
	}
	if b.over {
		return
	}
	if b.buf.Len()+len(p) > maxKeep {
		b.over = true
		b.buf = bytes.Buffer{}
		return
	}
	b.buf.Write(p)
}

// finish reads the rest of the body when drain is set (an accepted request
// whose handler stopped short), ends the part reader and returns what was
// seen.
func (b *bodyCapture) finish(drain bool) requestBody {
	if drain && !b.eof && b.readErr == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(b, maxDrain))
	}
	complete := b.eof && b.readErr == nil && !b.over
	if b.pw != nil {
		_ = b.pw.Close()
		<-b.done
		return requestBody{parts: b.parts, partsErr: b.partsErr, complete: complete}
	}
	return requestBody{data: b.buf.Bytes(), complete: complete}
}
