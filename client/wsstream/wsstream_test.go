package wsstream

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// Truncate fits a reason into a close frame (123 bytes) on a UTF-8
// boundary, and leaves one that fits alone.
func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int // length of the result
	}{
		{"", 0},
		{strings.Repeat("a", 123), 123},
		{strings.Repeat("a", 124), 123},
		{strings.Repeat("é", 100), 123}, // 2-byte runes: 120 bytes kept, then "..."
		{strings.Repeat("a", 119) + "€€", 122},
	} {
		got := Truncate(tc.in)
		if len(got) != tc.want || !utf8.ValidString(got) || len(got) > maxReason {
			t.Errorf("Truncate(%d bytes) = %d bytes %q, want %d valid bytes", len(tc.in), len(got), got, tc.want)
		}
		if len(tc.in) > maxReason && !strings.HasSuffix(got, "...") {
			t.Errorf("Truncate(%d bytes) = %q: the cut is not marked", len(tc.in), got)
		}
	}
}
