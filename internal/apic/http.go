package apic

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
)

// This file is the package's one HTTP layer: the client constructor and
// the function that sends every request, the token requests included.

// NewHTTPClient returns an HTTP client for one API Connect server. It
// verifies the server's certificate against the PEM authorities in caFiles,
// or the system's when there are none, or not at all when insecure. It
// follows no redirect: a redirect would carry the credentials elsewhere.
// Its connection timeouts are those of http.DefaultTransport; each request
// is bounded by its context.
func NewHTTPClient(insecure bool, caFiles []string) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if len(caFiles) > 0 {
		pool := x509.NewCertPool()
		for _, f := range caFiles {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s holds no PEM certificate", f)
			}
		}
		cfg.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = cfg
	return &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// defaultHTTP is the client of a Client without one: NewHTTPClient's,
// verifying with the system's authorities.
var defaultHTTP = sync.OnceValue(func() *http.Client {
	hc, _ := NewHTTPClient(false, nil) // without CA files it cannot fail
	return hc
})

// modulePath is this module's path, to find its version in the build
// information.
const modulePath = "github.com/apic-tools/apic-auth-proxy"

// userAgent is the User-Agent of every request: apic-auth-proxy, and the
// module's version when the build records one (a build from a module
// version does; a build of a checkout says "(devel)", which is left out).
var userAgent = sync.OnceValue(func() string {
	const name = "apic-auth-proxy"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return name
	}
	for _, m := range append([]*debug.Module{&info.Main}, info.Deps...) {
		if m.Path != modulePath {
			continue
		}
		if m.Version == "" || m.Version == "(devel)" {
			return name
		}
		return name + "/" + m.Version
	}
	return name
})

// maxResponse bounds what is read of an answer.
const maxResponse = 1 << 20

// request is one request to the platform API.
type request struct {
	method string
	path   string // under the server, such as /api/token
	// grant is the grant type of a token request; "" for other calls.
	grant string
	// token, when set, is sent as the bearer token.
	token *Token
	// body, when set, is sent as JSON.
	body []byte
	// secrets are what the request sends besides the client's
	// credentials and the token (a refresh token, a new client secret).
	secrets []string
	// want are the statuses of success; none means any 2xx.
	want []int
	// answer, when set, reads the body of a success; its error makes a
	// KindBadResponse Error.
	answer func(body []byte) error
}

// send sends r and reads the answer. Every failure is an *Error whose
// server messages, and whose cause when the answer was unusable, are
// scrubbed of the secrets the request sent.
func (c *Client) send(ctx context.Context, r request) error {
	e := &Error{Method: r.method, URL: strings.TrimSuffix(c.Server, "/") + r.path, Grant: r.grant}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, e.URL, body)
	if err != nil {
		e.Kind, e.Err = KindUnreachable, err
		return e
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent())
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	secrets := r.secrets
	if r.token != nil {
		req.Header.Set("Authorization", "Bearer "+r.token.AccessToken)
		secrets = append(secrets, r.token.AccessToken, r.token.RefreshToken)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		e.Kind, e.Err = transportKind(ctx, err)
		if e.Kind == KindTLS {
			e.Hint = tlsHint(e.Err, c.CAOption)
		}
		return e
	}
	defer resp.Body.Close()
	e.Status = resp.StatusCode
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		e.Kind, e.Err = transportKind(ctx, err)
		return e
	}
	scrub := c.scrubber(secrets...)
	if !success(resp.StatusCode, r.want) {
		e.Kind = statusKind(resp.StatusCode)
		e.Messages = ErrorMessages(data, scrub)
		e.RetryAt = ParseRetryAfter(resp.Header.Get("Retry-After"), c.now())
		return e
	}
	if r.answer == nil {
		return nil
	}
	if err := r.answer(data); err != nil {
		// The cause may quote the start of the body, which may echo the
		// request.
		e.Kind, e.Err = KindBadResponse, errors.New(scrub.Scrub(err.Error()))
		return e
	}
	return nil
}

// success reports whether status is one of want, or a 2xx when want is
// empty.
func success(status int, want []int) bool {
	if len(want) == 0 {
		return status/100 == 2
	}
	return slices.Contains(want, status)
}
