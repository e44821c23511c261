package apic

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseToolkitCredentials(t *testing.T) {
	good := `{"cloud_id":"c1","toolkit":{"endpoint":"https://apim.example.com/api","client_id":"tk-id","client_secret":"tk-s3cret"},
		"consumer_toolkit":{"endpoint":"https://apim.example.com/consumer-api","client_id":"x","client_secret":"y"}}`
	c, err := ParseToolkitCredentials([]byte(good))
	if err != nil || c != (ToolkitCredentials{Server: "https://apim.example.com", ClientID: "tk-id", ClientSecret: "tk-s3cret"}) {
		t.Fatalf("got %+v, %v", c, err)
	}
	prefixed := `{"toolkit":{"endpoint":"https://cp4i.example.com/integration/apis/ns/inst/api/","client_id":"a","client_secret":"b"}}`
	if c, err := ParseToolkitCredentials([]byte(prefixed)); err != nil || c.Server != "https://cp4i.example.com/integration/apis/ns/inst" {
		t.Fatalf("prefixed: %+v, %v", c, err)
	}
	for _, tc := range []struct{ in, want string }{
		{`[]`, "not a JSON object"},
		{`nonsense`, "not a JSON object"},
		{`{"consumer_toolkit":{}}`, `no "toolkit" section`},
		{`{"toolkit":{"client_secret":"tk-s3cret"}}`, "missing toolkit.endpoint, toolkit.client_id"},
		{`{"toolkit":{"endpoint":"ftp://h/api","client_id":"a","client_secret":"tk-s3cret"}}`, "toolkit.endpoint: want an http:// or https:// URL"},
	} {
		_, err := ParseToolkitCredentials([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "tk-s3cret") {
			t.Errorf("error %q holds the secret", err)
		}
	}
	path := filepath.Join(t.TempDir(), "credentials.json")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadToolkitCredentials(path); err != nil || c.ClientID != "tk-id" {
		t.Fatalf("load: %+v, %v", c, err)
	}
	if _, err := LoadToolkitCredentials(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Fatal("loaded a missing file")
	}
}
