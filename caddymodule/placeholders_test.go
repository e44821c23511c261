package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestResolvePlaceholdersRefusesShellVariables(t *testing.T) {
	t.Setenv("APIC_TEST_SET", "value")
	repl := caddy.NewReplacer()
	for _, tc := range []struct{ raw, want string }{
		{"$APIC_PASSWORD", `password: "$APIC_PASSWORD" is not expanded; write {env.APIC_PASSWORD}`},
		{"${APIC_PASSWORD}", `password: "${APIC_PASSWORD}" is not expanded; write {env.APIC_PASSWORD}`},
		{"$_x1", `password: "$_x1" is not expanded; write {env._x1}`},
		// Not exactly a variable: perhaps a secret, never quoted.
		{"$ecretPa55-word", "password: the value starts like a shell variable ($NAME or ${NAME}), which is not expanded; write {env.NAME} or {file./path}"},
		{"${not a name}", "password: the value starts like a shell variable"},
		{"${APIC_PASSWORD", "password: the value starts like a shell variable"},
		{"{env.APIC_TEST_UNSET}", "password: placeholder {env.APIC_TEST_UNSET} is unset, empty or unreadable"},
	} {
		_, err := resolvePlaceholders(repl, "password", tc.raw)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.raw, err, tc.want)
		}
		if strings.HasPrefix(tc.raw, "$ecret") && strings.Contains(err.Error(), "ecretPa") {
			t.Errorf("%q: the error quotes the value: %v", tc.raw, err)
		}
	}
	for _, raw := range []string{"", "plain", "pa$$word", "$1abc", "$", "{env.APIC_TEST_SET}"} {
		if _, err := resolvePlaceholders(repl, "password", raw); err != nil {
			t.Errorf("%q: %v, want it taken", raw, err)
		}
	}
}

func TestCheckDial(t *testing.T) {
	t.Setenv("APIC_T_URL", "https://apim.example.com")
	t.Setenv("APIC_T_HOSTPORT", "apim.example.com:443")
	t.Setenv("APIC_T_HOST", "apim.example.com")
	t.Setenv("APIC_T_UNIX", "unix//run/apim.sock")
	t.Setenv("APIC_T_RANGE", "apim.example.com:80-81")
	t.Setenv("APIC_T_PORT", "8443")
	for _, tc := range []struct{ dial, want string }{
		{"apim.example.com", ""}, // no placeholder: the Caddyfile adapter checked it
		{"{env.APIC_T_HOSTPORT}", ""},
		{"{env.APIC_T_HOST}:{env.APIC_T_PORT}", ""},
		{"{env.APIC_T_UNIX}", ""},
		{"{http.request.host}:8080", ""},
		{"{env.APIC_T_URL}{http.request.host}", ""}, // resolved per request: reverse_proxy's own
		{"{env.APIC_T_URL}", "is the URL https://apim.example.com, but reverse_proxy dials a host:port and would fail every request; write reverse_proxy {$APIC_T_URL}"},
		{"{env.APIC_T_HOST}", "has no port"},
		{"{env.APIC_T_RANGE}", "is not a host:port"},
		{"{env.APIC_T_UNSET}", "names a variable that is unset or empty"},
		{"{env.APIC_T_UNSET}:443", "names a variable that is unset or empty: every request would fail; set it to host:port, or write reverse_proxy {$VAR}"},
	} {
		err := checkDial(tc.dial)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v, want it taken", tc.dial, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.dial, err, tc.want)
		}
	}
}
