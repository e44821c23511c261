package apic

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Kind is the class of a failed request.
type Kind int

// Kinds of failure. Refused means the server will not do it for these
// credentials or this request, and TLS that the server's certificate is
// not trusted (or that it does not speak TLS): asking again soon will not
// help either way (see Error.Lasting). Every other kind may heal by
// itself.
const (
	KindUnreachable Kind = iota + 1 // no connection: refused, no route, DNS
	KindTimeout                     // no answer in time
	KindTLS                         // certificate not trusted, or for another host
	KindRefused                     // 4xx but 408 and 429: credentials or request refused
	KindRateLimited                 // 429
	KindServer                      // 5xx or 408
	KindBadResponse                 // an answer of no use: a success without what was asked for, or a redirect
)

// String names the kind, for logs and metric labels.
func (k Kind) String() string {
	switch k {
	case KindUnreachable:
		return "unreachable"
	case KindTimeout:
		return "timeout"
	case KindTLS:
		return "tls"
	case KindRefused:
		return "refused"
	case KindRateLimited:
		return "rate_limited"
	case KindServer:
		return "server_error"
	case KindBadResponse:
		return "bad_response"
	}
	return "unknown"
}

// statusKind classifies an answer whose status is not the one asked for.
func statusKind(status int) Kind {
	switch {
	case status == http.StatusTooManyRequests:
		return KindRateLimited
	case status == http.StatusRequestTimeout || status >= 500:
		return KindServer
	case status >= 400:
		return KindRefused
	}
	return KindBadResponse
}

// Error is a failed request to the platform API: a token request (Grant
// is set) or any other call. It never holds a secret: server messages
// are scrubbed of the credentials, tokens and other secrets that were
// sent.
type Error struct {
	Kind   Kind
	Method string
	URL    string
	// Grant is the grant type of a token request; "" for other calls.
	Grant string
	// Status is the HTTP status, 0 when none arrived.
	Status int
	// Messages are the server's own, from API Connect's error body.
	Messages []string
	// RetryAt is when the server asked to be called again (zero if it
	// did not say).
	RetryAt time.Time
	Err     error
	// Hint says what fixes the failure, when it is known; the text ends
	// with it.
	Hint string
}

// Refused reports whether the server refused the credentials or the
// request, so that asking again soon would not help.
func (e *Error) Refused() bool { return e.Kind == KindRefused }

// Lasting reports whether the failure lasts until someone changes the
// configuration or the server: the credentials or the request were
// refused, or the server's certificate is not trusted.
func (e *Error) Lasting() bool { return e.Kind == KindRefused || e.Kind == KindTLS }

// RetryAfter is when the server asked to be called again: zero when it did
// not say.
func (e *Error) RetryAfter() time.Time { return e.RetryAt }

// Cause names the kind of failure, for logs and metric labels.
func (e *Error) Cause() string { return e.Kind.String() }

// ServerMessage is the server's messages in one line, or "" when it gave
// none.
func (e *Error) ServerMessage() string { return strings.Join(e.Messages, "; ") }

// Error names the endpoint, what went wrong, and the server's messages.
// A token request's text starts "token endpoint <url>", any other call's
// "<method> <url>:".
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.Kind == KindTLS:
		e.tlsText(&b)
	case e.Grant != "":
		e.tokenText(&b)
	default:
		e.callText(&b)
	}
	if len(e.Messages) > 0 {
		fmt.Fprintf(&b, ": %s", e.ServerMessage())
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Hint != "" {
		fmt.Fprintf(&b, "; %s", e.Hint)
	}
	return b.String()
}

// tlsText names the endpoint, then the host whose certificate is not
// trusted (or that did not speak TLS).
func (e *Error) tlsText(b *strings.Builder) {
	if e.Grant != "" {
		fmt.Fprintf(b, "token endpoint %s: ", e.URL)
	} else {
		fmt.Fprintf(b, "%s %s: ", e.Method, e.URL)
	}
	host := e.URL
	if u, err := url.Parse(e.URL); err == nil && u.Host != "" {
		host = u.Host
	}
	if notTLS(e.Err) {
		fmt.Fprintf(b, "%s does not answer in TLS", host)
		return
	}
	fmt.Fprintf(b, "the certificate of %s is not trusted", host)
}

func (e *Error) tokenText(b *strings.Builder) {
	switch e.Kind {
	case KindUnreachable:
		fmt.Fprintf(b, "token endpoint %s unreachable", e.URL)
	case KindTimeout:
		fmt.Fprintf(b, "token endpoint %s timed out", e.URL)
	case KindRefused:
		what := "the " + e.Grant + " token request"
		if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
			what = "the credentials (" + e.Grant + " grant)"
		}
		fmt.Fprintf(b, "token endpoint %s refused %s: status %d", e.URL, what, e.Status)
	case KindRateLimited:
		fmt.Fprintf(b, "token endpoint %s is rate limiting: status %d", e.URL, e.Status)
	case KindServer:
		fmt.Fprintf(b, "token endpoint %s failed: status %d", e.URL, e.Status)
	case KindBadResponse:
		if e.Status != http.StatusOK {
			fmt.Fprintf(b, "token endpoint %s answered status %d without a token", e.URL, e.Status)
			return
		}
		fmt.Fprintf(b, "token endpoint %s answered without a usable token", e.URL)
	default:
		fmt.Fprintf(b, "token request to %s failed", e.URL)
	}
}

func (e *Error) callText(b *strings.Builder) {
	call := e.Method + " " + e.URL
	switch e.Kind {
	case KindUnreachable:
		fmt.Fprintf(b, "%s: unreachable", call)
	case KindTimeout:
		fmt.Fprintf(b, "%s: timed out", call)
	case KindBadResponse:
		fmt.Fprintf(b, "%s: unusable answer (status %d)", call, e.Status)
	case KindRefused, KindRateLimited, KindServer:
		fmt.Fprintf(b, "%s: status %d", call, e.Status)
	default:
		fmt.Fprintf(b, "%s: failed", call)
	}
}

func (e *Error) Unwrap() error { return e.Err }

// transportKind classifies an error from sending a request or reading the
// answer, and returns the cause worth showing: without the *url.Error
// wrapping (the Error names the method and URL itself), and none for a
// timeout ("context deadline exceeded" says nothing more).
func transportKind(ctx context.Context, err error) (Kind, error) {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var (
		netErr      net.Error
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidCert x509.CertificateInvalidError
		verifyErr   *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &verifyErr):
		// "tls: failed to verify certificate: x509: ...": the x509 part
		// says it all.
		return KindTLS, verifyErr.Err
	case errors.As(err, &unknownAuth), errors.As(err, &hostErr), errors.As(err, &invalidCert),
		notTLS(err):
		return KindTLS, err
	case errors.Is(err, context.DeadlineExceeded), ctx.Err() != nil,
		errors.As(err, &netErr) && netErr.Timeout():
		return KindTimeout, nil
	}
	return KindUnreachable, err
}

// tlsHint says what fixes a TLS failure err: trusting the server's
// authority with caOption (the setting that does it), naming the server
// by a name its certificate is for, renewing an expired certificate, or
// plain http:// for a server that does not speak TLS.
func tlsHint(err error, caOption string) string {
	var (
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidCert x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknownAuth):
		if caOption == "" {
			return "trust its CA"
		}
		return "name its CA with " + caOption
	case errors.As(err, &hostErr):
		return "give the server by a name the certificate is for"
	case errors.As(err, &invalidCert) && invalidCert.Reason == x509.Expired:
		return "renew the server's certificate, or set this machine's clock right"
	case notTLS(err):
		return "if it speaks plain HTTP, give the server as http://"
	}
	return ""
}

// notTLS reports whether err says the server answered a TLS handshake
// with something else: plain HTTP, say.
func notTLS(err error) bool {
	var recordErr tls.RecordHeaderError
	return errors.As(err, &recordErr) || errors.Is(err, http.ErrSchemeMismatch)
}

// TransportCause classifies an error from sending a request to API
// Manager or reading its answer (as a reverse proxy reports it) and says
// what happened in a phrase that holds no address, to follow "API Manager
// at <host>": "is unreachable: connection refused", "did not answer in
// time", "closed the connection before answering".
func TransportCause(err error) (Kind, string) {
	kind, _ := transportKind(context.Background(), err)
	switch {
	case kind == KindTimeout:
		return kind, "did not answer in time"
	case kind == KindTLS:
		return kind, "failed the TLS handshake"
	}
	for _, c := range transportCauses {
		if c.is(err) {
			return kind, c.phrase
		}
	}
	// Some wrappers (reverse_proxy's DialError) hide the cause from
	// errors.Is and errors.As; its text still names it.
	text := err.Error()
	for _, c := range transportCauses {
		for _, t := range c.texts {
			if strings.Contains(text, t) {
				return kind, c.phrase
			}
		}
	}
	return kind, "could not be reached"
}

// transportCauses are the causes TransportCause tells apart: how to find
// each in an error chain, and in an error's text.
var transportCauses = []struct {
	is     func(error) bool
	texts  []string
	phrase string
}{
	{
		func(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) },
		[]string{syscall.ECONNREFUSED.Error()},
		"is unreachable: connection refused",
	},
	{
		func(err error) bool { var d *net.DNSError; return errors.As(err, &d) },
		[]string{"no such host", "server misbehaving"},
		"is unreachable: its name does not resolve",
	},
	{
		func(err error) bool {
			return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
		},
		[]string{syscall.EHOSTUNREACH.Error(), syscall.ENETUNREACH.Error()},
		"is unreachable: no route to it",
	},
	{
		func(err error) bool { var n net.Error; return errors.As(err, &n) && n.Timeout() },
		[]string{"i/o timeout"},
		"is unreachable: the connection timed out",
	},
	{
		// net.ErrClosed: the transport closed the connection on reading
		// its end while a request body was still being sent.
		func(err error) bool {
			return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) ||
				errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
		},
		// The last two are net/http's unexported errors for a kept-alive
		// connection that the server closed as the request went out on it.
		[]string{syscall.ECONNRESET.Error(), syscall.EPIPE.Error(), "use of closed network connection",
			"server closed idle connection", "cannot rewind body after connection loss"},
		"closed the connection before answering",
	},
}

// ErrorMessages reads the messages of an API Connect error body,
// {"status":N,"message":["..."],"errors":["..."]}, with s's secrets
// scrubbed before any is shortened. A body of another shape gives its
// first line, shortened; an empty body gives none.
func ErrorMessages(body []byte, s *Scrubber) []string {
	var e struct {
		Message json.RawMessage `json:"message"`
		Errors  json.RawMessage `json:"errors"`
	}
	var out []string
	if json.Unmarshal(body, &e) == nil {
		out = append(out, stringsOf(e.Message)...)
		out = append(out, stringsOf(e.Errors)...)
		if len(out) > 0 {
			for i, m := range out {
				out[i] = shorten(s.Scrub(m), 500)
			}
			return out
		}
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if line == "" {
		return nil
	}
	return []string{shorten(s.Scrub(line), 200)}
}

// stringsOf reads a JSON string or array of strings (message is always an
// array, but be lenient about what arrives).
func stringsOf(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var one string
	if json.Unmarshal(raw, &one) == nil && one != "" {
		return []string{one}
	}
	return nil
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ParseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date. It returns the zero time for an absent or unreadable value.
func ParseRetryAfter(v string, now time.Time) time.Time {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return time.Time{}
		}
		if secs > 86400 {
			secs = 86400
		}
		return now.Add(time.Duration(secs) * time.Second)
	}
	// All three HTTP-date forms (RFC 9110, 5.6.7), not only RFC 1123.
	if t, err := http.ParseTime(v); err == nil {
		return t
	}
	return time.Time{}
}
