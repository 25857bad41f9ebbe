package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/outposthq/outpost/dataplane"
)

// Set at link time by make build-static (-ldflags "-X main.version=…
// -X main.commit=… -X main.buildDate=…"); when empty, the build info the
// go command records (module version, VCS revision and time) stands in.
var (
	version   string
	commit    string
	buildDate string
)

// buildVersion is what "outpost version" reports.
type buildVersion struct {
	Module    string `json:"module"`
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified"`
	BuildDate string `json:"build_date"`
	// DateIsCommit says that BuildDate is the commit's time, from the VCS,
	// since no build date was linked in.
	DateIsCommit bool   `json:"date_is_commit_time"`
	Go           string `json:"go"`
	Platform     string `json:"platform"`
	Protocol     uint16 `json:"protocol_version"`
	ALPN         string `json:"alpn"`
}

// currentVersion reads the linked-in values, then the build info.
func currentVersion() buildVersion {
	v := buildVersion{Version: version, Commit: commit, BuildDate: buildDate, Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, Protocol: dataplane.ProtocolVersion, ALPN: dataplane.ALPN}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Module = bi.Main.Path
		if v.Version == "" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if v.Commit == "" {
					v.Commit = s.Value
				}
			case "vcs.time":
				if v.BuildDate == "" {
					v.BuildDate, v.DateIsCommit = s.Value, true
				}
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Version == "" || v.Version == "(devel)" {
		v.Version = "devel"
	}
	return v
}

// printVersion writes the version, one field a line.
func printVersion(w io.Writer) {
	v := currentVersion()
	commit, date := orUnknown(v.Commit), orUnknown(v.BuildDate)
	if v.Modified {
		commit += " (with uncommitted changes)"
	}
	dateLabel := "built"
	if v.DateIsCommit {
		dateLabel = "committed"
	}
	fmt.Fprintf(w, "outpost %s\n  module     %s\n  commit     %s\n  %-10s %s\n  go         %s %s\n  protocol   %d (ALPN %s)\n",
		v.Version, orUnknown(v.Module), commit, dateLabel, date, v.Go, v.Platform, v.Protocol, v.ALPN)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr, "version [--json]")
	var asJSON bool
	fs.BoolVar(&asJSON, "json", false, "print the fields as a JSON object")
	if err := parse(fs, args); err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(currentVersion())
	}
	printVersion(stdout)
	return nil
}
