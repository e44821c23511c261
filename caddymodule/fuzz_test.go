package caddymodule

import (
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// fuzzCaddyfileSeeds are apic_auth blocks as people write them, every
// subdirective at least once, and broken variants of them; ok tells
// whether UnmarshalCaddyfile accepts the block. (Unbalanced braces are
// the Caddyfile parser's to refuse, before any handler sees the tokens.)
var fuzzCaddyfileSeeds = []struct {
	in string
	ok bool
}{
	// Complete, with every subdirective.
	{`apic_auth {
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
		replay_max_body 8MiB
		client_authorization keep
		pass_sign_out
		sign_out_on_stop off
		scope my:view org:view
		scope product:view
	}`, true},
	{"apic_auth {\n\tscope \"my:view org:view\"\n}", false},
	{"apic_auth {\n\tscope\n}", false},
	{`apic_auth {
		server https://apim.example.com
		api_key {env.APIC_API_KEY}
		client_id id
		client_secret secret
		tls_insecure_skip_verify
		replay_max_body off
		client_authorization reject
		sign_out_on_stop on
	}`, true},
	{`apic_auth {
		server http://127.0.0.1:2000
		realm admin/default-idp-1
		username admin
		password "7iron hide"
		client_id clientID
		client_secret clientPassword
		refresh_before 1d
		timeout 1m30s
		replay_max_body 4096
		client_authorization overwrite
	}`, true},
	{`apic_auth`, true},
	{`apic_auth {
	}`, true},
	{"apic_auth {\n\tpassword `a b {c}`\n\tclient_secret <<EOF\n\tsecret\n\tEOF\n}", true},
	// Broken.
	{`apic_auth extra {
		server https://apim.example.com
	}`, false},
	{`apic_auth {
		server
	}`, false},
	{`apic_auth {
		server a b
	}`, false},
	{`apic_auth {
		server a
		server b
	}`, false},
	{`apic_auth {
		refresh_before -5m
	}`, false},
	{`apic_auth {
		refresh_before 0s
	}`, false},
	{`apic_auth {
		timeout 10
	}`, false},
	{`apic_auth {
		timeout 9999999999999999h
	}`, false},
	{`apic_auth {
		refresh_before 1e400d
	}`, false},
	{`apic_auth {
		replay_max_body 0
	}`, false},
	{`apic_auth {
		replay_max_body -1
	}`, false},
	{`apic_auth {
		replay_max_body 99999999999999999999999EiB
	}`, false},
	{`apic_auth {
		replay_max_body 2TiB
	}`, false},
	{`apic_auth {
		replay_max_body off on
	}`, false},
	{`apic_auth {
		client_authorization
	}`, false},
	{`apic_auth {
		client_authorization Overwrite
	}`, false},
	{`apic_auth {
		client_authorization keep reject
	}`, false},
	{`apic_auth {
		pass_sign_out yes
	}`, false},
	{`apic_auth {
		sign_out_on_stop
	}`, false},
	{`apic_auth {
		sign_out_on_stop true
	}`, false},
	{`apic_auth {
		tls_insecure_skip_verify on
	}`, false},
	{`apic_auth {
		tls_trusted_ca_certs
	}`, false},
	{`apic_auth {
		unknown thing
	}`, false},
	{`apic_auth {
		server {
			nested
		}
	}`, false},
	{`apic_auth {
		server https://apim.example.com
	`, true}, // unclosed: the Caddyfile parser refuses it
	{`apic_auth }`, false},
	{`{`, true}, // likewise
	{``, false},
}

// TestFuzzCaddyfileSeeds checks that the seeds are what they claim: the
// good ones parse, the broken ones do not.
func TestFuzzCaddyfileSeeds(t *testing.T) {
	for i, s := range fuzzCaddyfileSeeds {
		if _, err := caddyfile.Tokenize([]byte(s.in), "Testfile"); err != nil && err != io.EOF {
			t.Errorf("seed %d does not lex: %v", i, err)
			continue
		}
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(s.in))
		if s.ok != (err == nil) {
			t.Errorf("seed %d: want ok %v, got error %v\n%s", i, s.ok, err, s.in)
		}
	}
}

func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, s := range fuzzCaddyfileSeeds {
		f.Add(s.in)
	}
	f.Fuzz(func(t *testing.T, input string) {
		// NewTestDispenser calls log.Fatalf on input the lexer refuses
		// (a broken heredoc): such input never reaches a handler.
		tokens, err := caddyfile.Tokenize([]byte(input), "Testfile")
		if err != nil && err != io.EOF {
			return
		}
		// It also replaces {$VAR} from the environment first, which can
		// make lexable input unlexable: give those the raw tokens.
		d := caddyfile.NewDispenser(tokens)
		if !strings.Contains(input, "{$") {
			d = caddyfile.NewTestDispenser(input)
		}
		var h Handler
		if err := h.UnmarshalCaddyfile(d); err != nil {
			return
		}
		if h.RefreshBefore < 0 {
			t.Errorf("refresh_before %v", h.RefreshBefore)
		}
		if h.Timeout < 0 {
			t.Errorf("timeout %v", h.Timeout)
		}
		if h.ReplayMaxBody < -1 {
			t.Errorf("replay_max_body %d", h.ReplayMaxBody)
		}
		switch h.ClientAuthorization {
		case "", ClientAuthOverwrite, ClientAuthKeep, ClientAuthReject:
		default:
			t.Errorf("client_authorization %q", h.ClientAuthorization)
		}
		// What the Caddyfile set survives the JSON config it is adapted
		// to (JSON strings cannot carry invalid UTF-8).
		if !utf8.ValidString(input) {
			return
		}
		data, err := json.Marshal(&h)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back Handler
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("unmarshal %s: %v", data, err)
		}
		if !reflect.DeepEqual(back, h) {
			t.Errorf("JSON round trip changed the handler:\n got %+v\nwant %+v\njson %s", back, h, data)
		}
	})
}
