package load

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Targets are the TCP services the benchmark reaches, directly and through
// the tunnel: a sink, a source and an echo, each on its own loopback port,
// and a mux port whose first byte picks one of the three (modeSink,
// modeSource, modeEcho, as on the raw QUIC server), so that one session
// token, whose target is fixed, reaches all three. Close stops them and
// waits for every connection handler.
type Targets struct {
	sink, source, echo, mux *net.TCPListener
	deadline                time.Time // of every accepted connection
	log                     hclog.Logger
	wg                      sync.WaitGroup

	mu sync.Mutex
	// conns are the open connections, closed by Close; guarded by mu.
	conns map[*net.TCPConn]struct{}
	// closed is set by Close; guarded by mu.
	closed bool
}

// StartTargets listens on four loopback ports. Every connection is cut at
// deadline, so no handler outlives the benchmark. log gets what goes wrong
// (failed exchanges at debug level); nil discards. The error is a
// listener's.
func StartTargets(deadline time.Time, log hclog.Logger) (*Targets, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	t := &Targets{deadline: deadline, log: log, conns: make(map[*net.TCPConn]struct{})}
	var lns []*net.TCPListener
	for range 4 {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	t.sink, t.source, t.echo, t.mux = lns[0], lns[1], lns[2], lns[3]
	t.wg.Go(func() { t.serve(t.sink, "sink", serveSink) })
	t.wg.Go(func() { t.serve(t.source, "source", serveSource) })
	t.wg.Go(func() { t.serve(t.echo, "echo", serveEcho) })
	t.wg.Go(func() { t.serve(t.mux, "mux", serveMux) })
	return t, nil
}

// MuxAddr is the address of the mux, whose first byte picks the service.
func (t *Targets) MuxAddr() string { return t.mux.Addr().String() }

// EchoAddr is the address of the echo service.
func (t *Targets) EchoAddr() string { return t.echo.Addr().String() }

// Addresses of the other two services.
func (t *Targets) sinkAddr() string   { return t.sink.Addr().String() }
func (t *Targets) sourceAddr() string { return t.source.Addr().String() }

func (t *Targets) serve(ln *net.TCPListener, name string, handle func(duplex) error) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				t.log.Error("target accept", "target", name, "error", err)
			}
			return
		}
		if !t.track(c) {
			c.Close()
			return
		}
		t.wg.Go(func() {
			defer t.untrack(c)
			_ = c.SetDeadline(t.deadline)
			if err := handle(c); err != nil {
				// Sessions that the client ends early (idle sessions, a
				// failed run) land here; only the data phases care.
				t.log.Debug("target connection", "target", name, "error", err)
			}
		})
	}
}

func (t *Targets) track(c *net.TCPConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *Targets) untrack(c *net.TCPConn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	c.Close()
}

// Close stops accepting, cuts every open connection and waits for the
// handlers. It is idempotent.
func (t *Targets) Close() {
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.sink.Close()
	t.source.Close()
	t.echo.Close()
	t.mux.Close()
	t.wg.Wait()
}
