package proc

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"
)

// atClkTck is the auxiliary-vector key of the kernel's clock tick rate
// (AT_CLKTCK in <elf.h>): what sysconf(_SC_CLK_TCK) and `getconf CLK_TCK`
// return.
const atClkTck = 17

// defaultClockTicks is the USER_HZ value of every Linux architecture Go runs
// on; used only when the auxiliary vector cannot be read.
const defaultClockTicks = 100

// ClockTicks returns the unit of utime and stime in /proc/PID/stat, in ticks
// per second, read from this process's auxiliary vector. fromAuxv is false
// when it could not be read and the value is the usual 100 Hz.
func ClockTicks() (hz int64, fromAuxv bool) {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return defaultClockTicks, false
	}
	if v, ok := auxvValue(b, atClkTck, int(unsafe.Sizeof(uintptr(0)))); ok && v > 0 {
		return int64(v), true
	}
	return defaultClockTicks, false
}

// auxvValue finds key in an auxiliary vector: native-endian (key, value)
// pairs of word-sized integers ending with key 0 (AT_NULL).
func auxvValue(auxv []byte, key uint64, word int) (uint64, bool) {
	read := func(b []byte) uint64 {
		if word == 4 {
			return uint64(binary.NativeEndian.Uint32(b))
		}
		return binary.NativeEndian.Uint64(b)
	}
	for len(auxv) >= 2*word {
		k, v := read(auxv[:word]), read(auxv[word:2*word])
		if k == 0 {
			break
		}
		if k == key {
			return v, true
		}
		auxv = auxv[2*word:]
	}
	return 0, false
}

// CPUTicks returns the user plus system CPU time pid has used, in clock
// ticks (see ClockTicks).
func CPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	t, err := parseStatTicks(string(b))
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	return t, nil
}

// parseStatTicks returns utime+stime (fields 14 and 15) of a /proc/PID/stat
// line. Field 2, the command name in parentheses, may itself hold spaces and
// parentheses, so the fields are counted from the last ')'.
func parseStatTicks(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least %d", len(f), stime+1)
	}
	u, err := strconv.ParseInt(f[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: utime: %w", err)
	}
	s, err := strconv.ParseInt(f[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: stime: %w", err)
	}
	return u + s, nil
}

// RSSBytes returns the resident set size of pid (VmRSS) in bytes.
func RSSBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("rss of %d: %w", pid, err)
	}
	n, err := parseVmRSS(b)
	if err != nil {
		return 0, fmt.Errorf("rss of %d: %w", pid, err)
	}
	return n, nil
}

// parseVmRSS reads the "VmRSS:   1234 kB" line of /proc/PID/status.
func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: malformed VmRSS line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: VmRSS: %w", err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("status: no VmRSS line (kernel thread or zombie?)")
}

// ReadTrimmed returns a small text file's content without surrounding
// white space, or "unknown" when it cannot be read.
func ReadTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
