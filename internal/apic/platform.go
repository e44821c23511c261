package apic

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// This file holds the platform API calls other than the token request:
// GET /api/me, the identity provider lists, and the registrations.

// decodeJSON decodes the JSON answer of a call into v.
func decodeJSON(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("the body is not the expected JSON (%s)", describeBody(data))
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
	// Realm and Title are not in the Me schema of IBM's Provider API
	// document, though some servers send them; see TokenRealm.
	Realm string `json:"realm"`
	URL   string `json:"url"`
}

// Me asks GET /api/me who the token belongs to.
func (c *Client) Me(ctx context.Context, tok *Token) (*Me, error) {
	var me Me
	err := c.send(ctx, request{
		method: http.MethodGet, path: "/api/me", token: tok, want: []int{http.StatusOK},
		answer: func(data []byte) error { return decodeJSON(data, &me) },
	})
	if err != nil {
		return nil, err
	}
	return &me, nil
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
	var list struct {
		Results []IdentityProvider `json:"results"`
	}
	var raw json.RawMessage
	err := c.send(ctx, request{
		method: http.MethodGet, path: "/api/cloud/" + scope + "/identity-providers", want: []int{http.StatusOK},
		answer: func(data []byte) error { raw = data; return decodeJSON(data, &list) },
	})
	if err != nil {
		return nil, err
	}
	for i, p := range list.Results {
		if p.Realm == "" {
			list.Results[i].Realm = scope + "/" + p.Name
		}
	}
	return &IdentityProviders{Scope: scope, Raw: raw, Providers: list.Results}, nil
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

// CreateRegistration creates a registration with
// POST /api/cloud/registrations (a Cloud Manager call, scope
// cloud:manage) and returns it as the server describes it.
func (c *Client) CreateRegistration(ctx context.Context, tok *Token, doc *RegistrationDocument) (*Registration, error) {
	body, err := doc.body()
	if err != nil {
		return nil, err
	}
	var reg Registration
	err = c.send(ctx, request{
		method: http.MethodPost, path: "/api/cloud/registrations", token: tok, body: body,
		secrets: []string{doc.clientSecret}, want: []int{http.StatusCreated, http.StatusOK},
		answer: func(data []byte) error { return decodeJSON(data, &reg) },
	})
	if err != nil {
		return nil, err
	}
	return &reg, nil
}
