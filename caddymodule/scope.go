package caddymodule

import (
	"fmt"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/apic-tools/apic-auth-proxy/internal/apic"
	"github.com/apic-tools/apic-auth-proxy/internal/session"
	"github.com/apic-tools/apic-auth-proxy/internal/suggest"
)

// The scope option narrows the identity's token to some of the
// registration's scopes, such as a read-only proxy's. The scope is part of
// the identity: handlers that ask for other scopes never share a token, in
// this process (poolKey), in a fleet (the shared session's record) or in a
// token file (another identity's file is refused).

// resolveScope checks every name of scope and returns the set, sorted: a
// name with a space, a quote or a placeholder is an error. A name the
// platform is not known to have is not: a server of a newer release may
// have it (unknownScopes warns of it instead).
func resolveScope(scope []string) ([]string, error) {
	for _, s := range scope {
		if err := apic.CheckScope(s); err != nil {
			return nil, fmt.Errorf("scope: %v", err)
		}
	}
	return apic.CanonicalScopes(scope), nil
}

// unknownScopes describes the names of scope that the platform is not
// known to have, each with the known name it was likely meant to be: "my:veiw
// (did you mean my:view?)".
func unknownScopes(scope []string) []string {
	var out []string
	for _, s := range scope {
		if apic.KnownScope(s) {
			continue
		}
		if near := suggest.Closest(s, apic.KnownScopes); near != "" {
			s += " (did you mean " + near + "?)"
		}
		out = append(out, s)
	}
	return out
}

// warnUnknownScopes logs, when scope names a scope the platform is not
// known to have, what it is likely a misspelling of. It is a warning, not
// an error: a server of a newer release may have scopes this proxy does
// not know, and a scope the registration lacks is refused by the server
// with 400, which stops the logins and names the scope. A misspelling that
// the server would let pass leaves the token without the scope meant: the
// token's scopes are compared with those asked for when it arrives
// (checkTokenScopes).
func (h *Handler) warnUnknownScopes(scope []string) {
	if unknown := unknownScopes(scope); len(unknown) > 0 {
		h.logger.Warn("scope names scopes that API Connect is not known to have: a misspelt one is refused by the server, or leaves the token without it",
			zap.Strings("unknown", unknown))
	}
}

// checkSignOutScope decides whether the identity signs its session out at
// stop, given its scope: POST /api/me/sign-out needs my:manage, so a token
// without it cannot sign out. Asking for it anyway (sign_out_on_stop on)
// is an error; when it is on by default, the sign-out is left out, and
// why is returned to be logged once.
func (c *resolved) checkSignOutScope(explicit *bool) (why string, err error) {
	if len(c.scope) == 0 || slices.Contains(c.scope, apic.ScopeSignOut) {
		return "", nil
	}
	if explicit != nil && *explicit {
		return "", fmt.Errorf("sign_out_on_stop on and scope %s exclude each other: POST /api/me/sign-out needs the scope %s, which scope leaves out; add %s to scope, or set sign_out_on_stop off",
			strings.Join(c.scope, " "), apic.ScopeSignOut, apic.ScopeSignOut)
	}
	if !c.signOutOnStop {
		return "", nil // off anyway: nothing to tell
	}
	c.signOutOnStop = false
	return "the session is not signed out at stop: scope leaves out " + apic.ScopeSignOut + ", which POST /api/me/sign-out needs (the token expires on its own)", nil
}

// checkTokenScopes compares the scopes of a new token (its JWT's scopes
// claim) with those asked for, and warns when they differ: a server that
// ignored the narrowing gave a token that can do more than this proxy is
// meant to, and one that dropped a scope gives 403s for what needs it. A
// token that does not name its scopes is warned of too: what it can do
// cannot be seen here. Each difference is logged once, until it changes.
func (id *identity) checkTokenScopes(t *session.Token) {
	if len(id.scope) == 0 {
		return
	}
	granted, ok := apic.TokenScopes(t.AccessToken)
	extra, missing := apic.CompareScopes(id.scope, granted)
	note := fmt.Sprintf("%v %q %q", ok, extra, missing)
	if prev := id.scopeNote.Swap(&note); prev != nil && *prev == note || ok && extra == nil && missing == nil {
		return
	}
	fields := []zap.Field{zap.String("identity", id.name), zap.Strings("scope", id.scope)}
	switch {
	case !ok:
		id.log().Warn("the API Connect token does not name its scopes: whether the server narrowed it to scope cannot be checked", fields...)
	case len(extra) > 0:
		id.log().Warn("the API Connect token has scopes that scope did not ask for: the server ignored the narrowing, and the token can do more than this proxy is meant to",
			append(fields, zap.Strings("token_scopes", granted), zap.Strings("not_asked_for", extra), zap.Strings("missing", missing))...)
	default:
		id.log().Warn("the API Connect token lacks scopes that scope asked for: requests that need them get 403",
			append(fields, zap.Strings("token_scopes", granted), zap.Strings("missing", missing))...)
	}
}
