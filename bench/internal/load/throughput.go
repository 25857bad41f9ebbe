package load

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/outposthq/outpost/bench/internal/proc"
)

// ThroughputResult is what the throughput load measured, by direction and
// path.
type ThroughputResult struct {
	// MBps holds each measured transfer's rate in 10^6 bytes per second.
	MBps [NumDirs][NumPaths][]float64
	// Seconds is the total time of a path's measured transfers.
	Seconds [NumDirs][NumPaths]float64
	// CPU is the CPU time a path's processes spent on its measured
	// transfers.
	CPU [NumDirs][NumPaths]CPUTotals
	// Profiles are the gateway's CPU profiles of the profiled paths (the
	// raw session and the single `outpost connect` session), both
	// directions merged; nil where none could be read.
	Profiles [NumPaths]*Profile
}

// CPUTotals are the CPU ticks of a path's processes (see Path.Processes)
// while it carried Bytes.
type CPUTotals struct {
	Ticks [4]int64 // clock ticks (proc.ClockTicks) per process
	Bytes int64
}

// Profile is the gateway's CPU profile of a stretch of load, with what that
// stretch carried.
type Profile struct {
	proc.CPUProfile
	Bytes    int64 // bytes carried while it was sampled (throughput)
	Sessions int   // sessions opened while it was sampled (setup)
}

// transferTimeout bounds one transfer of n bytes: 30 s plus 10 MB/s.
func transferTimeout(n int64) time.Duration {
	return 30*time.Second + time.Duration(n/10e6)*time.Second
}

// transfer moves n bytes over path p in direction d and returns how long
// it took, connection set-up included. The parallel path splits n over
// Settings.Parallel sessions and times them from the first start to the
// last end.
func (r *Rig) transfer(ctx context.Context, p Path, d Dir, n int64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(n))
	defer cancel()
	start := time.Now()
	if p != PathConnectParallel {
		if err := r.transferOne(ctx, p, d, n); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	k := r.Settings.Parallel
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() {
			if err := r.transferOne(ctx, PathConnect, d, n/int64(k)); err != nil {
				errs[i] = fmt.Errorf("session %d of %d: %w", i+1, k, err)
				cancel() // the others stop too
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// transferOne is one connection (or QUIC stream) carrying n bytes.
func (r *Rig) transferOne(ctx context.Context, p Path, d Dir, n int64) error {
	target := r.Targets.sinkAddr()
	mode := []byte{modeSink}
	if d == DirDown {
		target, mode = r.Targets.sourceAddr(), []byte{modeSource}
	}
	var (
		conn   duplex
		prefix []byte
		err    error
	)
	switch p {
	case PathTCP:
		conn, err = dialTCP(ctx, target)
	case PathQUICLocal:
		conn, err = r.QUICLocal.stream(ctx)
		prefix = mode
	case PathQUIC:
		conn, err = r.QUICRemote.stream(ctx)
		prefix = mode
	case PathRaw:
		conn, err = dialTCP(ctx, r.Entry)
		prefix = r.header(target)
	case PathConnect:
		conn, err = dialTCP(ctx, r.ConnectAddr)
		prefix = mode // the session token's target is the mux
	default:
		return fmt.Errorf("transferOne: path %d", p)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	// A signal, or a failed sibling, ends ctx before the deadline: cut the
	// transfer short.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if d == DirUp {
		err = upload(conn, prefix, n)
	} else {
		err = download(conn, prefix, n)
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return fmt.Errorf("%w (%v)", err, cause)
		}
		return err
	}
	return nil
}

// cpuPIDs are the processes whose CPU time a path's transfers are charged,
// in the order of Path.Processes.
func (r *Rig) cpuPIDs(p Path) []int {
	self := os.Getpid()
	switch p {
	case PathQUIC:
		return []int{self, r.QUICPID}
	case PathRaw:
		return []int{r.Gateway.PID(), r.AgentPID, self}
	case PathConnect, PathConnectParallel:
		return []int{r.Gateway.PID(), r.AgentPID, r.ConnectPID, self}
	}
	return []int{self}
}

// profiled says whether the gateway child is CPU-profiled during a path's
// measured transfers.
func profiled(p Path) bool { return p == PathRaw || p == PathConnect }

// throughputRun is one throughput load in progress.
type throughputRun struct {
	res     ThroughputResult
	profDir string
	// files are the gateway CPU profile files of each profiled path.
	files [NumPaths][]string
}

// Throughput runs the warm-up transfers, then Settings.Reps measured
// transfers of every path and direction, interleaved, reading CPU time
// around each, and then summarizes the gateway's CPU profiles. It fails at
// the first failed transfer or exited process; a profile that cannot be
// read is only logged.
func (r *Rig) Throughput(ctx context.Context) (ThroughputResult, error) {
	s := r.Settings
	r.log().Info("throughput", "bytes", s.Bytes, "reps", s.Reps, "parallel", s.Parallel)
	for d := range NumDirs {
		for p := range NumPaths {
			if _, err := r.transfer(ctx, p, d, s.WarmBytes); err != nil {
				return ThroughputResult{}, fmt.Errorf("warm-up %s %s: %w", p, d, err)
			}
		}
	}
	t := &throughputRun{profDir: filepath.Join(r.Dir, "profiles")}
	if err := os.MkdirAll(t.profDir, 0o755); err != nil {
		return ThroughputResult{}, err
	}
	for rep := range s.Reps {
		for d := range NumDirs {
			for p := range NumPaths {
				if err := r.measure(ctx, t, p, d, rep); err != nil {
					return ThroughputResult{}, err
				}
			}
		}
	}
	if err := r.check(); err != nil {
		return ThroughputResult{}, err
	}
	r.summarizeProfiles(ctx, t)
	return t.res, nil
}

// measure is one measured transfer.
func (r *Rig) measure(ctx context.Context, t *throughputRun, p Path, d Dir, rep int) error {
	n := r.Settings.Bytes
	pids := r.cpuPIDs(p)
	if profiled(p) {
		f := filepath.Join(t.profDir, fmt.Sprintf("%s-%d-%d.pprof", pathSlugs[p], d, rep))
		if err := r.Gateway.StartCPUProfile(ctx, f); err != nil {
			return err
		}
		t.files[p] = append(t.files[p], f)
	}
	before, err := TicksOf(pids)
	if err != nil {
		return err
	}
	took, err := r.transfer(ctx, p, d, n)
	if err != nil {
		return fmt.Errorf("%s %s, run %d: %w", p, d, rep+1, err)
	}
	after, err := TicksOf(pids)
	if err != nil {
		return err
	}
	if profiled(p) {
		if err := r.Gateway.StopCPUProfile(ctx); err != nil {
			return err
		}
	}
	rate := float64(n) / took.Seconds() / 1e6
	t.res.MBps[d][p] = append(t.res.MBps[d][p], rate)
	t.res.Seconds[d][p] += took.Seconds()
	c := &t.res.CPU[d][p]
	for i := range pids {
		c.Ticks[i] += after[i] - before[i]
	}
	c.Bytes += n
	r.log().Info("transfer", "path", p.String(), "dir", d.String(), "run", rep+1,
		"took", took.Round(time.Millisecond), "MB/s", fmt.Sprintf("%.0f", rate))
	return nil
}

// summarizeProfiles merges each profiled path's profiles (kept under
// KeepPrefix if set) and reads them. A failure here costs the "where the
// time goes" section, not the run: it is logged.
func (r *Rig) summarizeProfiles(ctx context.Context, t *throughputRun) {
	for p := range NumPaths {
		files := t.files[p]
		if len(files) == 0 {
			continue
		}
		out := r.profileFile("gateway-"+pathSlugs[p], pathSlugs[p])
		if err := proc.MergeProfiles(ctx, files, out); err != nil {
			r.log().Warn("gateway CPU profile", "path", p.String(), "error", err)
			continue
		}
		cp, err := proc.SummarizeProfile(ctx, out)
		if err != nil {
			r.log().Warn("gateway CPU profile", "path", p.String(), "error", err)
			continue
		}
		t.res.Profiles[p] = &Profile{CPUProfile: cp, Bytes: int64(len(files)) * r.Settings.Bytes}
		if r.KeepPrefix != "" {
			r.log().Info("gateway CPU profile kept; read it with go tool pprof -top "+out, "path", p.String())
		}
	}
}

// TicksOf reads the CPU ticks (proc.CPUTicks) of each pid, in order.
func TicksOf(pids []int) ([]int64, error) {
	out := make([]int64, len(pids))
	for i, pid := range pids {
		t, err := proc.CPUTicks(pid)
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}
