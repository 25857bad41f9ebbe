package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// Bad command lines fail before anything is done, with a usage error (exit
// 2) that names the mistake.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"session"}, "session needs a subcommand"},
		{[]string{"agent", "run", "--config-dir", dir, "--renew-fraction", "0"}, "--renew-fraction 0"},
		{[]string{"agent", "run", "--config-dir", dir, "--renew-fraction", "1"}, "--renew-fraction 1"},
		{[]string{"agent", "run", "--config-dir", dir, "--drain-timeout", "-1s"}, "--drain-timeout -1s"},
		{[]string{"agent", "run", "--config-dir", dir, "--max-sessions", "0"}, "--max-sessions 0"},
		{[]string{"agent", "run", "--config-dir", dir, "--ha-connections", "0"}, "--ha-connections 0"},
		{[]string{"agent", "up", "--token", "x", "--config-dir", dir, "--ha-connections", "17"}, "--ha-connections 17"},
		{[]string{"agent", "up", "--token", "x", "--config-dir", dir, "--renew-fraction", "2"}, "--renew-fraction 2"},
		{[]string{"agent", "enroll", "--config-dir", dir}, "--token (or --secret-file) is required"},
		{[]string{"agent", "enroll", "--token", "x", "--secret-file", "f", "--config-dir", dir}, "give --token or --secret-file, not both"},
		{[]string{"agent", "enroll", "--secret-file", "f", "--gateway", "https://gw:7171", "--config-dir", dir}, "--secret-file needs --gateway URL and --ca-pin HEX"},
		{[]string{"agent", "up", "--secret-file", "f", "--ca-pin", "ab", "--config-dir", dir}, "--secret-file needs --gateway URL and --ca-pin HEX"},
		{[]string{"agent", "enroll", "--token", "x", "--gateway", "https://gw:7171", "--config-dir", dir}, "--gateway and --ca-pin go with --secret-file"},
		{[]string{"connect", "--gateway", "https://localhost:1", "--token", "t"}, "give exactly one of --listen and --stdio"},
		{[]string{"connect", "--gateway", "https://localhost:1", "--listen", "127.0.0.1:0"}, "--gateway and --token-file (or --token -) are required"},
		{[]string{"connect", "--gateway", "https://localhost:1", "--token-file", "f", "--token", "t", "--stdio"}, "give --token or --token-file, not both"},
		{[]string{"session", "create", "--target", "h:1", "--force"}, "--force goes with --token-file"},
		{[]string{"gateway", "token", "create", "--force"}, "--force goes with --token-file"},
		{[]string{"connect", "--gateway", "https://localhost:1", "--token", "-", "--stdio"}, "--token - reads stdin"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, strings.NewReader(""), &out, &errOut)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("outpost %s: %v, want a usage error containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
