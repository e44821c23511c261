// Package apicauthproxy registers the apic_auth Caddy module and the
// toolkit's commands, so that xcaddy can build them from this module's
// root:
//
//	xcaddy build --with github.com/apic-tools/apic-auth-proxy
package apicauthproxy

import (
	_ "github.com/apic-tools/apic-auth-proxy/caddymodule"
	_ "github.com/apic-tools/apic-auth-proxy/toolkitcmd"
)
