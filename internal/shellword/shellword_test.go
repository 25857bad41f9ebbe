package shellword

import "testing"

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "''",
		"plain/path-1.2:3":   "plain/path-1.2:3",
		"a b":                "'a b'",
		"it's":               `'it'\''s'`,
		"$(rm -rf /)":        "'$(rm -rf /)'",
		"ProxyCommand=x --y": "'ProxyCommand=x --y'",
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := Join("outpost", "connect", "--token-file", "my token"); got != "outpost connect --token-file 'my token'" {
		t.Errorf("Join: %s", got)
	}
}
