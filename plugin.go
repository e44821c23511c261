// Package apicauthproxy registers the apic_auth Caddy module and the
// toolkit's commands, so that xcaddy can build them from this module's
// root:
//
//	xcaddy build --with github.com/apic-tools/apic-auth-proxy
//
// # Layout
//
// One concern, one package:
//
//   - caddymodule: the apic_auth handler, its Caddyfile directive, the
//     admin endpoint (/apic_auth/status, /apic_auth/ready, /apic_auth/refresh), the metrics,
//     and the apic-proxy quick start. It carries no simulator and no
//     toolkit command. caddymodule/e2e holds the end-to-end tests, which
//     run the built binary and see it only through HTTP, the admin API,
//     /metrics and the log.
//   - toolkitcmd: registers the apic-token, apic-register and apic-realms
//     commands; internal/toolkit holds their logic.
//   - statuscmd: the status command, which reads /apic_auth/status and
//     /apic_auth/ready from a running proxy's admin API.
//   - internal/session: one token's life cycle: single flight, refresh
//     before expiry, back-off, cool-down and sign-out on close, and its
//     status (state, cause, token requests by grant and outcome), which
//     the admin endpoint and the metrics only format.
//   - internal/apic: the platform API client: one HTTP client
//     constructor, one request path, one error type, the token response
//     and JWT claims, the credentials check, secret scrubbing.
//   - internal/guard: who may use the proxy (Host, Origin, a required
//     header), where requests may go (paths), and the 401 re-login limit.
//   - internal/replay: the kept request body and the held 401 of a replay.
//   - internal/tokensink: the files kept with the current token
//     (token_file, apic_config_file): where they may be, their atomic
//     writes and their removal.
//   - internal/linkrewrite: rewrite_links, the streaming rewriter of API
//     Manager's URLs in response bodies and headers.
//   - internal/apicsim: the platform API simulator, for tests, benchmarks
//     and the demo; cmd/apicsim runs it alone and internal/apicsim/simtest
//     starts it in tests. internal/testclock is the settable clock of its
//     tests and of the platform API client's.
//   - cmd/apic-auth-proxy: the binary (Caddy with all of the above, and
//     apic-proxy --demo, which starts the simulator).
//   - bench: the benchmarks behind BENCHMARKS.md, one program run with
//     go run ./bench; not part of the binary.
package apicauthproxy

import (
	_ "github.com/apic-tools/apic-auth-proxy/caddymodule"
	_ "github.com/apic-tools/apic-auth-proxy/statuscmd"
	_ "github.com/apic-tools/apic-auth-proxy/toolkitcmd"
)
