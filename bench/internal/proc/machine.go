package proc

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

// Machine describes where a run happened; RESULTS.md starts with it. Each
// field is text to print as it is; what could not be read says "unknown".
type Machine struct {
	CPUs       int    // runtime.NumCPU
	CPUModel   string // the first "model name" of /proc/cpuinfo
	Kernel     string // /proc/sys/kernel/osrelease (uname -r)
	RmemMax    string // net.core.rmem_max, bytes
	WmemMax    string // net.core.wmem_max, bytes
	UDPOffload string // whether quic-go can use UDP GSO/GRO here
	FileLimit  string // the open-file limit the run got (see RaiseFileLimit)
	GoVersion  string // version, OS and architecture of this program
}

// DescribeMachine reads the machine's description. limit and limitErr are
// what RaiseFileLimit(want) returned.
func DescribeMachine(limit, want uint64, limitErr error) Machine {
	m := Machine{
		CPUs:      runtime.NumCPU(),
		CPUModel:  cpuModel(),
		Kernel:    ReadTrimmed("/proc/sys/kernel/osrelease"),
		RmemMax:   ReadTrimmed("/proc/sys/net/core/rmem_max"),
		WmemMax:   ReadTrimmed("/proc/sys/net/core/wmem_max"),
		GoVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		FileLimit: strconv.FormatUint(limit, 10),
	}
	switch {
	case errors.Is(limitErr, ErrBelowWant):
		m.FileLimit = fmt.Sprintf("%d: the hard limit (%d asked for; %v)", limit, want, limitErr)
	case limitErr != nil:
		m.FileLimit = "unchanged (" + limitErr.Error() + ")"
	}
	m.UDPOffload = describeOffload()
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

// FsyncProbe times n 4 KiB writes each followed by fsync, in a file of dir
// that it removes afterwards, and returns the n durations: the gateway's
// SQLite store commits with synchronous=FULL, so each commit waits for at
// least one such flush. The error is the first failed file operation's.
func FsyncProbe(dir string, n int) ([]time.Duration, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	samples := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := f.Write(buf); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		samples = append(samples, time.Since(start))
	}
	return samples, nil
}
