package caddymodule

import (
	"os"
	"regexp"
	"strings"
	"testing"
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
