package main

import "github.com/outposthq/outpost/internal/shellword"

// shellQuote quotes s for a POSIX shell, so that a command line printed for
// the user works as printed whatever the paths in it hold.
var shellQuote = shellword.Quote

// shellJoin quotes each word and joins them with spaces.
var shellJoin = shellword.Join
