// Command apic-auth-proxy is Caddy with the standard modules, the
// apic_auth handler, the toolkit's commands and, for apic-proxy --demo,
// the API Connect simulator built in.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/apic-tools/apic-auth-proxy/caddymodule"
	_ "github.com/apic-tools/apic-auth-proxy/statuscmd"
	_ "github.com/apic-tools/apic-auth-proxy/toolkitcmd"
)

func main() {
	caddycmd.Main()
}
