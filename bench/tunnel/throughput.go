package main

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

// transferTimeout bounds one transfer of n bytes: 30 s plus 10 MB/s.
func transferTimeout(n int64) time.Duration {
	return 30*time.Second + time.Duration(n/10e6)*time.Second
}

// transfer moves n bytes over path p in direction d and returns how long
// it took, connection set-up included. The parallel path splits n over
// s.parallel sessions and times them from the first start to the last end.
func (b *bench) transfer(ctx context.Context, p pathID, d dirID, n int64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(n))
	defer cancel()
	start := time.Now()
	if p != pathConnectParallel {
		if err := b.transferOne(ctx, p, d, n); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	k := b.s.parallel
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() {
			if err := b.transferOne(ctx, pathConnect, d, n/int64(k)); err != nil {
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
func (b *bench) transferOne(ctx context.Context, p pathID, d dirID, n int64) error {
	target := b.tg.sinkAddr()
	mode := []byte{modeSink}
	if d == dirDown {
		target, mode = b.tg.sourceAddr(), []byte{modeSource}
	}
	var (
		conn   duplex
		prefix []byte
		err    error
	)
	switch p {
	case pathTCP:
		conn, err = dialTCP(ctx, target)
	case pathQUICLocal:
		conn, err = b.quicLocal.stream(ctx)
		prefix = mode
	case pathQUIC:
		conn, err = b.quicRemote.stream(ctx)
		prefix = mode
	case pathRaw:
		conn, err = dialTCP(ctx, b.gwHello.Entry)
		prefix = b.header(target)
	case pathConnect:
		conn, err = dialTCP(ctx, b.client.addr)
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
	if d == dirUp {
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
// in the order of cpuNames.
func (b *bench) cpuPIDs(p pathID) []int {
	self := os.Getpid()
	switch p {
	case pathQUIC:
		return []int{self, b.quicChild.PID()}
	case pathRaw:
		return []int{b.gw.PID(), b.agentPID(), self}
	case pathConnect, pathConnectParallel:
		return []int{b.gw.PID(), b.agentPID(), b.client.PID(), self}
	}
	return []int{self}
}

// profiled says whether the gateway child is CPU-profiled during a path's
// measured transfers.
func profiled(p pathID) bool { return p == pathRaw || p == pathConnect }

// throughput runs the warm-up transfers, then s.reps measured transfers of
// every path and direction, interleaved, reading CPU time around each, and
// then summarizes the gateway's CPU profiles.
func (b *bench) throughput(ctx context.Context) error {
	b.log.Info("throughput", "bytes", b.s.bytes, "reps", b.s.reps, "parallel", b.s.parallel)
	for d := range numDirs {
		for p := range numPaths {
			if _, err := b.transfer(ctx, p, d, b.s.warmBytes); err != nil {
				return fmt.Errorf("warm-up %s %s: %w", pathNames[p], dirNames[d], err)
			}
		}
	}
	profDir := filepath.Join(b.tmp, "profiles")
	if err := os.MkdirAll(profDir, 0o755); err != nil {
		return err
	}
	for rep := range b.s.reps {
		for d := range numDirs {
			for p := range numPaths {
				if err := b.measure(ctx, p, d, rep, profDir); err != nil {
					return err
				}
			}
		}
	}
	if err := b.checkChildren(); err != nil {
		return err
	}
	b.summarizeProfiles(ctx)
	return nil
}

// measure is one measured transfer.
func (b *bench) measure(ctx context.Context, p pathID, d dirID, rep int, profDir string) error {
	pids := b.cpuPIDs(p)
	if profiled(p) {
		f := filepath.Join(profDir, fmt.Sprintf("%s-%d-%d.pprof", pathSlugs[p], d, rep))
		if _, err := call(ctx, b.gw, request{Op: opProfileStart, Path: f}, 10*time.Second); err != nil {
			return err
		}
		b.profiles[p] = append(b.profiles[p], f)
	}
	before, err := ticksOf(pids)
	if err != nil {
		return err
	}
	took, err := b.transfer(ctx, p, d, b.s.bytes)
	if err != nil {
		return fmt.Errorf("%s %s, run %d: %w", pathNames[p], dirNames[d], rep+1, err)
	}
	after, err := ticksOf(pids)
	if err != nil {
		return err
	}
	if profiled(p) {
		if _, err := call(ctx, b.gw, request{Op: opProfileStop}, 10*time.Second); err != nil {
			return err
		}
	}
	rate := float64(b.s.bytes) / took.Seconds() / 1e6
	b.res.mbps[d][p] = append(b.res.mbps[d][p], rate)
	b.res.seconds[d][p] += took.Seconds()
	c := &b.res.cpu[d][p]
	for i := range pids {
		c.ticks[i] += after[i] - before[i]
	}
	c.bytes += b.s.bytes
	b.log.Info("transfer", "path", pathNames[p], "dir", dirNames[d], "run", rep+1,
		"took", took.Round(time.Millisecond), "MB/s", fmt.Sprintf("%.0f", rate))
	return nil
}

// summarizeProfiles merges each profiled path's profiles (kept under
// -cpuprofile's prefix if set) and reads them. A failure here costs the
// "where the time goes" section, not the run: it is logged.
func (b *bench) summarizeProfiles(ctx context.Context) {
	for p := range numPaths {
		files := b.profiles[p]
		if len(files) == 0 {
			continue
		}
		out := filepath.Join(b.tmp, "gateway-"+pathSlugs[p]+".pprof")
		if b.o.cpuprofile != "" {
			out = b.o.cpuprofile + "-" + pathSlugs[p] + ".pprof"
		}
		if err := proc.MergeProfiles(ctx, files, out); err != nil {
			b.log.Warn("gateway CPU profile", "path", pathNames[p], "error", err)
			continue
		}
		cp, err := proc.SummarizeProfile(ctx, out)
		if err != nil {
			b.log.Warn("gateway CPU profile", "path", pathNames[p], "error", err)
			continue
		}
		b.res.profiles[p] = &profileSummary{CPUProfile: cp, bytes: int64(len(files)) * b.s.bytes}
		if b.o.cpuprofile != "" {
			b.log.Info("gateway CPU profile kept; read it with go tool pprof -top "+out, "path", pathNames[p])
		}
	}
}

// ticksOf reads the CPU ticks of each pid.
func ticksOf(pids []int) ([]int64, error) {
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
