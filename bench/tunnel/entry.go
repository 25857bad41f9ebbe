package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/servertest"
)

// entry is the benchmark-only client entry: it accepts TCP on loopback,
// reads one line "AGENT_ID TARGET\n", opens a session with DialAgent and
// relays both ways with half-close. Bytes the client sent after the line are
// forwarded first. A session that cannot be opened is reset (TCP RST).
type entry struct {
	ln  *net.TCPListener
	g   *server.Gateway
	log hclog.Logger
	wg  sync.WaitGroup
}

// serve accepts until ctx ends, then waits for every connection's handler
// (the end of ctx aborts their relays).
func (e *entry) serve(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { e.ln.Close() })
	defer stop()
	defer e.wg.Wait()
	for {
		c, err := e.ln.AcceptTCP()
		if err != nil {
			if ctx.Err() == nil {
				e.log.Error("accept", "error", err)
			}
			return
		}
		e.wg.Go(func() { e.handle(ctx, c) })
	}
}

func (e *entry) handle(ctx context.Context, c *net.TCPConn) {
	tcp := relay.TCPConn(c)
	// Until Relay owns the connection, the end of ctx cuts it.
	stop := context.AfterFunc(ctx, func() { tcp.Abort(relay.ErrorCodeCanceled) })
	agentID, target, early, err := readHeader(c)
	if err != nil {
		stop()
		tcp.Abort(relay.ErrorCodeReset)
		e.log.Debug("bad header", "error", err)
		return
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	s, err := servertest.DialAgent(dctx, e.g, agentID, target)
	cancel()
	if err != nil {
		stop()
		tcp.Abort(relay.ErrorCodeReset)
		e.log.Debug("dial agent", "agent_id", agentID, "target", target, "error", err)
		return
	}
	ep, ok := s.(relay.Endpoint)
	if !ok {
		stop()
		s.Close()
		tcp.Abort(relay.ErrorCodeReset)
		e.log.Error("session is not a relay.Endpoint", "type", fmt.Sprintf("%T", s))
		return
	}
	if len(early) > 0 {
		if _, err := ep.Write(early); err != nil {
			stop()
			ep.Abort(relay.ErrorCodeReset)
			tcp.Abort(relay.ErrorCodeReset)
			return
		}
	}
	stop() // from here Relay watches ctx
	if _, err := relay.Relay(ctx, tcp, ep, relay.Options{}); err != nil {
		e.log.Debug("relay", "error", err)
	}
}

// readHeader reads "AGENT_ID TARGET\n" within headerTimeout and returns
// what the client sent after it.
func readHeader(c *net.TCPConn) (agentID, target string, early []byte, err error) {
	if err := c.SetReadDeadline(time.Now().Add(headerTimeout)); err != nil {
		return "", "", nil, err
	}
	br := bufio.NewReaderSize(c, maxEntryHeader)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return "", "", nil, fmt.Errorf("read header: %w", err)
	}
	f := strings.Fields(string(line))
	if len(f) != 2 {
		return "", "", nil, fmt.Errorf("header %q: want AGENT_ID TARGET", line)
	}
	early, _ = br.Peek(br.Buffered())
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return "", "", nil, err
	}
	return f[0], f[1], bytes.Clone(early), nil
}
