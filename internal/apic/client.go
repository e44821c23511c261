// Package apic talks to the IBM API Connect platform (management) REST API:
// it requests tokens from POST <server>/api/token with the password,
// api_key or refresh_token grant, turns the answer into an oauth2.Token,
// makes the few other calls the proxy and the toolkit need, and
// classifies every failure (one Error type for all of them) so that
// callers can decide between backing off and stopping. It knows nothing
// of Caddy.
package apic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Grant types.
const (
	GrantPassword     = "password"
	GrantAPIKey       = "api_key"
	GrantRefreshToken = "refresh_token"
)

// Credentials identify a user and a client registration. Either Username
// and Password (with Realm) or APIKey is set.
type Credentials struct {
	Realm        string
	Username     string
	Password     string
	APIKey       string
	ClientID     string
	ClientSecret string
}

// Grant returns the primary grant type: api_key when an API key is set,
// password otherwise.
func (c Credentials) Grant() string {
	if c.APIKey != "" {
		return GrantAPIKey
	}
	return GrantPassword
}

// secrets lists the secret values, to scrub them from server messages.
func (c Credentials) secrets() []string {
	return []string{c.Password, c.APIKey, c.ClientSecret}
}

// Client requests tokens from one API Connect server and makes its
// other platform API calls.
type Client struct {
	// Server is the platform API's base URL: scheme, host, optional
	// port and path prefix, without the trailing /api.
	Server string
	// Credentials are the user's and the registration's.
	Credentials Credentials
	// HTTP sends the requests; its Timeout is not used, pass a context
	// with a deadline instead. Default: NewHTTPClient's, trusting the
	// system's authorities.
	HTTP *http.Client
	// Now is the clock that token expiry is computed with. Default
	// time.Now.
	Now func() time.Time
	// CAOption names the setting that trusts another certificate
	// authority, such as --ca-cert, for the hint of an Error whose server
	// certificate is signed by an unknown one. Default: the hint names
	// none.
	CAOption string
	// Scope, when not empty, narrows every token to these of the
	// registration's scopes: it is sent as the scope of every token
	// request, refreshes included, sorted, without duplicates and
	// space-separated. Default none: the token has the registration's
	// scopes.
	Scope []string
	// ScopeOption names the setting that gives Scope, such as --scope,
	// for the hint of a token request whose scope the server refused.
	// Default: the hint names none.
	ScopeOption string
}

// tokenRequest is the JSON body of POST /api/token. Only the grant's own
// fields are sent: the endpoint refuses unknown ones.
type tokenRequest struct {
	GrantType    string `json:"grant_type"`
	Username     string `json:"username,omitempty"`
	Password     string `json:"password,omitempty"`
	APIKey       string `json:"api_key,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Realm        string `json:"realm,omitempty"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	Scope        string `json:"scope,omitempty"`
}

// Login requests a token with the primary grant (password or api_key).
func (c *Client) Login(ctx context.Context) (*Token, error) {
	cr := c.Credentials
	req := tokenRequest{GrantType: cr.Grant(), ClientID: cr.ClientID, ClientSecret: cr.ClientSecret, Scope: c.scope()}
	if req.GrantType == GrantAPIKey {
		req.APIKey = cr.APIKey
	} else {
		req.Username, req.Password, req.Realm = cr.Username, cr.Password, cr.Realm
	}
	return c.requestToken(ctx, req)
}

// Refresh requests a token with the refresh_token grant.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (*Token, error) {
	cr := c.Credentials
	return c.requestToken(ctx, tokenRequest{
		GrantType: GrantRefreshToken, RefreshToken: refreshToken,
		ClientID: cr.ClientID, ClientSecret: cr.ClientSecret, Scope: c.scope(),
	})
}

// scope is the scope of a token request: Scope's set, space-separated.
func (c *Client) scope() string { return strings.Join(CanonicalScopes(c.Scope), " ") }

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP()
}

func (c *Client) requestToken(ctx context.Context, tr tokenRequest) (*Token, error) {
	body, err := json.Marshal(tr)
	if err != nil {
		return nil, err
	}
	var tok *Token
	err = c.send(ctx, request{
		method: http.MethodPost, path: "/api/token", grant: tr.GrantType, body: body,
		secrets: []string{tr.RefreshToken}, // as secret as the password
		want:    []int{http.StatusOK},
		answer: func(data []byte) (err error) {
			tok, err = ParseTokenResponse(data, c.now())
			return err
		},
	})
	if err != nil {
		c.scopeHint(err, tr.Scope)
		return nil, err
	}
	return tok, nil
}

// scopeHint gives a token request refused with 400 for its scope (the
// server's message names a scope) the hint of what to fix: the request
// may ask only for scopes the registration has.
func (c *Client) scopeHint(err error, scope string) {
	var e *Error
	if scope == "" || !errors.As(err, &e) || e.Kind != KindRefused || e.Status != http.StatusBadRequest ||
		!strings.Contains(strings.ToLower(e.ServerMessage()), "scope") {
		return
	}
	setting := "scope"
	if c.ScopeOption != "" {
		setting = c.ScopeOption
	}
	e.Hint = fmt.Sprintf("the request asked for scope %q: name in %s only scopes the client registration has", scope, setting)
}

// Scrubber returns the scrubber of this client's secrets.
func (c *Client) Scrubber() *Scrubber { return c.scrubber() }

// scrubber returns a scrubber of this client's secrets and extra ones
// (the tokens a call sent).
func (c *Client) scrubber(extra ...string) *Scrubber {
	return NewScrubber(append(c.Credentials.secrets(), extra...)...)
}

// SignOut ends the session of an access token upstream with
// POST <server>/api/me/sign-out, which also revokes its refresh token.
func (c *Client) SignOut(ctx context.Context, tok *Token) error {
	return c.send(ctx, request{method: http.MethodPost, path: "/api/me/sign-out", token: tok})
}
