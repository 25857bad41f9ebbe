// Package shellword quotes words for a POSIX shell, so that a command line
// printed for a user (by the CLI or the web console) works as printed
// whatever the paths and values in it hold.
package shellword

import "strings"

// safe are the characters a word may hold and stay unquoted.
const safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:@%+=,-"

// Quote returns s quoted for a POSIX shell: as it is when it holds only safe
// characters, else in single quotes, where each single quote of s closes the
// quotes, stands escaped and reopens them. The empty word becomes a pair of
// single quotes.
func Quote(s string) string {
	if s != "" && strings.Trim(s, safe) == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Join quotes each word and joins them with spaces.
func Join(words ...string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = Quote(w)
	}
	return strings.Join(q, " ")
}
