package apic

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// This file holds the checks of a login's settings, shared by the Caddy
// module, its quick start and the toolkit's commands: each names the
// setting and what was expected, never a secret.

// CheckServer checks that s is a usable base URL: http or https, a host,
// no credentials, query or fragment, and not ending in /api (the client
// adds that itself).
func CheckServer(s string) error {
	u, err := url.Parse(s)
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // url.Error quotes the whole URL, password included
	}
	switch {
	case err != nil:
		return fmt.Errorf("not a URL: %v", err)
	case u.User != nil:
		// Before any check that quotes s.
		return fmt.Errorf("the URL must not carry credentials; use the credential settings")
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("want an http:// or https:// URL, got %q", s)
	case u.Host == "":
		return fmt.Errorf("want a URL with a host, got %q", s)
	case u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		// An empty query or fragment ("https://host?") parses as none
		// but would swallow the /api/token that the client appends.
		return fmt.Errorf("the URL must not have a query or fragment, got %q", s)
	case strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), "/api"):
		return fmt.Errorf("give the base URL without the trailing /api (got %q): the token endpoint is <server>/api/token", s)
	}
	return nil
}

// Check reports what makes c unusable for a login: the required fields
// that are empty (a *MissingError naming them all), or a realm that is not
// of the platform API's forms. names gives each field's name in the
// errors, keyed by the Caddy config's names (realm, username, password,
// client_id, client_secret); a field it lacks is named by its key. server
// is the server the login is for, "" when unknown: the error of a bad
// realm shows how to list that server's realms.
//
// The grant is the one Grant picks: with an API key, no username,
// password or realm is needed. A realm given is checked either way.
func (c Credentials) Check(server string, names map[string]string) error {
	name := func(field string) string {
		if n, ok := names[field]; ok {
			return n
		}
		return field
	}
	var missing []string
	for _, f := range []struct {
		field, value string
		needed       bool
	}{
		{"username", c.Username, c.APIKey == ""},
		{"password", c.Password, c.APIKey == ""},
		{"realm", c.Realm, c.APIKey == ""},
		{"client_id", c.ClientID, true},
		{"client_secret", c.ClientSecret, true},
	} {
		if f.needed && f.value == "" {
			missing = append(missing, name(f.field))
		}
	}
	if len(missing) > 0 {
		return &MissingError{Names: missing}
	}
	if c.Realm != "" {
		if err := checkRealm(c.Realm, server); err != nil {
			return fmt.Errorf("%s %q: %v", name("realm"), c.Realm, err)
		}
	}
	return nil
}

// checkRealm checks that realm is one of the platform API's forms,
// admin/<idp> (Cloud Manager) or provider/<idp> (API Manager). The
// consumer API's consumer:<org>:<catalog>/<idp> realms are refused: its
// token endpoint is not <server>/api/token, the one this package asks.
func checkRealm(realm, server string) error {
	scope, idp, _ := strings.Cut(realm, "/")
	if (scope == "admin" || scope == "provider") && idp != "" {
		return nil
	}
	if server == "" {
		server = "<server>"
	}
	const want = "want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2"
	list := "list them with apic-auth-proxy apic-realms --server " + server
	if strings.HasPrefix(realm, "consumer:") {
		return fmt.Errorf("consumer realms are for the consumer API, and the proxy logs in to the platform API: %s; %s", want, list)
	}
	return fmt.Errorf("%s; %s", want, list)
}

// MissingError names the required settings that are empty.
type MissingError struct {
	// Names are the settings, as the check was told to name them.
	Names []string
}

func (e *MissingError) Error() string { return "missing " + strings.Join(e.Names, ", ") }

// WithMissing adds the settings names, missing too, in front of those err
// names: a *MissingError is returned with names first. A missing setting
// is reported before any other problem, so an err that is not a
// *MissingError (nil or not) gives way to a *MissingError of names alone.
// Without names, err is returned as it is.
func WithMissing(err error, names ...string) error {
	if len(names) == 0 {
		return err
	}
	var missing *MissingError
	if errors.As(err, &missing) {
		return &MissingError{Names: append(slices.Clip(names), missing.Names...)}
	}
	return &MissingError{Names: names}
}
