package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/outposthq/outpost/bench/internal/proc"
)

// connectProc is `outpost connect --listen 127.0.0.1:0` running as a child:
// the real client of the gateway's WebSocket entry. Each TCP connection to
// its address becomes a new session (its token is reusable).
type connectProc struct {
	*proc.Child
	addr     string        // the local TCP address it serves
	copyDone chan struct{} // closed when its stderr has been copied to ours
}

// listenPrefix starts the line `outpost connect --listen` prints on stderr
// once it accepts connections: "listening on 127.0.0.1:NNN; ...".
const listenPrefix = "listening on "

// parseListening returns the address of a "listening on ADDR; ..." line.
func parseListening(line string) (string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), listenPrefix)
	if !ok {
		return "", false
	}
	addr, _, _ := strings.Cut(rest, ";")
	addr = strings.TrimSpace(addr)
	if i := strings.IndexAny(addr, " \t"); i >= 0 {
		addr = addr[:i]
	}
	return addr, addr != ""
}

// startConnect starts the client with the token on its stdin (so that it is
// not on a command line), serving its Go profiles on pprofAddr, and waits up to 30 s for its listening line. Its
// other stderr lines are copied to ours.
func startConnect(ctx context.Context, bin, gatewayURL, token, caFile, logLevel, pprofAddr string) (_ *connectProc, err error) {
	cmd := exec.Command(bin, "connect", "--gateway", gatewayURL, "--token", "-", "--ca-file", caFile,
		"--listen", "127.0.0.1:0", "--log-level", logLevel, "--pprof-listen", pprofAddr)
	cmd.Stdin = strings.NewReader(token + "\n")
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = w
	c, err := proc.Start("connect", cmd)
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	p := &connectProc{Child: c, copyDone: make(chan struct{})}
	addrs := make(chan string, 1)
	go func() { // ends at EOF, which the child's exit brings; stop waits for it
		defer close(p.copyDone)
		defer r.Close()
		br := bufio.NewReader(r)
		found := false
		for {
			line, err := br.ReadString('\n')
			if !found {
				if addr, ok := parseListening(line); ok {
					found = true
					addrs <- addr
					line = ""
				}
			}
			if line != "" {
				fmt.Fprint(os.Stderr, "connect: "+line)
			}
			if err != nil {
				if err != io.EOF {
					fmt.Fprintf(os.Stderr, "connect: reading its stderr: %v\n", err)
				}
				return
			}
		}
	}()
	defer func() {
		if err != nil {
			p.Stop()
		}
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case p.addr = <-addrs:
		return p, nil
	case <-c.Done():
		_, err := c.Exited()
		return nil, fmt.Errorf("outpost connect exited before listening: %v", err)
	case <-t.C:
		return nil, fmt.Errorf("outpost connect printed no %q line within 30 s", listenPrefix)
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// Stop ends the client and waits for it and for the copy of its stderr.
func (p *connectProc) Stop() {
	p.Child.Stop(5 * time.Second)
	<-p.copyDone
}
