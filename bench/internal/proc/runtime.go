package proc

import (
	"errors"
	"os"
	"runtime"
	"runtime/pprof"

	"github.com/hashicorp/go-hclog"
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

// ReadRuntime reads this process's RuntimeStats.
func ReadRuntime() RuntimeStats {
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

// WriteHeapProfile collects garbage, so that the profile shows live memory
// only, and writes this process's heap profile to path. The error is the
// file's or the profile's.
func WriteHeapProfile(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// CPUProfiler CPU-profiles this process into one file at a time. The zero
// value is ready (its logger then discards); it is not safe for concurrent
// use.
type CPUProfiler struct {
	Log  hclog.Logger
	file *os.File // the profile being written, if any
}

// Start starts a CPU profile written to path. It fails if one is running
// already, or with the file's or runtime/pprof's error.
func (p *CPUProfiler) Start(path string) error {
	if p.file != nil {
		return errors.New("a CPU profile is already running")
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	p.file = f
	if p.Log != nil {
		p.Log.Info("CPU profile started", "path", path)
	}
	return nil
}

// Stop ends the running CPU profile, if any, and closes its file (the
// error is Close's).
func (p *CPUProfiler) Stop() error {
	if p.file == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.file.Close()
	p.file = nil
	return err
}
