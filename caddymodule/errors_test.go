package caddymodule

import (
	"errors"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// validateCaddyfile adapts src and runs caddy.Validate on it, as
// `apic-auth-proxy validate` does, and returns Caddy's error.
func validateCaddyfile(t *testing.T, src string) error {
	t.Helper()
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	return caddy.Validate(mustConfig(t, cfgJSON))
}

// TestErrorMessage runs real configs through caddy.Validate and checks that
// an apic_auth error loses Caddy's chain and names its place, and that
// other errors keep their message.
func TestErrorMessage(t *testing.T) {
	const secret = "s3cret-Value"
	t.Setenv("APIC_TEST_SECRET", secret)
	handler := func(realm, clientSecret string) string {
		return "apic_auth {\n\t\tserver https://apim.example.com\n\t\trealm " + realm +
			"\n\t\tusername me\n\t\tpassword {env.APIC_TEST_SECRET}\n\t\tclient_id id\n\t\tclient_secret " + clientSecret + "\n\t}"
	}
	for _, tc := range []struct {
		name, src string
		want      string // the whole message
	}{
		{
			"bad realm",
			"{\n\tadmin off\n}\nhttp://127.0.0.1:0 {\n\t" + handler("nonsense", "x") + "\n\trespond ok\n}\n",
			`apic_auth: realm "nonsense": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server https://apim.example.com` + "\nin server srv0, route 0 > 0",
		},
		{
			"unset placeholder in a handle block of the second site",
			"{\n\tadmin off\n}\nhttp://127.0.0.1:0 {\n\trespond ok\n}\nhttp://localhost:0 {\n\thandle /api/* {\n\t\t" +
				strings.ReplaceAll(handler("provider/default-idp-2", "{env.APIC_TEST_UNSET_VAR}"), "\n", "\n\t") + "\n\t\trespond ok\n\t}\n}\n",
			"apic_auth: client_secret: placeholder {env.APIC_TEST_UNSET_VAR} is unset, empty or unreadable\nin server srv0, route 1 > 0 > 0",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateCaddyfile(t, tc.src)
			if err == nil {
				t.Fatal("valid, want an error")
			}
			if !strings.Contains(err.Error(), "loading http app module") {
				t.Fatalf("Caddy's error %q lacks its chain: the test does not test ErrorMessage", err)
			}
			got := ErrorMessage(err)
			if got != tc.want {
				t.Errorf("ErrorMessage(%q)\n = %q\nwant %q", err, got, tc.want)
			}
			if strings.Contains(got, secret) {
				t.Errorf("message %q holds the secret", got)
			}
		})
	}

	for _, err := range []error{
		errors.New("adapting config using caddyfile: Caddyfile:3 - Error during parsing: unrecognized subdirective nonsense"),
		errors.New("loading http app module: provision http: server srv0: setting up route handlers: route 0: loading handler modules: position 0: loading module 'reverse_proxy': provision http.handlers.reverse_proxy: bad"),
		errors.New("provision http.handlers.apic_authx: other module"),
	} {
		if got := ErrorMessage(err); got != err.Error() {
			t.Errorf("ErrorMessage(%q) = %q, want it unchanged", err, got)
		}
	}
	if got := ErrorMessage(nil); got != "" {
		t.Errorf("ErrorMessage(nil) = %q", got)
	}
}

// TestErrorMessageOfAValidConfig keeps the test above honest: the configs
// it breaks are valid when nothing is broken.
func TestErrorMessageOfAValidConfig(t *testing.T) {
	t.Setenv("APIC_TEST_SECRET", "x")
	src := "{\n\tadmin off\n}\nhttp://127.0.0.1:0 {\n\tapic_auth {\n\t\tserver https://apim.example.com\n\t\trealm provider/default-idp-2\n\t\tusername me\n\t\tpassword {env.APIC_TEST_SECRET}\n\t\tclient_id id\n\t\tclient_secret x\n\t}\n\trespond ok\n}\n"
	if err := validateCaddyfile(t, src); err != nil {
		t.Fatalf("caddy validate: %v", err)
	}
}
