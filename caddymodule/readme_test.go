package caddymodule

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestReadmeSyntaxMatchesGodoc keeps README's Caddyfile syntax block and
// the doc comment of UnmarshalCaddyfile the same.
func TestReadmeSyntaxMatchesGodoc(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("caddyfile.go")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```\n(apic_auth \\[<matcher>\\] \\{\n.*?\n\\})\n```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("README has no apic_auth syntax block")
	}
	var doc []string
	in := false
	for _, line := range strings.Split(string(src), "\n") {
		switch {
		case strings.HasPrefix(line, "//\tapic_auth [<matcher>] {"):
			in = true
		case !in:
			continue
		}
		doc = append(doc, strings.TrimPrefix(strings.TrimPrefix(line, "//"), "\t"))
		if line == "//\t}" {
			break
		}
	}
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	if got, want := norm(strings.Join(doc, "\n")), norm(string(block[1])); got != want {
		t.Fatalf("godoc syntax:\n%s\nREADME syntax:\n%s", got, want)
	}
}

// TestReadmeCaddyfilesAdapt adapts every ```caddyfile block of README and
// checks the adapted JSON holds placeholders, not secrets.
func TestReadmeCaddyfilesAdapt(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("APIC_SERVER", "https://apim.example.com")
	blocks := regexp.MustCompile("(?s)```caddyfile\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) < 3 {
		t.Fatalf("README has %d caddyfile blocks, want the deployment examples", len(blocks))
	}
	for i, b := range blocks {
		cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(b[1], nil)
		if err != nil {
			t.Errorf("README caddyfile block %d: %v\n%s", i+1, err, b[1])
			continue
		}
		if !strings.Contains(string(cfgJSON), `"handler":"apic_auth"`) {
			t.Errorf("README caddyfile block %d has no apic_auth handler", i+1)
		}
	}
}

// TestReadmeJSONHandler decodes README's JSON handler example into the
// handler, refusing unknown fields.
func TestReadmeJSONHandler(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```json\n(\\{\n\t\"handler\": \"apic_auth\".*?\n\\})\n```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no JSON apic_auth handler example")
	}
	dec := json.NewDecoder(bytes.NewReader(m[1]))
	dec.DisallowUnknownFields()
	var h struct {
		Handler string `json:"handler"`
		readmeHandler
	}
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("README JSON example: %v", err)
	}
	if h.Handler != "apic_auth" || h.Server == "" || time.Duration(h.RefreshBefore) != 30*time.Minute {
		t.Fatalf("README JSON example decoded to %+v", h)
	}
}

// readmeHandler lets Handler's JSON fields sit next to "handler".
type readmeHandler = Handler
