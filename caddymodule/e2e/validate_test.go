package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
)

// TestValidateCatchesMistakes runs the binary's validate, as a user would
// before a run, on Caddyfiles with the mistakes people make: each is
// refused with an error that names the setting and the fix, or (a secret
// in the JSON config) warned about, and the output never holds a secret.
func TestValidateCatchesMistakes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const dollarSecret = "$ecretValue-9x"
	e.vars["APIC_UPSTREAM_NO_PORT"] = "apim.example.com"
	e.vars["APIC_UPSTREAM"] = "apim.example.com:443"
	e.vars["APIC_UPSTREAM_CREDS"] = "https://user:" + apicsim.DefaultProviderPassword + "@apim.example.com"
	e.vars["APIC_DOLLAR_SECRET"] = dollarSecret
	secrets := []string{apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret, dollarSecret}

	// The log and the error are JSON: a quote in them is \".

	// site is a Caddyfile that logs to standard error, with one site
	// holding apic_auth (its block with extra lines, those of drop left
	// out) and then body.
	site := func(extra []string, drop []string, body string) string {
		var lines []string
	next:
		for _, l := range strings.Split(e.authBlock(extra...), "\n") {
			for _, d := range drop {
				if strings.HasPrefix(strings.TrimSpace(l), d+" ") && !slices.Contains(extra, strings.TrimSpace(l)) {
					continue next
				}
			}
			lines = append(lines, l)
		}
		return fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n}\n\nhttp:// {\n\tbind unix/%s\n\t%s\n\t%s\n}\n",
			filepath.Join(e.dir, "validate.sock"), strings.Join(lines, "\n"), body)
	}
	proxy := "reverse_proxy " + e.simURL

	for _, tc := range []struct {
		name     string
		caddy    string
		want     []string // in the output
		ok       bool     // valid
		warnings int      // of a literal secret
	}{
		{"realm without identity provider", site([]string{"realm admin"}, []string{"realm"}, proxy),
			[]string{`realm \"admin\": want <scope>/<identity provider>, scope admin (Cloud Manager) or provider (API Manager), e.g. provider/default-idp-2; list them with apic-auth-proxy apic-realms --server ` + e.simURL}, false, 0},
		{"typo in an option", site([]string{"pasword {env.APIC_PASSWORD}"}, []string{"password"}, proxy),
			[]string{`unknown option \"pasword\": did you mean password?`}, false, 0},
		{"every missing setting at once", site(nil, []string{"username", "password", "client_id"}, proxy),
			[]string{"missing username (or api_key), password (or api_key), client_id"}, false, 0},
		{"missing and unset at once", site([]string{"client_secret {env.APIC_NOT_SET}"}, []string{"client_secret", "client_id"}, proxy),
			[]string{"missing client_id; client_secret: placeholder {env.APIC_NOT_SET} is unset, empty or unreadable"}, false, 0},
		{"shell variable", site([]string{"password $APIC_PASSWORD"}, []string{"password"}, proxy),
			[]string{`password: \"$APIC_PASSWORD\" is not expanded; write {env.APIC_PASSWORD}`}, false, 0},
		{"shell variable in braces", site([]string{"client_secret ${APIC_CLIENT_SECRET}"}, []string{"client_secret"}, proxy),
			[]string{`client_secret: \"${APIC_CLIENT_SECRET}\" is not expanded; write {env.APIC_CLIENT_SECRET}`}, false, 0},
		{"secret that starts with $", site([]string{"password {$APIC_DOLLAR_SECRET}"}, []string{"password"}, proxy),
			[]string{"password: the value starts like a shell variable ($NAME or ${NAME}), which is not expanded; write {env.NAME} or {file./path}"}, false, 0},
		{"secret expanded when adapted", site([]string{"password {$APIC_PASSWORD}"}, []string{"password"}, proxy),
			[]string{`"setting":"password"`, "it is in the JSON config that the admin API serves (GET /config/) and in autosave.json; write {env.VAR} or {file./path} instead"}, true, 1},
		{"literal secret", site([]string{"client_secret " + apicsim.DefaultClientSecret}, []string{"client_secret"}, proxy),
			[]string{`"setting":"client_secret"`}, true, 1},
		{"upstream a URL", site(nil, nil, "reverse_proxy {env.APIC_SERVER}"),
			[]string{"reverse_proxy upstream {env.APIC_SERVER} is the URL " + e.simURL + ", but reverse_proxy dials a host:port and would fail every request; write reverse_proxy {$APIC_SERVER}"}, false, 0},
		{"upstream a URL with credentials", site(nil, nil, "reverse_proxy {env.APIC_UPSTREAM_CREDS}"),
			[]string{"reverse_proxy upstream {env.APIC_UPSTREAM_CREDS} is the URL https://apim.example.com, but"}, false, 0},
		{"upstream unset", site(nil, nil, "reverse_proxy {\n\t\tto {env.APIC_NOT_SET}\n\t}"),
			[]string{"reverse_proxy upstream {env.APIC_NOT_SET} names a variable that is unset or empty"}, false, 0},
		{"upstream without a port", site(nil, nil, "reverse_proxy {env.APIC_UPSTREAM_NO_PORT}"),
			[]string{"reverse_proxy upstream {env.APIC_UPSTREAM_NO_PORT} has no port"}, false, 0},
		{"upstream a URL in a handle block", site(nil, nil, "handle /api/* {\n\t\treverse_proxy {env.APIC_SERVER}\n\t}"),
			[]string{"reverse_proxy upstream {env.APIC_SERVER} is the URL"}, false, 0},
		{"upstream a URL in a route before apic_auth's", site(nil, nil, "handle /api/orgs {\n\t\treverse_proxy {env.APIC_SERVER}\n\t}\n\thandle {\n\t\t"+proxy+"\n\t}"),
			[]string{"reverse_proxy upstream {env.APIC_SERVER} is the URL"}, false, 0},
		{"scope in one quoted value", site([]string{`scope "my:view org:view"`}, nil, proxy),
			[]string{"holds a space: give each scope as a value of its own, such as my:view product:view"}, false, 0},
		{"sign-out with a token that cannot", site([]string{"scope my:view org:view", "sign_out_on_stop on"}, nil, proxy),
			[]string{"sign_out_on_stop on and scope my:view org:view exclude each other: POST /api/me/sign-out needs the scope my:manage"}, false, 0},
		// A misspelt scope is warned of, with the name meant: a newer
		// server may have scopes this proxy does not know.
		{"misspelt scope", site([]string{"scope my:view prodcut:view"}, nil, proxy),
			[]string{"scope names scopes that API Connect is not known to have", `"unknown":["prodcut:view (did you mean product:view?)"]`}, true, 0},
		// What works passes.
		{"upstream host:port from the environment", site(nil, nil, "reverse_proxy {env.APIC_UPSTREAM}"), nil, true, 0},
		{"upstream expanded when adapted", site(nil, nil, "reverse_proxy {$APIC_SERVER}"), nil, true, 0},
		{"upstream from the request", site(nil, nil, "reverse_proxy {http.request.host}:8080"), nil, true, 0},
		{"upstream from the environment and the request", site(nil, nil, "reverse_proxy {env.APIC_SERVER}{http.request.uri.path}"), nil, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, ok := e.validate(tc.caddy)
			if ok != tc.ok {
				t.Fatalf("valid %v, want %v:\n%s\n%s", ok, tc.ok, out, tc.caddy)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if n := strings.Count(out, "a secret is written in the configuration itself"); n != tc.warnings {
				t.Errorf("%d warnings of a literal secret, want %d:\n%s", n, tc.warnings, out)
			}
			checkNoSecretForms(t, "validate's output", out, secrets...)
		})
	}
}
