package load

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/outposthq/outpost/client"
	"github.com/outposthq/outpost/dataplane/relay"
)

// The cluster part's loads: sessions and transfers through a client
// library whose session token names the mux, so that one client reaches
// the echo, the sink and the source; the caller points one client at the
// replica that holds the agent and one at a replica that does not (the
// session is forwarded over the peer link), and sets up and tears down the
// replicas itself.

// Hop is where a cluster session enters, relative to the agent.
type Hop int

// The two entries.
const (
	HopLocal Hop = iota // at the replica that holds the agent's connection
	HopPeer             // at another replica, which forwards it over the peer link
	NumHops
)

var hopNames = [NumHops]string{
	"local (client at replica A, which holds the agent)",
	"through a peer hop (client at replica B, forwarded to A)",
}

// String is the entry's name in the report.
func (h Hop) String() string { return hopNames[h] }

// ClusterProcesses name the processes whose CPU the cluster transfers are
// charged, in the order of CPUTotals.Ticks.
var ClusterProcesses = []string{"replica A", "replica B", "agent", "client + target"}

// ClusterResult is what the cluster part measured. The zero value is a
// part that did not run, for no reason given.
type ClusterResult struct {
	// Skipped says why the part did not run ("" if it ran).
	Skipped string
	// RTT times a stream open + one echoed byte on an open raw quic-go
	// connection (two processes): one QUIC round trip on loopback, the
	// unit of the peer hop's setup target.
	RTT Stats
	// Setup times sessions on a client library's standing connection
	// (stream + echo + close), per entry; Gateway times sessions the
	// entry replica opens itself (DialAgent + echo + close).
	Setup, Gateway [NumHops]Stats
	// Bytes is what one transfer carries; MBps the measured transfers'
	// rates, by direction and entry; CPU the ticks the processes spent on
	// them, in the order of ClusterProcesses.
	Bytes int64
	MBps  [NumDirs][NumHops][]float64
	CPU   [NumDirs][NumHops]CPUTotals
	// Rehome is the kill -9 of a replica.
	Rehome Rehome
}

// Rehome is how soon agents with several connections (HA) are back at K
// after a replica holding some of them was killed.
type Rehome struct {
	Agents   int           // agents in the run
	K        int           // connections each keeps (--ha-connections)
	Replicas int           // replicas before the kill
	Victim   string        // the replica killed
	Affected int           // agents that had a connection to it
	Times    Stats         // per affected agent: from the kill until it holds K surviving replicas
	Missing  int           // affected agents not back at K within Limit
	Limit    time.Duration // how long the run waited
	// Poll is how often the survivors' API was read: the resolution of
	// Times.
	Poll time.Duration
	// IdleTimeout is the replicas' QUIC idle timeout: how long an agent
	// takes to notice that a replica died without a word.
	IdleTimeout time.Duration
}

// RehomeTimes summarizes when each affected agent was back: back maps an
// affected agent to the time after the kill it was first seen at K (absent:
// never). It returns the summary and how many never were.
func RehomeTimes(affected []string, back map[string]time.Duration) (Stats, int) {
	var times []time.Duration
	missing := 0
	for _, id := range affected {
		if d, ok := back[id]; ok {
			times = append(times, d)
		} else {
			missing++
		}
	}
	return Summarize(times), missing
}

// HeldBy counts how many of replicaIDs are in alive, ignoring repeats.
func HeldBy(replicaIDs []string, alive func(string) bool) int {
	var seen []string
	for _, id := range replicaIDs {
		if alive(id) && !slices.Contains(seen, id) {
			seen = append(seen, id)
		}
	}
	return len(seen)
}

// ClientSetup times warmup+n sessions on c's standing connection, one after
// the other, each a new stream carrying one byte to the mux's echo and back,
// then closed; the summary is of the last n.
func ClientSetup(ctx context.Context, c *client.Client, warmup, n int) (Stats, error) {
	return MeasureLatency(ctx, warmup, n, func(ctx context.Context) error { return clientEcho(ctx, c.Open) })
}

// QUICSetup times warmup+n streams on q, as the setup load's raw quic-go
// row does: one QUIC round trip each.
func QUICSetup(ctx context.Context, q *QUICClient, warmup, n int) (Stats, error) {
	return MeasureLatency(ctx, warmup, n, q.echoSession)
}

// ClientTransfer moves n bytes in direction d over one session of c (whose
// token names the mux) and returns how long it took, the stream's opening
// included.
func ClientTransfer(ctx context.Context, c *client.Client, d Dir, n int64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, transferTimeout(n))
	defer cancel()
	start := time.Now()
	s, err := c.Open(ctx)
	if err != nil {
		return 0, err
	}
	// The deadline, a signal: the stream is torn down and the transfer's
	// pending read or write returns.
	stop := context.AfterFunc(ctx, func() { s.Abort(relay.ErrorCodeCanceled) })
	defer stop()
	e := endpointDuplex{s}
	if d == DirUp {
		err = upload(e, []byte{modeSink}, n)
	} else {
		err = download(e, []byte{modeSource}, n)
	}
	if err != nil {
		s.Abort(relay.ErrorCodeCanceled)
		if cause := context.Cause(ctx); cause != nil {
			return 0, fmt.Errorf("%w (%v)", err, cause)
		}
		return 0, err
	}
	took := time.Since(start)
	return took, s.Close()
}

// endpointDuplex is a relay.Endpoint as the exchanges use it; its deadline
// is the caller's (ClientTransfer aborts the stream when its context ends).
type endpointDuplex struct{ relay.Endpoint }

func (endpointDuplex) SetDeadline(time.Time) error { return nil }
