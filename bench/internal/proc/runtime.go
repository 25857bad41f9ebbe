package proc

import "runtime"

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
