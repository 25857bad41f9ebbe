package proc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
)

// RuntimeStats is what the Go runtime says about a process's memory: it
// splits the RSS into heap, goroutine stacks and the rest. It travels as
// JSON from a child to the parent (sizes in bytes).
type RuntimeStats struct {
	Goroutines int    `json:"goroutines"`
	HeapInuse  uint64 `json:"heap_inuse"`
	HeapAlloc  uint64 `json:"heap_alloc"`
	StackInuse uint64 `json:"stack_inuse"`
	Sys        uint64 `json:"sys"`
	NumGC      uint32 `json:"num_gc"`
}

// ReadRuntime reads this process's RuntimeStats; with gc set, after two
// garbage collections, so that the heap figures count live memory only (a
// sync.Pool keeps what it holds across one).
func ReadRuntime(gc bool) RuntimeStats {
	if gc {
		runtime.GC()
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return RuntimeStats{
		Goroutines: runtime.NumGoroutine(),
		HeapInuse:  m.HeapInuse,
		HeapAlloc:  m.HeapAlloc,
		StackInuse: m.StackInuse,
		Sys:        m.Sys,
		NumGC:      m.NumGC,
	}
}

// PprofRuntime reads the RuntimeStats of a process that serves
// net/http/pprof at addr (`outpost … --pprof-listen addr`), after two
// garbage collections, as ReadRuntime(true): the heap profile's text form
// (each request collects first) ends with runtime.MemStats, the goroutine
// profile's starts with the count.
func PprofRuntime(ctx context.Context, addr string) (RuntimeStats, error) {
	var st RuntimeStats
	var heap string
	var err error
	for range 2 {
		if heap, err = httpGet(ctx, "http://"+addr+"/debug/pprof/heap?gc=1&debug=1"); err != nil {
			return st, err
		}
	}
	fields := map[string]*uint64{"HeapInuse": &st.HeapInuse, "HeapAlloc": &st.HeapAlloc, "Sys": &st.Sys}
	var numGC uint64
	fields["NumGC"] = &numGC
	found := 0
	sc := bufio.NewScanner(strings.NewReader(heap))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if !ok {
			continue
		}
		if name == "Stack" { // "# Stack = inuse / sys"
			name, value, _ = "StackInuse", strings.Fields(value)[0], ""
			fields[name] = &st.StackInuse
		}
		p, ok := fields[name]
		if !ok {
			continue
		}
		if *p, err = strconv.ParseUint(strings.Fields(value)[0], 10, 64); err != nil {
			return st, fmt.Errorf("pprof runtime %s: %s: %w", addr, name, err)
		}
		found++
	}
	if found < 5 {
		return st, fmt.Errorf("pprof runtime %s: the heap profile has no runtime.MemStats", addr)
	}
	st.NumGC = uint32(numGC)
	g, err := httpGet(ctx, "http://"+addr+"/debug/pprof/goroutine?debug=1")
	if err != nil {
		return st, err
	}
	first, _, _ := strings.Cut(g, "\n")
	n, ok := strings.CutPrefix(first, "goroutine profile: total ")
	if st.Goroutines, err = strconv.Atoi(strings.TrimSpace(n)); !ok || err != nil {
		return st, fmt.Errorf("pprof runtime %s: goroutine profile starts %q", addr, first)
	}
	return st, nil
}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}
