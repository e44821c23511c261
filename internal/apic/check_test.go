package apic_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

func TestCredentialsCheck(t *testing.T) {
	const secret = "s3cret-Value"
	login := func(realm string) apic.Credentials {
		return apic.Credentials{Realm: realm, Username: "u", Password: secret, ClientID: "id", ClientSecret: secret}
	}
	apiKey := apic.Credentials{APIKey: secret, ClientID: "id", ClientSecret: secret}
	cases := []struct {
		name    string
		c       apic.Credentials
		want    string   // "" for none
		missing []string // the names of a *MissingError
	}{
		// The platform API's realm forms.
		{"provider realm", login("provider/default-idp-2"), "", nil},
		{"admin realm", login("admin/default-idp-1"), "", nil},
		{"LDAP provider realm", login("provider/corp-ldap"), "", nil},
		{"API key without realm", apiKey, "", nil},
		{"API key with a realm", func() apic.Credentials { c := apiKey; c.Realm = "admin/default-idp-1"; return c }(), "", nil},
		// Realms of other forms.
		{"no scope", login("default-idp-2"), `realm "default-idp-2": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://apim.example.com`, nil},
		{"no identity provider", login("provider/"), `realm "provider/": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://apim.example.com`, nil},
		{"empty scope", login("/default-idp-2"), `realm "/default-idp-2": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://apim.example.com`, nil},
		{"other scope", login("cloud/default-idp-1"), `realm "cloud/default-idp-1": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://apim.example.com`, nil},
		{"scope in capitals", login("Provider/default-idp-2"), `realm "Provider/default-idp-2": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://apim.example.com`, nil},
		{"consumer realm", login("consumer:org:sandbox/sandbox-idp"),
			`realm "consumer:org:sandbox/sandbox-idp": consumer realms are for the consumer API, and the proxy logs in to the platform API: want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://apim.example.com`, nil},
		{"API key with a bad realm", func() apic.Credentials { c := apiKey; c.Realm = "x"; return c }(), `realm "x": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://apim.example.com`, nil},
		// Missing fields: all of them named, in one error.
		{"nothing", apic.Credentials{}, "missing username, password, realm, client_id, client_secret",
			[]string{"username", "password", "realm", "client_id", "client_secret"}},
		{"no realm", login(""), "missing realm", []string{"realm"}},
		{"no password", func() apic.Credentials { c := login("provider/p"); c.Password = ""; return c }(), "missing password", []string{"password"}},
		{"API key without client", apic.Credentials{APIKey: secret}, "missing client_id, client_secret", []string{"client_id", "client_secret"}},
		{"missing before a bad realm", func() apic.Credentials { c := login("x"); c.ClientID = ""; return c }(), "missing client_id", []string{"client_id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Check("https://apim.example.com", nil)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Check = %v, want %q", err, tc.want)
			}
			checkErrorText(t, err.Error(), secret)
			var me *apic.MissingError
			if errors.As(err, &me) != (tc.missing != nil) || (me != nil && !slices.Equal(me.Names, tc.missing)) {
				t.Errorf("MissingError %+v, want names %q", me, tc.missing)
			}
		})
	}
}

// TestCredentialsCheckNames: the caller names the fields; a field it
// does not name keeps its key.
func TestCredentialsCheckNames(t *testing.T) {
	names := map[string]string{"realm": "--realm (APIC_REALM)", "username": "--username (APIC_USERNAME)"}
	err := apic.Credentials{Password: "p", ClientSecret: "s"}.Check("", names)
	if want := "missing --username (APIC_USERNAME), --realm (APIC_REALM), client_id"; err == nil || err.Error() != want {
		t.Errorf("Check = %v, want %q", err, want)
	}
	err = apic.Credentials{Realm: "idp", Username: "u", Password: "p", ClientID: "c", ClientSecret: "s"}.Check("", names)
	if want := `--realm (APIC_REALM) "idp": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server <server>`; err == nil || err.Error() != want {
		t.Errorf("Check = %v, want %q", err, want)
	}
}

func TestCheckServer(t *testing.T) {
	good := []string{
		"https://apic.example.com",
		"https://apic.example.com/",
		"http://127.0.0.1:9443",
		"https://cp4i.example.com/integration/apis/ns/instance",
		"https://host/apis",
		"https://host/api-manager",
	}
	for _, s := range good {
		if err := apic.CheckServer(s); err != nil {
			t.Errorf("CheckServer(%q) = %v, want nil", s, err)
		}
	}
	bad := []struct {
		in, want string
	}{
		{"apic.example.com", "want an http:// or https:// URL"},
		{"apic.example.com:9443", "want an http:// or https:// URL"},
		{"ftp://apic.example.com", "want an http:// or https:// URL"},
		{"https://", "want a URL with a host"},
		{"https:///path", "want a URL with a host"},
		{"https://user:s3cret-pw@apic.example.com", "must not carry credentials"},
		{"ftp://user:s3cret-pw@apic.example.com", "must not carry credentials"},
		{"https://user:s3cret-pw@apic.example.com:port", "not a URL"},
		{"https://apic.example.com?x=1", "must not have a query or fragment"},
		{"https://apic.example.com#frag", "must not have a query or fragment"},
		{"https://apic.example.com?", "must not have a query or fragment"},
		{"https://apic.example.com/#", "must not have a query or fragment"},
		{"https://apic.example.com/api", "without the trailing /api"},
		{"https://apic.example.com/api/", "without the trailing /api"},
		{"https://host/integration/apis/ns/inst/api", "without the trailing /api"},
		{"https://host/%zz", "not a URL"},
	}
	for _, tc := range bad {
		err := apic.CheckServer(tc.in)
		if err == nil {
			t.Errorf("CheckServer(%q) = nil, want an error", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckServer(%q) = %q, want it to say %q", tc.in, err, tc.want)
		}
		checkErrorText(t, err.Error(), "s3cret-pw")
	}
}

// TestWithMissing: one list names every missing setting, the added ones
// first, and a missing setting comes before any other problem.
func TestWithMissing(t *testing.T) {
	other := errors.New("realm: bad")
	for _, tc := range []struct {
		err   error
		names []string
		want  error
	}{
		{nil, []string{"server"}, &apic.MissingError{Names: []string{"server"}}},
		{other, []string{"server"}, &apic.MissingError{Names: []string{"server"}}},
		{&apic.MissingError{Names: []string{"realm", "client_id"}}, []string{"server", "--to"}, &apic.MissingError{Names: []string{"server", "--to", "realm", "client_id"}}},
		{other, nil, other},
		{nil, nil, nil},
	} {
		got := apic.WithMissing(tc.err, tc.names...)
		if (got == nil) != (tc.want == nil) || (got != nil && got.Error() != tc.want.Error()) {
			t.Errorf("WithMissing(%v, %q) = %v, want %v", tc.err, tc.names, got, tc.want)
		}
	}
	names := []string{"a", "b"}
	_ = apic.WithMissing(&apic.MissingError{Names: []string{"c"}}, names[:1]...)
	if names[1] != "b" {
		t.Errorf("WithMissing wrote into the caller's slice: %q", names)
	}
}
