package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/pberkel/caddy-storage-redis"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim"
	"github.com/apic-tools/apic-auth-proxy/internal/apicsim/simtest"
	"github.com/apic-tools/apic-auth-proxy/internal/shared"
)

func TestSharedSessionCaddyfile(t *testing.T) {
	const secret = "r3dis-Pa55word-xyz"
	const keySecret = "k3y-Material-abcdef"
	t.Setenv("APIC_TEST_REDIS_PASSWORD", secret)
	t.Setenv("APIC_TEST_SESSION_KEY", keySecret)
	for name, block := range map[string]string{
		"redis": `storage redis {
				address 127.0.0.1:6379
				password {env.APIC_TEST_REDIS_PASSWORD}
			}
			key {env.APIC_TEST_SESSION_KEY}
			storage_timeout 3s
			lock_wait 30s`,
		"file_system": `storage file_system {
				root /var/lib/apic-auth-proxy
			}`,
	} {
		t.Run(name, func(t *testing.T) {
			cf := ":9080 {\n\tapic_auth {\n\t\tserver https://apim.example.com\n\t\tshared_session {\n\t\t\t" + block + "\n\t\t}\n\t}\n\treverse_proxy apim.example.com:443\n}\n"
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(out, []byte(secret)) || bytes.Contains(out, []byte(keySecret)) {
				t.Fatalf("the adapted JSON holds a resolved secret: %s", out)
			}
			at := bytes.Index(out, []byte(`"shared_session":`))
			if at < 0 {
				t.Fatalf("no shared_session in %s", out)
			}
			var s SharedSession
			if err := json.NewDecoder(bytes.NewReader(out[at+len(`"shared_session":`):])).Decode(&s); err != nil {
				t.Fatal(err)
			}
			var storage map[string]any
			if err := json.Unmarshal(s.StorageRaw, &storage); err != nil {
				t.Fatal(err)
			}
			switch name {
			case "redis":
				if storage["module"] != "redis" || storage["password"] != "{env.APIC_TEST_REDIS_PASSWORD}" ||
					s.Key != "{env.APIC_TEST_SESSION_KEY}" || s.StorageTimeout != caddy.Duration(3*time.Second) || s.LockWait != caddy.Duration(30*time.Second) {
					t.Fatalf("got %+v, storage %v", s, storage)
				}
			case "file_system":
				if storage["module"] != "file_system" || storage["root"] != "/var/lib/apic-auth-proxy" || s.Key != "" || s.StorageTimeout != 0 {
					t.Fatalf("got %+v, storage %v", s, storage)
				}
			}
		})
	}
	// Without a storage block: Caddy's global storage.
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("apic_auth {\n shared_session {\n lock_wait 5s\n }\n}")); err != nil {
		t.Fatal(err)
	}
	if h.SharedSession == nil || h.SharedSession.StorageRaw != nil || h.SharedSession.LockWait != caddy.Duration(5*time.Second) {
		t.Fatalf("got %+v", h.SharedSession)
	}
}

func TestSharedSessionCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, block, want string }{
		{"bad duration", "storage_timeout soon", `storage_timeout: want a positive duration such as 30m, got "soon"`},
		{"zero lock_wait", "lock_wait 0s", "lock_wait: want a positive duration"},
		{"typo", "lock_wiat 5s", `shared_session: unknown setting "lock_wiat": did you mean lock_wait?`},
		{"unknown", "certificate x", `shared_session: unknown setting "certificate"; want storage, key, storage_timeout or lock_wait`},
		{"storage module typo", "storage rediss", `shared_session storage: no storage module "rediss": did you mean redis?`},
		{"storage module unknown", "storage postgresql_wxyz", `shared_session storage: no storage module "postgresql_wxyz" in this build`},
		{"storage without module", "storage", "wrong argument count"},
		{"twice", "key a\n key b", "shared_session: key is set twice"},
		{"key without value", "key", "wrong argument count"},
		{"a bad setting of the module", "storage redis {\n bogus 1\n }", "unknown configuration key: bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("apic_auth {\n shared_session {\n " + tc.block + "\n }\n}"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("apic_auth {\n shared_session on\n}")); err == nil {
		t.Fatal("shared_session with an argument accepted")
	}
}

func TestSharedSessionSignOutOnStopDefault(t *testing.T) {
	on, off := true, false
	for _, tc := range []struct {
		shared *SharedSession
		set    *bool
		want   bool
	}{
		{nil, nil, true},
		{&SharedSession{}, nil, false},
		{&SharedSession{}, &on, true},
		{nil, &off, false},
	} {
		h := simHandler("https://apim.example.com")
		h.SharedSession, h.SignOutOnStop = tc.shared, tc.set
		cfg, err := h.resolve()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.signOutOnStop != tc.want {
			t.Errorf("shared_session %v, sign_out_on_stop %v: signs out %v, want %v", tc.shared != nil, tc.set, cfg.signOutOnStop, tc.want)
		}
	}
}

// fileShared is a shared_session in a file_system storage under dir.
func fileShared(dir string) *SharedSession {
	raw, _ := json.Marshal(map[string]string{"module": "file_system", "root": dir})
	return &SharedSession{StorageRaw: raw}
}

// token gets h's token through ServeHTTP, as a request does.
func token(t *testing.T, h *Handler) string {
	t.Helper()
	var got string
	err := h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://localhost/api/me", nil),
		caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			got = r.Header.Get("Authorization")
			return nil
		}))
	if err != nil || !strings.HasPrefix(got, "Bearer ") {
		t.Fatalf("ServeHTTP: %v, Authorization %q", err, got)
	}
	return strings.TrimPrefix(got, "Bearer ")
}

// TestSharedSessionFileSystem: a proxy stores the session in the
// file_system storage, sealed (no secret in any form), and another
// identity of the same user adopts it without a token request.
func TestSharedSessionFileSystem(t *testing.T) {
	sim, srv := simtest.Start(t)
	dir := t.TempDir()
	const key = "extra-Key-material-42"
	t.Setenv("APIC_TEST_SESSION_KEY", key)
	h1 := simHandler(srv.URL)
	h1.SharedSession = fileShared(dir)
	h1.SharedSession.Key = "{env.APIC_TEST_SESSION_KEY}"
	if err := provision(t, h1); err != nil {
		t.Fatal(err)
	}
	tok := token(t, h1)
	files, err := filepath.Glob(filepath.Join(dir, shared.Prefix+"*"))
	if err != nil || len(files) != 1 || !regexp.MustCompile(`/[0-9a-f]{64}$`).MatchString(files[0]) {
		t.Fatalf("records %v (%v), want one named by a 64-digit hash", files, err)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	// The scrubber finds each secret as it is, JSON-escaped, URL-encoded
	// or base64-encoded, and any 8 characters of these.
	scrub := apic.NewScrubber(apicsim.DefaultProviderPassword, apicsim.DefaultClientSecret, tok, key)
	if scrub.Scrub(string(data)) != string(data) {
		t.Fatalf("the record holds a secret: %s", data)
	}
	st := h1.id.status().SharedSession
	if st == nil || st.Generation != 1 || st.Stored != 1 || st.Storage != "ok" || st.StorageOps["store"] != 1 {
		t.Fatalf("status %+v", st)
	}

	// Another identity of the same user (another timeout: another pool
	// entry), as another proxy would be.
	h2 := simHandler(srv.URL)
	h2.SharedSession = fileShared(dir)
	h2.SharedSession.Key = "{env.APIC_TEST_SESSION_KEY}"
	h2.Timeout = caddy.Duration(7 * time.Second)
	if err := provision(t, h2); err != nil {
		t.Fatal(err)
	}
	if h2.id == h1.id {
		t.Fatal("one identity for both")
	}
	if got := token(t, h2); got != tok {
		t.Fatal("the second proxy did not adopt the stored token")
	}
	if n := sim.TokenRequests("", ""); n != 1 {
		t.Fatalf("token requests = %d, want 1", n)
	}
	if st := h2.id.status().SharedSession; st.Adopted != 1 || st.Stored != 0 {
		t.Fatalf("status %+v", st)
	}
	// Its token request durations hold the first proxy's request alone.
	if c1, c2 := h1.id.stats.snapshot(nil).durCount, h2.id.stats.snapshot(nil).durCount; c1 != 1 || c2 != 0 {
		t.Fatalf("token request durations %d and %d, want 1 and 0", c1, c2)
	}

	// Other key material: another session, not the same record's.
	h3 := simHandler(srv.URL)
	h3.SharedSession = fileShared(dir)
	if err := provision(t, h3); err != nil {
		t.Fatal(err)
	}
	if h3.key == h1.key {
		t.Fatal("a change of the key kept the pool entry")
	}
	if strings.Contains(h3.key, h3.id.shared.store.Key()) || strings.Contains(h1.id.shared.store.Key(), strings.TrimPrefix(h1.key, "apic_auth:")) {
		t.Fatal("the pool key and the record's key are related")
	}
}

// TestSharedSessionStorageDown: a storage module that does not answer
// does not fail the config (validate passes, with one warning), and a
// config that runs serves with a login of its own.
func TestSharedSessionStorageDown(t *testing.T) {
	_, srv := simtest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	env := newTestEnv(t)
	logFile := filepath.Join(t.TempDir(), "log")
	h := simHandler(srv.URL)
	h.SharedSession = &SharedSession{
		StorageRaw:     json.RawMessage(`{"module":"redis","address":["` + closed + `"]}`),
		StorageTimeout: caddy.Duration(500 * time.Millisecond),
	}
	route := caddyhttp.Route{HandlersRaw: []json.RawMessage{caddyconfig.JSONModuleObject(h, "handler", "apic_auth", nil),
		json.RawMessage(`{"handler":"static_response","status_code":200}`)}}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN", "writer": map[string]any{"output": "file", "filename": logFile}}}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"s": map[string]any{
			"listen": []string{"unix/" + env.sock}, "routes": []caddyhttp.Route{route},
		}}}},
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const warning = "shared session storage unavailable; logging in on this proxy alone until it answers"
	var c caddy.Config
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if err := caddy.Load(raw, true); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	if status, _, body := env.do("GET", "/api/me", nil); status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	// Once by validate, once by the config that runs.
	if n := strings.Count(string(logs), warning); n != 2 {
		t.Fatalf("the warning is logged %d times, want once per load:\n%s", n, logs)
	}
	ids := liveIdentities("")
	if len(ids) != 1 {
		t.Fatalf("%d identities", len(ids))
	}
	st := ids[0].status().SharedSession
	if st == nil || st.Storage != "failing" || st.Fallbacks != 1 || !st.Local {
		t.Fatalf("status %+v", st)
	}
}

// TestSharedStorageConfigErrors: a mistake in the storage module's config
// fails the config, naming shared_session storage.
func TestSharedStorageConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, raw, want string }{
		{"unknown field", `{"module":"file_system","rooot":"/tmp"}`, "shared_session storage file_system: json: unknown field"},
		{"unknown module", `{"module":"nonesuch"}`, "shared_session storage: module not registered: caddy.storage.nonesuch"},
		{"no module", `{"root":"/tmp"}`, `shared_session storage: want a storage module's config with its name in "module"`},
		{"refused config", `{"module":"redis","address":["not an address"]}`, "shared_session storage redis: invalid address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := simHandler("https://apim.example.com")
			h.SharedSession = &SharedSession{StorageRaw: json.RawMessage(tc.raw)}
			err := provision(t, h)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestStorageUnavailable(t *testing.T) {
	for msg, want := range map[string]bool{
		"dial tcp 127.0.0.1:6379: connect: connection refused": true,
		"dial tcp: lookup redis.invalid: no such host":         true,
		"read tcp 10.0.0.1:5000->10.0.0.2:6379: i/o timeout":   true,
		"WRONGPASS invalid username-password pair":             false,
		"invalid db value: x":                                  false,
	} {
		if got := storageUnavailable(errorString(msg)); got != want {
			t.Errorf("storageUnavailable(%q) = %v", msg, got)
		}
	}
	if !storageUnavailable(context.DeadlineExceeded) {
		t.Error("a deadline is not unavailable")
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

func TestSharedFlags(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("material"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(redisPasswordEnv, "")
	var warn bytes.Buffer
	for _, tc := range []struct {
		f    sharedFlags
		want map[string]any // the storage's JSON, nil for none
		err  string
	}{
		{f: sharedFlags{}, want: nil},
		{f: sharedFlags{Redis: "redis://127.0.0.1:6379"}, want: map[string]any{"module": "redis", "address": []any{"127.0.0.1:6379"}, "db": "0"}},
		{f: sharedFlags{Redis: "rediss://cache.example.com:6380/2"}, want: map[string]any{"module": "redis", "address": []any{"cache.example.com:6380"}, "db": "2", "tls_enabled": true}},
		{f: sharedFlags{Redis: "redis://[::1]:6379", KeyFile: keyFile}, want: map[string]any{"module": "redis", "address": []any{"[::1]:6379"}, "db": "0"}},
		{f: sharedFlags{Dir: "/var/lib/aap"}, want: map[string]any{"module": "file_system", "root": "/var/lib/aap"}},
		{f: sharedFlags{Redis: "redis://h:1", Dir: "/d"}, err: "--shared-session and --shared-session-dir exclude each other"},
		{f: sharedFlags{KeyFile: keyFile}, err: "--shared-session-key-file: set with --shared-session or --shared-session-dir"},
		{f: sharedFlags{Dir: "/d", KeyFile: "/nonexistent/key"}, err: "--shared-session-key-file: stat /nonexistent/key"},
		{f: sharedFlags{Redis: "http://h:6379"}, err: `--shared-session: want redis://[user:password@]host:port[/db] (rediss:// for TLS), got the scheme "http"`},
		{f: sharedFlags{Redis: "redis://h"}, err: `got the host "h"`},
		{f: sharedFlags{Redis: "redis://h:99999"}, err: `got the port "99999"`},
		{f: sharedFlags{Redis: "redis://h:6379/x"}, err: `got the database "x"`},
		{f: sharedFlags{Redis: "redis://h:6379?db=1"}, err: "no query or fragment"},
	} {
		s, err := tc.f.config(&warn)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: error %v, want %q", tc.f, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", tc.f, err)
			continue
		}
		if tc.want == nil {
			if s != nil {
				t.Errorf("%+v: got %+v", tc.f, s)
			}
			continue
		}
		var got map[string]any
		if err := json.Unmarshal(s.StorageRaw, &got); err != nil {
			t.Fatal(err)
		}
		if g, w := mustJSON(t, got), mustJSON(t, tc.want); g != w {
			t.Errorf("%+v: storage %s, want %s", tc.f, g, w)
		}
		if (tc.f.KeyFile != "") != (s.Key == "{file."+keyFile+"}") {
			t.Errorf("%+v: key %q", tc.f, s.Key)
		}
	}
	if warn.Len() != 0 {
		t.Errorf("warned %q", warn.String())
	}
}

// TestSharedFlagsRedisPassword: a password in the URL is taken with a
// warning, kept out of the config; REDIS_PASSWORD is read otherwise.
func TestSharedFlagsRedisPassword(t *testing.T) {
	const pw = "Pa55-in-the-URL-xyz"
	t.Setenv("APIC_AUTH_PROXY_REDIS_PASSWORD", "")
	var warn bytes.Buffer
	s, err := sharedFlags{Redis: "redis://app:" + pw + "@127.0.0.1:6379"}.config(&warn)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s.StorageRaw, []byte(pw)) || !strings.Contains(string(s.StorageRaw), `"password":"{env.APIC_AUTH_PROXY_REDIS_PASSWORD}"`) ||
		!strings.Contains(string(s.StorageRaw), `"username":"app"`) {
		t.Fatalf("storage %s", s.StorageRaw)
	}
	if os.Getenv("APIC_AUTH_PROXY_REDIS_PASSWORD") != pw {
		t.Fatal("the password is not where the placeholder reads it")
	}
	if !strings.Contains(warn.String(), "shows in ps") || strings.Contains(warn.String(), pw) {
		t.Fatalf("warning %q", warn.String())
	}
	t.Setenv(redisPasswordEnv, "from-env")
	warn.Reset()
	if s, err = (sharedFlags{Redis: "redis://127.0.0.1:6379"}).config(&warn); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(s.StorageRaw), `"password":"{env.REDIS_PASSWORD}"`) || warn.Len() != 0 {
		t.Fatalf("storage %s, warning %q", s.StorageRaw, warn.String())
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
