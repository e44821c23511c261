package apic

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Kind is the class of a token request failure.
type Kind int

// Kinds of failure. Refused means the server will not give a token for
// these credentials and asking again soon will not help; every other kind
// may heal by itself.
const (
	KindUnreachable Kind = iota + 1 // no connection: refused, no route, DNS
	KindTimeout                     // no answer in time
	KindTLS                         // certificate not trusted, or for another host
	KindRefused                     // 4xx but 408 and 429: credentials or request refused
	KindRateLimited                 // 429
	KindServer                      // 5xx or 408
	KindBadResponse                 // 200 without a usable token
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

// Error is a failed token request. It never holds a secret: server
// messages are scrubbed of the credentials that were sent.
type Error struct {
	Kind  Kind
	URL   string // the token endpoint
	Grant string
	// Status is the HTTP status, 0 when none arrived.
	Status int
	// Messages are the server's own, from API Connect's error body.
	Messages []string
	// RetryAt is when the server asked to be called again (zero if it
	// did not say).
	RetryAt time.Time
	Err     error
}

// Refused reports whether the server refused the credentials or the
// request, so that asking again soon would not help.
func (e *Error) Refused() bool { return e.Kind == KindRefused }

// RetryAfter is when the server asked to be called again: zero when it did
// not say.
func (e *Error) RetryAfter() time.Time { return e.RetryAt }

// Cause names the kind of failure, for logs and metric labels.
func (e *Error) Cause() string { return e.Kind.String() }

func (e *Error) Error() string {
	var b strings.Builder
	switch e.Kind {
	case KindUnreachable:
		fmt.Fprintf(&b, "token endpoint %s unreachable", e.URL)
	case KindTimeout:
		fmt.Fprintf(&b, "token endpoint %s timed out", e.URL)
	case KindTLS:
		fmt.Fprintf(&b, "token endpoint %s failed TLS verification", e.URL)
	case KindRefused:
		what := "the " + e.Grant + " token request"
		if e.Status == 401 || e.Status == 403 {
			what = "the credentials (" + e.Grant + " grant)"
		}
		fmt.Fprintf(&b, "token endpoint %s refused %s: status %d", e.URL, what, e.Status)
	case KindRateLimited:
		fmt.Fprintf(&b, "token endpoint %s is rate limiting: status %d", e.URL, e.Status)
	case KindServer:
		fmt.Fprintf(&b, "token endpoint %s failed: status %d", e.URL, e.Status)
	case KindBadResponse:
		fmt.Fprintf(&b, "token endpoint %s answered without a usable token", e.URL)
	default:
		fmt.Fprintf(&b, "token request to %s failed", e.URL)
	}
	if len(e.Messages) > 0 {
		fmt.Fprintf(&b, ": %s", strings.Join(e.Messages, "; "))
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// transportError classifies an error from sending the request or reading
// the answer.
func transportError(ctx context.Context, endpoint, grant string, err error) *Error {
	e := &Error{URL: endpoint, Grant: grant, Err: err}
	var (
		netErr      net.Error
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidCert x509.CertificateInvalidError
		verifyErr   *tls.CertificateVerificationError
		recordErr   tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknownAuth), errors.As(err, &hostErr), errors.As(err, &invalidCert),
		errors.As(err, &verifyErr), errors.As(err, &recordErr):
		e.Kind = KindTLS
	case errors.Is(err, context.DeadlineExceeded), ctx.Err() != nil,
		errors.As(err, &netErr) && netErr.Timeout():
		e.Kind = KindTimeout
		e.Err = nil // "context deadline exceeded" says nothing more
	default:
		e.Kind = KindUnreachable
	}
	return e
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
