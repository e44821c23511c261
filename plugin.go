// Package apicauthproxy registers the apic_auth Caddy module, so that
// xcaddy can build it from this module's root:
//
//	xcaddy build --with github.com/apic-tools/apic-auth-proxy
package apicauthproxy

import _ "github.com/apic-tools/apic-auth-proxy/caddymodule"
