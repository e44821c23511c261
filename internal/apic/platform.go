package apic

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// This file holds the platform API calls other than the token request:
// GET /api/me, the identity provider lists, and the registrations.

// CallError is a failed platform API call (any call but POST /api/token).
// Like Error it never holds a secret: the server's messages are scrubbed
// of the credentials, the bearer token and the secrets of the request.
type CallError struct {
	Kind   Kind
	Method string
	URL    string
	// Status is the HTTP status, 0 when none arrived.
	Status int
	// Messages are the server's own, from API Connect's error body.
	Messages []string
	Err      error
}

func (e *CallError) Error() string {
	var b strings.Builder
	call := e.Method + " " + e.URL
	switch e.Kind {
	case KindUnreachable:
		fmt.Fprintf(&b, "%s: unreachable", call)
	case KindTimeout:
		fmt.Fprintf(&b, "%s: timed out", call)
	case KindTLS:
		fmt.Fprintf(&b, "%s: TLS verification failed", call)
	case KindBadResponse:
		fmt.Fprintf(&b, "%s: unusable answer (status %d)", call, e.Status)
	default:
		fmt.Fprintf(&b, "%s: status %d", call, e.Status)
	}
	if len(e.Messages) > 0 {
		fmt.Fprintf(&b, ": %s", strings.Join(e.Messages, "; "))
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *CallError) Unwrap() error { return e.Err }

// ServerMessage is the server's messages in one line, or "" when it gave
// none.
func (e *CallError) ServerMessage() string { return strings.Join(e.Messages, "; ") }

// NewHTTPClient returns an HTTP client for one API Connect server. It
// verifies the server's certificate against the PEM authorities in caFiles,
// or the system's when there are none, or not at all when insecure. It
// follows no redirect: a redirect would carry the credentials elsewhere.
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

// call sends one platform API request and returns the body of an answer
// with one of the wanted statuses. tok may be nil for calls that need no
// token; extra are more secrets to scrub from the server's messages.
func (c *Client) call(ctx context.Context, method, path string, tok *Token, body []byte, extra []string, want ...int) ([]byte, error) {
	endpoint := strings.TrimSuffix(c.Server, "/") + path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, rd)
	if err != nil {
		return nil, &CallError{Kind: KindUnreachable, Method: method, URL: endpoint, Err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	secrets := extra
	if tok != nil {
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		secrets = append(secrets, tok.AccessToken, tok.RefreshToken)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it repeats the method and URL
		}
		te := transportError(ctx, endpoint, "", err)
		return nil, &CallError{Kind: te.Kind, Method: method, URL: endpoint, Err: te.Err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		te := transportError(ctx, endpoint, "", err)
		return nil, &CallError{Kind: te.Kind, Method: method, URL: endpoint, Status: resp.StatusCode, Err: te.Err}
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return data, nil
		}
	}
	e := &CallError{Method: method, URL: endpoint, Status: resp.StatusCode, Messages: ErrorMessages(data, c.scrubber(secrets...))}
	switch s := resp.StatusCode; {
	case s == http.StatusTooManyRequests:
		e.Kind = KindRateLimited
	case s == http.StatusRequestTimeout || s >= 500:
		e.Kind = KindServer
	case s >= 400:
		e.Kind = KindRefused
	default:
		e.Kind = KindBadResponse
	}
	return nil, e
}

// decodeAnswer reads a JSON answer of a call into v.
func decodeAnswer(method, path, server string, status int, data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return &CallError{
			Kind: KindBadResponse, Method: method, URL: strings.TrimSuffix(server, "/") + path, Status: status,
			Err: fmt.Errorf("the body is not the expected JSON (%s)", describeBody(data)),
		}
	}
	return nil
}

// Me is the user a token belongs to, from GET /api/me.
type Me struct {
	Username         string `json:"username"`
	Name             string `json:"name"`
	Title            string `json:"title"`
	Email            string `json:"email"`
	FirstName        string `json:"first_name"`
	LastName         string `json:"last_name"`
	IdentityProvider string `json:"identity_provider"`
	// Realm is not in every server's answer; see TokenRealm.
	Realm string `json:"realm"`
	URL   string `json:"url"`
}

// Me asks GET /api/me who the token belongs to.
func (c *Client) Me(ctx context.Context, tok *Token) (*Me, error) {
	const path = "/api/me"
	data, err := c.call(ctx, http.MethodGet, path, tok, nil, nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var me Me
	if err := decodeAnswer(http.MethodGet, path, c.Server, http.StatusOK, data, &me); err != nil {
		return nil, err
	}
	return &me, nil
}

// TokenRealm reads the realm claim of an API Connect access token (a JWT),
// without checking its signature; "" when there is none.
func TokenRealm(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return ""
	}
	var claims struct {
		Realm string `json:"realm"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	return claims.Realm
}

// IdentityProvider is one entry of an identity provider list.
type IdentityProvider struct {
	Name         string `json:"name"`
	Title        string `json:"title"`
	Default      bool   `json:"default"`
	RegistryType string `json:"registry_type"`
	UserManaged  bool   `json:"user_managed"`
	// Realm is the realm string a token request names, such as
	// provider/default-idp-2.
	Realm string `json:"realm"`
}

// IdentityProviders is the answer of
// GET /api/cloud/{admin,provider}/identity-providers.
type IdentityProviders struct {
	// Scope is admin or provider.
	Scope string
	// Raw is the body as the server sent it.
	Raw       json.RawMessage
	Providers []IdentityProvider
}

// IdentityProviders lists the identity providers of a scope, "admin"
// (Cloud Manager) or "provider" (API Manager). The call needs no token.
// An entry without a realm gets <scope>/<name>.
func (c *Client) IdentityProviders(ctx context.Context, scope string) (*IdentityProviders, error) {
	if scope != "admin" && scope != "provider" {
		return nil, fmt.Errorf("identity providers: want the scope admin or provider, got %q", scope)
	}
	path := "/api/cloud/" + scope + "/identity-providers"
	data, err := c.call(ctx, http.MethodGet, path, nil, nil, nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var list struct {
		Results []IdentityProvider `json:"results"`
	}
	if err := decodeAnswer(http.MethodGet, path, c.Server, http.StatusOK, data, &list); err != nil {
		return nil, err
	}
	for i, p := range list.Results {
		if p.Realm == "" {
			list.Results[i].Realm = scope + "/" + p.Name
		}
	}
	return &IdentityProviders{Scope: scope, Raw: json.RawMessage(data), Providers: list.Results}, nil
}

// Registration is a client registration as the server describes it. It
// has no field for the client secret, so that it cannot be printed.
type Registration struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Title      string   `json:"title"`
	Summary    string   `json:"summary"`
	State      string   `json:"state"`
	ClientType string   `json:"client_type"`
	ClientID   string   `json:"client_id"`
	Scopes     []string `json:"scopes"`
	URL        string   `json:"url"`
}

// Registrations lists the registrations (GET /api/cloud/registrations, a
// Cloud Manager call).
func (c *Client) Registrations(ctx context.Context, tok *Token) ([]Registration, error) {
	const path = "/api/cloud/registrations"
	data, err := c.call(ctx, http.MethodGet, path, tok, nil, nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var list struct {
		Results []Registration `json:"results"`
	}
	if err := decodeAnswer(http.MethodGet, path, c.Server, http.StatusOK, data, &list); err != nil {
		return nil, err
	}
	return list.Results, nil
}

// CreateRegistration creates a registration with
// POST /api/cloud/registrations (a Cloud Manager call, scope
// cloud:manage) and returns it as the server describes it.
func (c *Client) CreateRegistration(ctx context.Context, tok *Token, doc *RegistrationDocument) (*Registration, error) {
	const path = "/api/cloud/registrations"
	body, err := doc.body()
	if err != nil {
		return nil, err
	}
	data, err := c.call(ctx, http.MethodPost, path, tok, body, []string{doc.clientSecret}, http.StatusCreated, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var reg Registration
	if err := decodeAnswer(http.MethodPost, path, c.Server, http.StatusCreated, data, &reg); err != nil {
		return nil, err
	}
	return &reg, nil
}
