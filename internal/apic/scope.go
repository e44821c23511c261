package apic

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// KnownScopes are the scope names of the platform API, sorted: those of
// IBM's Provider API document (its OAuth scheme and its operations'
// security requirements), those seen in client registrations, and those
// of older documents. A server of a newer release may have more.
var KnownScopes = []string{
	"api-analytics:manage", "api-analytics:view", "api-drafts:edit", "api-drafts:view",
	"api:manage", "api:stage", "app-analytics:view", "app:manage", "app:manage:all",
	"app:view", "app:view:all", "approval:manage", "approval:view", "child:create",
	"child:manage", "child:view", "cloud:manage", "cloud:view", "consumer-org:manage",
	"consumer-org:view", "my:manage", "my:view", "org:manage", "org:view",
	"product-drafts:edit", "product-drafts:view", "product:manage", "product:stage",
	"product:view", "project:manage", "project:view", "provider-org:manage",
	"provider-org:view", "published-product:view", "webhook:manage", "webhook:view",
}

// ScopeSignOut is the scope POST /api/me/sign-out needs: a token without
// it cannot end its session.
const ScopeSignOut = "my:manage"

// KnownScope reports whether name is one of KnownScopes.
func KnownScope(name string) bool {
	_, found := slices.BinarySearch(KnownScopes, name)
	return found
}

// CheckScope reports whether s can be one scope of a token request: a
// non-empty name of visible ASCII without spaces, quotes or backslashes
// (OAuth 2.0's scope-token), and not a placeholder, which is never
// resolved in a scope. The error names the value, not the setting.
func CheckScope(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("an empty scope name")
	case strings.ContainsAny(s, " \t\r\n"):
		return fmt.Errorf("%q holds a space: give each scope as a value of its own, such as my:view product:view", s)
	case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
		return fmt.Errorf("%q is a placeholder, which scope does not resolve: write the scope names (they are not secret)", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return fmt.Errorf("%q has a character no scope name holds (visible ASCII without quotes or backslashes)", s)
		}
	}
	return nil
}

// CanonicalScopes returns the set of scopes in list sorted, without
// duplicates: one set in any order is the same set. It is nil for an
// empty list.
func CanonicalScopes(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	out := slices.Clone(list)
	slices.Sort(out)
	return slices.Compact(out)
}

// TokenScopes reads the scopes of an API Connect access token (a JWT)
// without checking its signature: its scopes claim, a list, or the
// space-separated scope claim of RFC 9068's tokens. ok is false when the
// token says nothing of its scopes.
func TokenScopes(token string) (scopes []string, ok bool) {
	claims, err := jwtClaims(token)
	if err != nil {
		return nil, false
	}
	if raw, found := claims["scopes"]; found && json.Unmarshal(raw, &scopes) == nil {
		return scopes, true
	}
	var s string
	if raw, found := claims["scope"]; found && json.Unmarshal(raw, &s) == nil {
		return strings.Fields(s), true
	}
	return nil, false
}

// CompareScopes compares the scopes a token has with those asked for:
// extra are the token's scopes that were not asked for (the server
// ignored the narrowing), missing the scopes asked for that the token
// lacks. Both are sorted.
func CompareScopes(asked, granted []string) (extra, missing []string) {
	asked, granted = CanonicalScopes(asked), CanonicalScopes(granted)
	for _, s := range granted {
		if _, found := slices.BinarySearch(asked, s); !found {
			extra = append(extra, s)
		}
	}
	for _, s := range asked {
		if _, found := slices.BinarySearch(granted, s); !found {
			missing = append(missing, s)
		}
	}
	return extra, missing
}
