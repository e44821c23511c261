package suggest

import "testing"

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"abc", "", 3},
		{"password", "password", 0},
		{"pasword", "password", 1},   // deletion
		{"passwordd", "password", 1}, // insertion
		{"passward", "password", 1},  // substitution
		{"passowrd", "password", 1},  // swap of neighbours
		{"psasowrd", "password", 2},  // two swaps
		{"kitten", "sitting", 3},
		{"ca", "abc", 3}, // optimal string alignment, not Damerau-Levenshtein (2)
	} {
		if got := distance(tc.a, tc.b); got != tc.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := distance(tc.b, tc.a); got != tc.want {
			t.Errorf("distance(%q, %q) = %d, want %d (symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestClosest(t *testing.T) {
	known := []string{"name", "server", "realm", "username", "password", "api_key", "client_id", "client_secret", "timeout", "paths"}
	for _, tc := range []struct{ word, want string }{
		{"pasword", "password"},
		{"passowrd", "password"},
		{"usernme", "username"},
		{"client-id", "client_id"},
		{"clientid", "client_id"},
		{"client_secrets", "client_secret"},
		{"tiemout", "timeout"},
		{"apikey", "api_key"},
		{"servr", "server"},
		{"nam", "name"},
		{"path", "paths"},
		// Too far for its length: no guess.
		{"nm", ""},
		{"user", ""},
		{"secret", ""},
		{"tls_ca_certs", ""},
		{"", ""},
		{"xyzzy", ""},
	} {
		if got := Closest(tc.word, known); got != tc.want {
			t.Errorf("Closest(%q) = %q, want %q", tc.word, got, tc.want)
		}
	}
	// Ties go to the first.
	if got := Closest("ab", []string{"ax", "xb"}); got != "ax" {
		t.Errorf("Closest tie = %q, want the first, ax", got)
	}
	if got := Closest("x", nil); got != "" {
		t.Errorf("Closest with no names = %q", got)
	}
}
