// Command apic-auth-proxy is Caddy with the standard modules, the Redis
// storage module (caddy.storage.redis, for shared sessions), the
// apic_auth handler, the toolkit's commands and, for apic-proxy --demo,
// the API Connect simulator built in. Its command line (cli.go) leads
// with those commands and drops Caddy's self-upgrade.
package main

import (
	"os"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/pberkel/caddy-storage-redis"

	_ "github.com/apic-tools/apic-auth-proxy/caddymodule"
	_ "github.com/apic-tools/apic-auth-proxy/statuscmd"
	_ "github.com/apic-tools/apic-auth-proxy/toolkitcmd"
)

func main() {
	os.Exit(execute(os.Args[1:]))
}
