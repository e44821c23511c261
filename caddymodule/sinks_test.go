package caddymodule

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

func TestProvisionTokenFileErrors(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "elsewhere"), link); err != nil {
		t.Fatal(err)
	}
	t.Setenv("APIC_TEST_TOKEN_DIR", dir)
	for _, tc := range []struct{ name, token, apic, want string }{
		{"open directory", open + "/token", "", "token_file: directory " + open + " is writable by every user"},
		{"symbolic link", "", link, "apic_config_file: " + link + " is a symbolic link: name the file it points to"},
		{"unset placeholder", "{env.APIC_TEST_UNSET_VAR}/token", "", "token_file: placeholder {env.APIC_TEST_UNSET_VAR} is unset"},
		{"one file, two formats", "{env.APIC_TEST_TOKEN_DIR}/token", dir + "/./token", "token_file and apic_config_file name the same file, " + dir + "/token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := simHandler("https://apim.example.com")
			h.TokenFile, h.APICConfigFile = tc.token, tc.apic
			err := provision(t, h)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// tokenFileConfig is a config whose one route holds the handlers, each
// the simulator's user with the given password, token_file and
// apic_config_file.
func tokenFileConfig(t *testing.T, handlers ...[3]string) []byte {
	t.Helper()
	var hs []*Handler
	for _, spec := range handlers {
		h := simHandler("https://apim.example.com")
		h.Password, h.TokenFile, h.APICConfigFile = spec[0], spec[1], spec[2]
		hs = append(hs, h)
	}
	return handlersConfig(t, hs...)
}

// handlersConfig is a config whose one route holds the handlers, on a
// unix socket.
func handlersConfig(t *testing.T, handlers ...*Handler) []byte {
	t.Helper()
	var hs []json.RawMessage
	for _, h := range handlers {
		hs = append(hs, caddyconfig.JSONModuleObject(h, "handler", "apic_auth", nil))
	}
	routes, _ := json.Marshal([]map[string]any{{"handle": hs}})
	return []byte(`{"admin":{"disabled":true,"config":{"persist":false}},"logging":{"logs":{"default":{"level":"ERROR"}}},` +
		`"apps":{"http":{"servers":{"s":{"listen":["unix/` + filepath.Join(t.TempDir(), "s.sock") + `"],"routes":[{"handle":[{"handler":"subroute","routes":` + string(routes) + `}]}]}}}}}`)
}

// Two identities may not keep one file; two handlers of one identity may,
// in the same format. The checks are made at load: caddy validate finds
// them, and writes no file.
func TestTokenFileClaims(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, tc := range []struct {
		name     string
		handlers [][3]string
		want     string
	}{
		{"one identity, one file, twice", [][3]string{{"pw", a, ""}, {"pw", a, ""}}, ""},
		{"one identity, two files", [][3]string{{"pw", a, ""}, {"pw", b, ""}}, ""},
		{"two identities, two files", [][3]string{{"pw", a, ""}, {"other", b, ""}}, ""},
		{"two identities, one file", [][3]string{{"pw", a, ""}, {"other", a, ""}}, "token_file: " + a + " is kept for another identity already (token_file of \"apim.example.com/provider/default-idp-2\"): each identity needs a file of its own"},
		{"two identities, one file, either option", [][3]string{{"pw", "", a}, {"other", a, ""}}, "is kept for another identity already (apic_config_file"},
		{"one identity, one file, two formats", [][3]string{{"pw", a, ""}, {"pw", "", a}}, "apic_config_file: " + a + " is the token_file of this identity already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &caddy.Config{}
			if err := json.Unmarshal(tokenFileConfig(t, tc.handlers...), cfg); err != nil {
				t.Fatal(err)
			}
			err := caddy.Validate(cfg)
			if tc.want == "" && err != nil {
				t.Fatal(err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			for _, p := range []string{a, b} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Fatalf("validating wrote %s: %v", p, err)
				}
			}
		})
	}
}
