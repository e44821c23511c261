// Command apic-auth-proxy is Caddy with the standard modules and the
// apic_auth handler built in.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/apic-tools/apic-auth-proxy/caddymodule"
)

func main() {
	caddycmd.Main()
}
