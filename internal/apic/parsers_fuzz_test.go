package apic_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
)

// FuzzParseRegistrationDocument: no document panics the parser; one it
// accepts has a name, a client id and a secret, and its String never
// shows the secret; an error never quotes the secret.
func FuzzParseRegistrationDocument(f *testing.F) {
	for _, s := range []string{
		"type: registration\napi_version: 2.0.0\nname: ci\nclient_type: toolkit\nclient_id: ci\nclient_secret: s3cr3t-value\nscopes: [my:view]\n",
		`{"name":"ci","client_id":"ci","client_secret":"s3cr3t-value","state":"enabled"}`,
		"name: [1, 2]\nclient_id: x\nclient_secret: s3cr3t-value\n",
		"state: maybe\nname: a\nclient_id: b\nclient_secret: s3cr3t-value\n",
		"- a\n- b\n",
		"name: &a x\nclient_id: *a\nclient_secret: *a\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := apic.ParseRegistrationDocument(data)
		if err != nil {
			if secret := secretIn(data); len(secret) >= 8 && strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q quotes the client secret", err)
			}
			return
		}
		if d.Name == "" || d.ClientID == "" || d.ClientSecret() == "" {
			t.Fatalf("accepted a document without name, client id or secret: %+v", d)
		}
		if s := d.ClientSecret(); len(s) >= 4 && !strings.Contains(d.Name+d.ClientID, s) && strings.Contains(d.String(), s) {
			t.Fatalf("String() %q shows the secret", d.String())
		}
	})
}

// secretIn finds the client_secret a JSON or simple YAML document gives.
func secretIn(data []byte) string {
	var m map[string]any
	if json.Unmarshal(data, &m) == nil {
		s, _ := m["client_secret"].(string)
		return s
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "client_secret:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// FuzzParseToolkitCredentials: no file panics the parser; one it accepts
// has a server that passes CheckServer, a client id and a secret; an
// error never quotes the secret.
func FuzzParseToolkitCredentials(f *testing.F) {
	for _, s := range []string{
		`{"cloud_id":"x","toolkit":{"endpoint":"https://apim.example.com/api","client_id":"id","client_secret":"s3cr3t-value"}}`,
		`{"toolkit":{"endpoint":"https://apim.example.com","client_id":"id"}}`,
		`{"toolkit":{"endpoint":"ftp://x/api","client_id":"id","client_secret":"s3cr3t-value"}}`,
		`{"toolkit":null}`, `[]`, `{"toolkit":{"endpoint":1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := apic.ParseToolkitCredentials(data)
		if err != nil {
			var doc struct {
				Toolkit struct {
					Endpoint     string `json:"endpoint"`
					ClientSecret string `json:"client_secret"`
				} `json:"toolkit"`
			}
			_ = json.Unmarshal(data, &doc)
			s := doc.Toolkit.ClientSecret
			if len(s) >= 8 && !strings.Contains(doc.Toolkit.Endpoint, s) && strings.Contains(err.Error(), s) {
				t.Fatalf("error %q quotes the client secret", err)
			}
			return
		}
		if c.ClientID == "" || c.ClientSecret == "" {
			t.Fatalf("accepted credentials without client id or secret: %+v", c)
		}
		if err := apic.CheckServer(c.Server); err != nil {
			t.Fatalf("accepted server %q: %v", c.Server, err)
		}
	})
}
