package proc

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// HeapSummary is the live heap of a heap profile by allocation site.
type HeapSummary struct {
	Total int64      // bytes in use
	Sites []HeapSite // largest first
}

// HeapSite is the memory in use allocated by one function (flat).
type HeapSite struct {
	Name  string
	Bytes int64
}

// SummarizeHeap reads a heap profile (see WriteHeapProfile) with
// `go tool pprof -top -sample_index=inuse_space` (bounded: 2 minutes). The
// error is the tool's.
func SummarizeHeap(ctx context.Context, file string) (HeapSummary, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-sample_index=inuse_space", "-nodecount=1000000", "-nodefraction=0", file)
	cmd.SysProcAttr = Attr()
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return HeapSummary{}, fmt.Errorf("go tool pprof -top %s: %w", file, err)
	}
	return parseHeapTop(string(out)), nil
}

// parseHeapTop reads the table of go tool pprof -top on a heap profile.
func parseHeapTop(out string) HeapSummary {
	var hs HeapSummary
	for _, r := range pprofTable(out) {
		n, err := parsePprofBytes(r.flat)
		if err != nil {
			continue
		}
		hs.Total += n
		if n > 0 {
			hs.Sites = append(hs.Sites, HeapSite{r.name, n})
		}
	}
	slices.SortStableFunc(hs.Sites, func(a, b HeapSite) int { return cmp.Compare(b.Bytes, a.Bytes) })
	return hs
}

// pprofRow is one line of a go tool pprof -top table, values as printed.
type pprofRow struct{ name, flat, cum string }

// pprofTable returns the rows of the table of go tool pprof -top: after
// the header "flat  flat%   sum%   cum   cum%", one function per line.
func pprofTable(out string) []pprofRow {
	var rows []pprofRow
	inTable := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if !inTable {
			inTable = len(f) == 5 && f[0] == "flat" && f[1] == "flat%"
			continue
		}
		if len(f) < 6 {
			continue
		}
		rows = append(rows, pprofRow{name: strings.Join(f[5:], " "), flat: f[0], cum: f[3]})
	}
	return rows
}

// parsePprofBytes reads pprof's sizes: "0", "512B", "16.50kB", "1.50MB",
// "2GB" (pprof's units are powers of 1024).
func parsePprofBytes(s string) (int64, error) {
	if s == "0" {
		return 0, nil
	}
	for _, u := range []struct {
		suffix string
		scale  float64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return int64(x * u.scale), nil
		}
	}
	return 0, fmt.Errorf("pprof size %q: unknown unit", s)
}
