package caddymodule

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`apic_auth {
		server         https://apim.example.com/integration/apis/ns/inst
		realm          provider/default-idp-2
		username       {env.APIC_USERNAME}
		password       {file./run/secrets/apic-password}
		client_id      {env.APIC_CLIENT_ID}
		client_secret  {env.APIC_CLIENT_SECRET}
		refresh_before 30m
		timeout        5s
		tls_trusted_ca_certs /etc/ssl/a.pem /etc/ssl/b.pem
		tls_trusted_ca_certs /etc/ssl/c.pem
		token_file       {env.XDG_RUNTIME_DIR}/apic/token
		apic_config_file ~/.apiconnect/token
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Handler{
		Server:            "https://apim.example.com/integration/apis/ns/inst",
		Realm:             "provider/default-idp-2",
		Username:          "{env.APIC_USERNAME}",
		Password:          "{file./run/secrets/apic-password}",
		ClientID:          "{env.APIC_CLIENT_ID}",
		ClientSecret:      "{env.APIC_CLIENT_SECRET}",
		RefreshBefore:     caddy.Duration(30 * time.Minute),
		Timeout:           caddy.Duration(5 * time.Second),
		TLSTrustedCACerts: []string{"/etc/ssl/a.pem", "/etc/ssl/b.pem", "/etc/ssl/c.pem"},
		TokenFile:         "{env.XDG_RUNTIME_DIR}/apic/token",
		APICConfigFile:    "~/.apiconnect/token",
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("got %+v\nwant %+v", h, want)
	}

	d = caddyfile.NewTestDispenser(`apic_auth {
		server https://apim.example.com
		api_key {env.APIC_API_KEY}
		client_id id
		client_secret secret
		tls_insecure_skip_verify
	}`)
	h = Handler{}
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.APIKey != "{env.APIC_API_KEY}" || !h.TLSInsecureSkipVerify {
		t.Fatalf("got %+v", h)
	}

	for _, tc := range []struct {
		block string
		check func(h Handler) bool
	}{
		{"replay_max_body 16MiB", func(h Handler) bool { return h.ReplayMaxBody == 16<<20 }},
		{"replay_max_body 500kB", func(h Handler) bool { return h.ReplayMaxBody == 500000 }},
		{"replay_max_body off", func(h Handler) bool { return h.ReplayMaxBody == -1 }},
		{"client_authorization keep", func(h Handler) bool { return h.ClientAuthorization == ClientAuthKeep }},
		{"client_authorization reject", func(h Handler) bool { return h.ClientAuthorization == ClientAuthReject }},
		{"pass_sign_out", func(h Handler) bool { return h.PassSignOut }},
		{"sign_out_on_stop off", func(h Handler) bool { return h.SignOutOnStop != nil && !*h.SignOutOnStop }},
		{"sign_out_on_stop on", func(h Handler) bool { return h.SignOutOnStop != nil && *h.SignOutOnStop }},
		{"rewrite_links", func(h Handler) bool { return h.RewriteLinks && h.RewriteLinksMaxBody == 0 }},
		{"rewrite_links\nrewrite_links_max_body 1MiB", func(h Handler) bool { return h.RewriteLinks && h.RewriteLinksMaxBody == 1<<20 }},
		{"scope my:view", func(h Handler) bool { return slices.Equal(h.Scope, []string{"my:view"}) }},
		// Repeated lines add up; the set is made at provisioning.
		{"scope my:view product:view\nscope org:view my:view", func(h Handler) bool {
			return slices.Equal(h.Scope, []string{"my:view", "product:view", "org:view", "my:view"})
		}},
	} {
		h = Handler{}
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("apic_auth {\n" + tc.block + "\n}")); err != nil || !tc.check(h) {
			t.Errorf("%s: %v, got %+v", tc.block, err, h)
		}
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, input, want string
	}{
		{"argument on the directive", `apic_auth https://x { }`, "wrong argument count"},
		{"unknown option", "apic_auth {\n usernme bob\n}", `unknown option "usernme": did you mean username?`},
		{"typo in password", "apic_auth {\n pasword {env.P}\n}", `unknown option "pasword": did you mean password?`},
		{"swapped letters", "apic_auth {\n tiemout 5s\n}", `unknown option "tiemout": did you mean timeout?`},
		{"dash for underscore", "apic_auth {\n client-secret {env.S}\n}", `unknown option "client-secret": did you mean client_secret?`},
		{"a flag's name", "apic_auth {\n ca-cert /ca.pem\n}", `unknown option "ca-cert"`},
		{"missing value", "apic_auth {\n username\n}", "wrong argument count"},
		{"extra value", "apic_auth {\n username bob alice\n}", "wrong argument count"},
		{"duplicate", "apic_auth {\n username bob\n username alice\n}", "username is set twice"},
		{"bad duration", "apic_auth {\n timeout soon\n}", `timeout: want a positive duration such as 30m, got "soon"`},
		{"negative duration", "apic_auth {\n refresh_before -5m\n}", "refresh_before: want a positive duration"},
		{"zero duration", "apic_auth {\n timeout 0s\n}", "timeout: want a positive duration"},
		{"flag with value", "apic_auth {\n tls_insecure_skip_verify yes\n}", "wrong argument count"},
		{"no CA files", "apic_auth {\n tls_trusted_ca_certs\n}", "wrong argument count"},
		{"duration extra", "apic_auth {\n timeout 5s 6s\n}", "wrong argument count"},
		{"bad size", "apic_auth {\n replay_max_body lots\n}", `replay_max_body: want a size such as 4MiB, or off, got "lots"`},
		{"zero size", "apic_auth {\n replay_max_body 0\n}", "replay_max_body: want a size"},
		{"no size", "apic_auth {\n replay_max_body\n}", "wrong argument count"},
		{"bad client_authorization", "apic_auth {\n client_authorization drop\n}", `client_authorization: want overwrite, keep or reject, got "drop"`},
		{"pass_sign_out value", "apic_auth {\n pass_sign_out yes\n}", "wrong argument count"},
		{"token_file twice", "apic_auth {\n token_file /a\n token_file /b\n}", "token_file is set twice"},
		{"token_file without a path", "apic_auth {\n token_file\n}", "wrong argument count"},
		{"apic_config_file with two paths", "apic_auth {\n apic_config_file /a /b\n}", "wrong argument count"},
		{"bad sign_out_on_stop", "apic_auth {\n sign_out_on_stop maybe\n}", `sign_out_on_stop: want on or off, got "maybe"`},
		{"rewrite_links value", "apic_auth {\n rewrite_links yes\n}", "wrong argument count"},
		{"scope without a name", "apic_auth {\n scope\n}", "wrong argument count"},
		{"scope names in one quoted value", "apic_auth {\n scope \"my:view product:view\"\n}", `scope: "my:view product:view" holds a space: give each scope as a value of its own`},
		{"scope empty", "apic_auth {\n scope my:view \"\"\n}", "scope: an empty scope name"},
		{"scope placeholder", "apic_auth {\n scope {env.APIC_SCOPE}\n}", `scope: "{env.APIC_SCOPE}" is a placeholder, which scope does not resolve`},
		{"scope with a quote", "apic_auth {\n scope my:view 'x\"y'\n}", "has a character no scope name holds"},
		{"scopes for scope", "apic_auth {\n scopes my:view\n}", `unknown option "scopes": did you mean scope?`},
		{"bad rewrite_links_max_body", "apic_auth {\n rewrite_links_max_body off\n}", `rewrite_links_max_body: want a size such as 16MiB, got "off"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Errorf("error %q does not name the file and line", err)
			}
		})
	}
}

// TestCaddyfileAdapt compares each testdata/caddyfile_adapt/*.caddyfiletest
// (a Caddyfile, a line of dashes, the expected JSON) with what the
// Caddyfile adapter makes of it.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests found: %v", err)
	}
	sep := regexp.MustCompile(`(?m)^-{10,}\s*$`)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			parts := sep.Split(string(data), 2)
			if len(parts) != 2 {
				t.Fatalf("%s: want a Caddyfile, a line of dashes, and JSON", f)
			}
			caddyfileText, expected := strings.TrimSpace(parts[0])+"\n", strings.TrimSpace(parts[1])
			if !caddytest.CompareAdapt(t, f, caddyfileText, "caddyfile", expected) {
				t.Fail()
			}
		})
	}
}

// TestUnknownOptionWithoutGuess: a name close to none gets no guess.
func TestUnknownOptionWithoutGuess(t *testing.T) {
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("apic_auth {\n certificate /ca.pem\n}"))
	if err == nil || err.Error() != `unknown option "certificate", at Testfile:2` {
		t.Fatalf("error %v, want it to end with the unknown option and no guess", err)
	}
}

// TestSyntaxNamesEveryOption keeps the syntax in the doc comment of
// UnmarshalCaddyfile (and so README's) and the parser's options the same.
func TestSyntaxNamesEveryOption(t *testing.T) {
	src, err := os.ReadFile("caddyfile.go")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?s)//\tapic_auth \[<matcher>\] \{\n(.*?)//\t\}`).FindSubmatch(src)
	if block == nil {
		t.Fatal("no syntax block in the doc comment of UnmarshalCaddyfile")
	}
	// The options are the lines of one indent; shared_session's
	// settings those of two, its storage module's own deeper.
	var doc, sharedDoc []string
	for _, line := range strings.Split(strings.TrimRight(string(block[1]), "\n"), "\n") {
		rest := strings.TrimPrefix(line, "//\t\t")
		name := strings.Fields(rest)[0]
		switch {
		case name == "}" || strings.HasPrefix(rest, "\t\t"):
		case strings.HasPrefix(rest, "\t"):
			sharedDoc = append(sharedDoc, name)
		default:
			doc = append(doc, name)
		}
	}
	slices.Sort(doc)
	if !slices.Equal(doc, subdirectiveNames) {
		t.Errorf("the syntax names %q, subdirectiveNames %q", doc, subdirectiveNames)
	}
	slices.Sort(sharedDoc)
	if !slices.Equal(sharedDoc, sharedSessionNames) {
		t.Errorf("the syntax names %q in shared_session, sharedSessionNames %q", sharedDoc, sharedSessionNames)
	}
	if got := caseNames(src, `func unmarshalSharedSession`); !slices.Equal(got, sharedSessionNames) {
		t.Errorf("unmarshalSharedSession knows %q, sharedSessionNames %q", got, sharedSessionNames)
	}
	// The names in the case clauses of UnmarshalCaddyfile's switch.
	if got := caseNames(src, `func \(h \*Handler\) UnmarshalCaddyfile`); !slices.Equal(got, subdirectiveNames) {
		t.Errorf("the switch knows %q, subdirectiveNames %q", got, subdirectiveNames)
	}
}

// caseNames are the names in the case clauses of the function of src
// whose declaration starts as decl (a regular expression), sorted.
func caseNames(src []byte, decl string) []string {
	body := regexp.MustCompile(`(?s)\n` + decl + `\(.*?\n}\n`).Find(src)
	known := map[string]bool{}
	for _, c := range regexp.MustCompile(`(?m)^\t*case (.*):$`).FindAllSubmatch(body, -1) {
		for _, name := range regexp.MustCompile(`"([a-z_]+)"`).FindAllSubmatch(c[1], -1) {
			known[string(name[1])] = true
		}
	}
	return slices.Sorted(maps.Keys(known))
}

func TestGlobalOption(t *testing.T) {
	v, err := parseGlobalOption(caddyfile.NewTestDispenser("apic_auth {\n\tlazy_login\n}"), nil)
	if err != nil {
		t.Fatal(err)
	}
	app, ok := v.(httpcaddyfile.App)
	if !ok || app.Name != "apic_auth" || string(app.Value) != `{"lazy_login":true}` {
		t.Fatalf("got %#v", v)
	}
	for _, bad := range []string{"apic_auth on", "apic_auth {\n\tlazy_login yes\n}", "apic_auth {\n\teager\n}"} {
		if _, err := parseGlobalOption(caddyfile.NewTestDispenser(bad), nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
