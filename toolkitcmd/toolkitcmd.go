// Package toolkitcmd registers the toolkit's commands (apic-token,
// apic-register, apic-realms) with Caddy's command line. It is imported by
// cmd/apic-auth-proxy and by the module's root package, not by
// caddymodule: a build of the handler alone carries none of them.
package toolkitcmd

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/apic-tools/apic-auth-proxy/internal/toolkit"
)

func init() {
	for _, c := range toolkit.Commands() {
		caddycmd.RegisterCommand(c)
	}
}
