package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machine describes where a run happened; RESULTS.md starts with it.
type machine struct {
	cpus       int
	cpuModel   string
	kernel     string
	rmemMax    string
	wmemMax    string
	udpOffload string
	fileLimit  string
	goVersion  string
}

func describeMachine(limit, want uint64, limitErr error) machine {
	m := machine{
		cpus:      runtime.NumCPU(),
		cpuModel:  cpuModel(),
		kernel:    readTrimmed("/proc/sys/kernel/osrelease"),
		rmemMax:   readTrimmed("/proc/sys/net/core/rmem_max"),
		wmemMax:   readTrimmed("/proc/sys/net/core/wmem_max"),
		goVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		fileLimit: strconv.FormatUint(limit, 10),
	}
	switch {
	case errors.Is(limitErr, errBelowWant):
		m.fileLimit = fmt.Sprintf("%d: the hard limit (%d asked for; %v)", limit, want, limitErr)
	case limitErr != nil:
		m.fileLimit = "unchanged (" + limitErr.Error() + ")"
	}
	m.udpOffload = describeOffload()
	return m
}

// describeOffload says whether quic-go can use UDP GSO/GRO here: the kernel
// must accept the socket options, and QUIC_GO_DISABLE_GSO must not be set.
func describeOffload() string {
	gso, gro, err := udpOffload()
	if err != nil {
		return "unknown: " + err.Error()
	}
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	s := fmt.Sprintf("kernel accepts UDP_SEGMENT (GSO): %s, UDP_GRO: %s", yes(gso), yes(gro))
	if v := os.Getenv("QUIC_GO_DISABLE_GSO"); v != "" {
		s += "; QUIC_GO_DISABLE_GSO=" + v
	} else if gso {
		s += "; QUIC_GO_DISABLE_GSO unset, so quic-go sends with GSO"
	}
	return s
}

// cpuModel is the first "model name" of /proc/cpuinfo, or "unknown".
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// fsyncProbe times n 4 KiB writes each followed by fsync, in a file of dir:
// the gateway's SQLite store commits with synchronous=FULL, so each commit
// waits for at least one such flush.
func fsyncProbe(dir string, n int) (latencyStats, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return latencyStats{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	samples := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := f.Write(buf); err != nil {
			return latencyStats{}, err
		}
		if err := f.Sync(); err != nil {
			return latencyStats{}, err
		}
		samples = append(samples, time.Since(start))
	}
	return summarize(samples), nil
}
