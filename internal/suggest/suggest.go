// Package suggest finds the known name closest to a mistyped one, for
// "did you mean" hints in errors.
package suggest

// Closest returns the name among known that word most likely meant: the
// one at the smallest edit distance (insertions, deletions, substitutions
// and swaps of two neighbouring letters), if that distance is small for
// the word's length, one edit for up to four letters, two for longer
// words. Of names equally close, the first in known wins. It returns ""
// when none is close enough.
func Closest(word string, known []string) string {
	limit := 1
	if len(word) > 4 {
		limit = 2
	}
	best, bestDist := "", limit+1
	for _, k := range known {
		if d := distance(word, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// distance is the optimal string alignment distance between a and b, by
// bytes: the Levenshtein distance with swaps of neighbours as one edit.
func distance(a, b string) int {
	// Three rows of the dynamic-programming table: i-2, i-1 and i.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
