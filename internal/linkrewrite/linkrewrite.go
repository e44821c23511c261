// Package linkrewrite rewrites the absolute URLs of an upstream (its base
// URL, scheme://host[:port][/prefix]) into URLs of the proxy as its client
// reached it, in a stream of bytes as it is written: a URL split across
// writes is found all the same, and no more than one base URL's length of
// bytes is ever held back.
//
// A URL is rewritten only when the whole base matches (scheme and host
// without regard to case, the prefix exactly) and the byte after it ends
// the base: '/', '?', '#', '"' (the end of a JSON string) or the end of
// the input. So https://apim.example.com:8443, https://apim.example.com.evil
// and https://apim.example.com@evil are left alone, and what follows the
// base is never changed: a rewritten URL names the proxy's origin, and
// nothing else.
package linkrewrite

import (
	"bytes"
	"fmt"
	"io"
	"net/url"
	"strings"
)

// Base is the upstream's base URL whose links are rewritten.
type Base struct {
	pat  []byte // the base URL; its scheme and host lower-case
	fold int    // length of scheme://host[:port]: compared without case
}

// ParseBase reads an upstream's base URL, scheme://host[:port][/prefix],
// http or https, without user information, query or fragment.
func ParseBase(raw string) (*Base, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("want scheme://host[:port][/prefix], http or https, got %q", raw)
	}
	origin := strings.ToLower(u.Scheme + "://" + u.Host)
	return &Base{pat: []byte(origin + strings.TrimSuffix(u.EscapedPath(), "/")), fold: len(origin)}, nil
}

// String returns the base URL as it is matched.
func (b *Base) String() string { return string(b.pat) }

// Target is the origin that links are rewritten to: scheme://host as the
// client reached the proxy. host must hold only what a host name, an IP
// address or a port can hold, so that the rewritten URL can go into a
// JSON string or a header as it is.
func Target(scheme, host string) (string, error) {
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("scheme %q: want http or https", scheme)
	}
	if host == "" {
		return "", fmt.Errorf("no host")
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; !isHostByte(c) {
			return "", fmt.Errorf("host %q: byte %q is not allowed", host, c)
		}
	}
	return scheme + "://" + host, nil
}

func isHostByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']'
}

// matches reports whether c may be the base's kth byte.
func (b *Base) matches(c byte, k int) bool {
	if k < b.fold && 'A' <= c && c <= 'Z' {
		c += 'a' - 'A'
	}
	return c == b.pat[k]
}

// indexStart returns the index of the first byte of p that may start the
// base, or -1.
func (b *Base) indexStart(p []byte) int {
	lower := bytes.IndexByte(p, b.pat[0]) // a scheme's first letter
	end := len(p)
	if lower >= 0 {
		end = lower
	}
	if upper := bytes.IndexByte(p[:end], b.pat[0]-('a'-'A')); upper >= 0 {
		return upper
	}
	return lower
}

// ends reports whether c, after the whole base, ends it.
func ends(c byte) bool { return c == '/' || c == '?' || c == '#' || c == '"' }

// Replace rewrites the links of b in s, a header value, to target.
func (b *Base) Replace(s, target string) string {
	if len(s) < len(b.pat) {
		return s
	}
	var out bytes.Buffer
	var z Rewriter
	z.Reset(&out, b, target, int64(len(s)))
	_, _ = z.Write([]byte(s))
	_ = z.Close()
	return out.String()
}

// outSize is the size of a Rewriter's output buffer.
const outSize = 4096

// Rewriter rewrites the links of a Base to a target in what is written to
// it, passing the result on to another writer, up to a bound: the bytes
// past it pass unchanged. Close passes on what is held back. The zero
// Rewriter is ready for Reset; Reset makes it ready for another stream.
type Rewriter struct {
	dst    io.Writer
	base   *Base
	target string
	// room is how many more bytes of input are rewritten; through is set
	// when the bound is passed.
	room    int64
	through bool
	// pending is a match in progress: input bytes that match the base's
	// first len(pending) bytes.
	pending []byte
	out     []byte // output not yet passed on
	err     error
}

// Reset makes z rewrite the links of base to target in the first max bytes
// written to it, passing the result to dst.
func (z *Rewriter) Reset(dst io.Writer, base *Base, target string, max int64) {
	*z = Rewriter{dst: dst, base: base, target: target, room: max, pending: z.pending[:0], out: z.out[:0]}
}

// Write rewrites p and passes on all it can: it holds back at most a
// match in progress. It fails with the first error of the destination.
func (z *Rewriter) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	n := len(p)
	if !z.through && int64(len(p)) > z.room {
		z.scan(p[:z.room])
		p = p[z.room:]
		// Past the bound, what is held back goes on as it came.
		z.through, z.room = true, 0
		z.emit(z.pending)
		z.pending = z.pending[:0]
	}
	if z.through {
		z.emit(p)
	} else {
		z.room -= int64(len(p))
		z.scan(p)
	}
	z.flush()
	if z.err != nil {
		return 0, z.err
	}
	return n, nil
}

// Close passes on what is held back: the end of the input ends a base.
// It does not close the destination.
func (z *Rewriter) Close() error {
	if z.err != nil {
		return z.err
	}
	if len(z.pending) == len(z.base.pat) {
		z.emitString(z.target)
	} else {
		z.emit(z.pending)
	}
	z.pending = z.pending[:0]
	z.flush()
	return z.err
}

// scan rewrites p, within the bound.
func (z *Rewriter) scan(p []byte) {
	n := len(z.base.pat)
	for i := 0; i < len(p); {
		if len(z.pending) > 0 {
			z.feed(p[i])
			i++
			continue
		}
		j := z.base.indexStart(p[i:])
		if j < 0 {
			z.emit(p[i:])
			return
		}
		z.emit(p[i : i+j])
		i += j
		if rest := p[i:]; len(rest) > n {
			// The whole candidate and its next byte are here.
			if z.isStart(rest[:n]) && ends(rest[n]) {
				z.emitString(z.target)
				i += n
			} else {
				z.emitByte(rest[0])
				i++
			}
			continue
		}
		z.pending = append(z.pending, p[i])
		i++
	}
}

// feed takes the next byte after a match in progress.
func (z *Rewriter) feed(c byte) {
	for {
		k := len(z.pending)
		switch {
		case k == 0:
			if z.base.matches(c, 0) {
				z.pending = append(z.pending, c)
			} else {
				z.emitByte(c)
			}
			return
		case k == len(z.base.pat):
			if ends(c) {
				z.emitString(z.target)
				z.pending = z.pending[:0]
				z.emitByte(c) // no base starts with an ending byte
				return
			}
		case z.base.matches(c, k):
			z.pending = append(z.pending, c)
			return
		}
		// No match starts at pending[0]: pass it on, and keep the
		// longest rest of pending that may still start one.
		z.emit(z.pending[:1])
		rest := z.pending[1:]
		for len(rest) > 0 && !z.isStart(rest) {
			z.emit(rest[:1])
			rest = rest[1:]
		}
		z.pending = append(z.pending[:0], rest...)
	}
}

// isStart reports whether p matches the start of the base.
func (z *Rewriter) isStart(p []byte) bool {
	for k, c := range p {
		if !z.base.matches(c, k) {
			return false
		}
	}
	return true
}

// reserve makes room for n more bytes in the output buffer, passing on
// what it holds if need be; it reports false when n does not fit at all.
func (z *Rewriter) reserve(n int) bool {
	if len(z.out)+n <= cap(z.out) {
		return true
	}
	if cap(z.out) == 0 {
		z.out = make([]byte, 0, outSize)
	} else {
		z.flush()
	}
	return n <= cap(z.out)
}

func (z *Rewriter) emit(p []byte) {
	if z.reserve(len(p)) {
		z.out = append(z.out, p...)
		return
	}
	z.write(p)
}

func (z *Rewriter) emitByte(c byte) {
	z.reserve(1)
	z.out = append(z.out, c)
}

func (z *Rewriter) emitString(s string) {
	if z.reserve(len(s)) {
		z.out = append(z.out, s...)
		return
	}
	z.write([]byte(s))
}

// flush passes on the output buffered so far.
func (z *Rewriter) flush() {
	if len(z.out) > 0 {
		z.write(z.out)
		z.out = z.out[:0]
	}
}

func (z *Rewriter) write(p []byte) {
	if z.err != nil {
		return
	}
	if _, err := z.dst.Write(p); err != nil {
		z.err = err
	}
}
