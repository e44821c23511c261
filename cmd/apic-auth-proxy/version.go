package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// versionCommand replaces Caddy's version command, which prints Caddy's
// version alone.
var versionCommand = caddycmd.Command{
	Name:  "version",
	Short: "Prints the version of apic-auth-proxy and of its Caddy",
	Long: `
Prints this program's version and the version of Caddy it is built on,
such as "apic-auth-proxy v0.3.0 (Caddy v2.11.9)". Built from a checkout
(go build ./cmd/apic-auth-proxy), the version is the commit, its time,
and "modified" when the work tree had changes.

build-info prints every module the binary is built from.
`,
	Func: func(caddycmd.Flags) (int, error) {
		fmt.Println(versionLine())
		return caddy.ExitCodeSuccess, nil
	},
}

// caddyModule is Caddy's module path, to find its version in the build.
const caddyModule = "github.com/caddyserver/caddy/v2"

// versionLine is the line the version command prints.
func versionLine() string {
	bi, _ := debug.ReadBuildInfo()
	return formatVersion(bi)
}

// formatVersion is "apic-auth-proxy <version> (Caddy <version>)" from bi,
// which may be nil. The program's version is the main module's; built
// from a checkout, where that is "(devel)", it is "(devel)" and the VCS
// revision, time and modified flag the go command stamped.
func formatVersion(bi *debug.BuildInfo) string {
	own, caddyVersion := "(devel)", ""
	if bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			own = v
		} else if vcs := vcsVersion(bi.Settings); vcs != "" {
			own += " " + vcs
		}
		for _, dep := range bi.Deps {
			if dep.Path != caddyModule {
				continue
			}
			caddyVersion = dep.Version
			if dep.Replace != nil {
				caddyVersion = dep.Replace.Version
			}
		}
	}
	if caddyVersion == "" || caddyVersion == "(devel)" {
		caddyVersion, _ = caddy.Version()
	}
	return fmt.Sprintf("%s %s (Caddy %s)", binaryName, own, caddyVersion)
}

// vcsVersion is "<revision> <time>", with " modified" when the work tree
// had changes, from the build's vcs.* settings, or "" without a revision.
func vcsVersion(settings []debug.BuildSetting) string {
	var rev, at string
	var modified bool
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return ""
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	parts := []string{rev}
	if at != "" {
		parts = append(parts, at)
	}
	if modified {
		parts = append(parts, "modified")
	}
	return strings.Join(parts, " ")
}
