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
		{"no scope", login("default-idp-2"), `realm: want admin/<idp> or provider/<idp>, such as provider/default-idp-2, got "default-idp-2"`, nil},
		{"no identity provider", login("provider/"), `realm: want admin/<idp> or provider/<idp>, such as provider/default-idp-2, got "provider/"`, nil},
		{"empty scope", login("/default-idp-2"), `realm: want admin/<idp> or provider/<idp>, such as provider/default-idp-2, got "/default-idp-2"`, nil},
		{"other scope", login("cloud/default-idp-1"), `realm: want admin/<idp> or provider/<idp>, such as provider/default-idp-2, got "cloud/default-idp-1"`, nil},
		{"scope in capitals", login("Provider/default-idp-2"), `realm: want admin/<idp> or provider/<idp>, such as provider/default-idp-2, got "Provider/default-idp-2"`, nil},
		{"consumer realm", login("consumer:org:sandbox/sandbox-idp"),
			`realm: want admin/<idp> or provider/<idp>, got "consumer:org:sandbox/sandbox-idp": consumer realms are for the consumer API, and the proxy logs in to the platform API`, nil},
		{"API key with a bad realm", func() apic.Credentials { c := apiKey; c.Realm = "x"; return c }(), `realm: want admin/<idp> or provider/<idp>, such as provider/default-idp-2, got "x"`, nil},
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
			err := tc.c.Check(nil)
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
	err := apic.Credentials{Password: "p", ClientSecret: "s"}.Check(names)
	if want := "missing --username (APIC_USERNAME), --realm (APIC_REALM), client_id"; err == nil || err.Error() != want {
		t.Errorf("Check = %v, want %q", err, want)
	}
	err = apic.Credentials{Realm: "idp", Username: "u", Password: "p", ClientID: "c", ClientSecret: "s"}.Check(names)
	if want := `--realm (APIC_REALM): want admin/<idp> or provider/<idp>, such as provider/default-idp-2, got "idp"`; err == nil || err.Error() != want {
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
