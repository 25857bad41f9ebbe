package tunnel

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
)

// The control loop of a connection (DESIGN.md §7), after serve's first
// RouteAdvertise: pace sends RouteAdvertise every AdvertiseInterval,
// Heartbeat every HeartbeatInterval and Reload's new routes with epoch + 1;
// readControl reads the gateway's messages.
//
// pace also sends a Heartbeat when nothing has arrived from the gateway for
// IdleHeartbeat (2 s by default): the gateway's answer to a packet of a
// connection it lost in a crash is a stateless reset, but only to a packet
// longer than the reset (RFC 9000 §10.3; quic-go answers packets over 42
// bytes), and a keep-alive PING packet is about 25 bytes. A Heartbeat
// packet is long enough, so the agent learns of a restarted gateway within
// about IdleHeartbeat of its restart instead of at the next RouteAdvertise.
// A live gateway PINGs a quiet agent more often than that (its keep-alive,
// 1.5 s by default), and the agent's ACK is all it needs to know the agent
// lives: so an idle agent sends no Heartbeat of its own while the gateway's
// PINGs arrive, and the liveness of an idle connection costs one PING and
// one ACK per keep-alive period instead of that plus a Heartbeat, its
// HeartbeatAck and an ACK. Against a gateway that PINGs less often, an idle
// agent sends a Heartbeat every IdleHeartbeat, as before.

// quietChecks is how many times per IdleHeartbeat pace reads the
// connection's packet counter: the Heartbeat goes out between IdleHeartbeat
// and IdleHeartbeat × (1 + 1/quietChecks) after the last packet received.
const quietChecks = 4

// pace sends the periodic RouteAdvertise and Heartbeat, and the routes of
// every new epoch (after a Reload) once the connection has advertised
// epoch sent.
func (a *Agent) pace(ctx context.Context, conn *quic.Conn, w *dataplane.ControlWriter, sent uint64, log hclog.Logger) {
	adv := time.NewTicker(a.cfg.AdvertiseInterval)
	defer adv.Stop()
	hb := time.NewTicker(a.cfg.HeartbeatInterval)
	defer hb.Stop()
	quiet := newQuietWatch(conn, a.cfg.IdleHeartbeat, time.Now())
	idle := time.NewTicker(quiet.step)
	defer idle.Stop()
	a.mu.Lock()
	changed := a.routesChanged
	a.mu.Unlock()
	for {
		var msg dataplane.ControlMessage
		select {
		case <-ctx.Done():
			return
		case <-adv.C:
			a.mu.Lock()
			msg = advertise(a.current, a.epoch)
			a.mu.Unlock()
		case <-changed:
			a.mu.Lock()
			changed = a.routesChanged
			epoch, current := a.epoch, a.current
			a.mu.Unlock()
			if epoch == sent || current == nil {
				continue // sent already, or the drain withdraws the routes itself
			}
			sent = epoch
			msg = advertise(current, epoch)
		case <-hb.C:
			msg = a.heartbeat()
		case now := <-idle.C:
			due := quiet.due(conn.ConnectionStats().PacketsReceived, now)
			if silent := now.Sub(quiet.lastPacket); a.cfg.GatewaySilence > 0 && silent >= a.cfg.GatewaySilence {
				log.Warn("heard nothing from the gateway; closing the connection and dialing again",
					"silent_for", silent.Round(time.Millisecond), "limit", a.cfg.GatewaySilence)
				a.suspects.add(conn.RemoteAddr(), now)
				transport.Close(conn, dataplane.CloseShutdown)
				return
			}
			if !due {
				continue
			}
			msg = a.heartbeat()
		}
		if err := w.Send(msg); err != nil {
			log.Warn("control stream write failed; closing the tunnel", "error", err)
			transport.Close(conn, dataplane.CloseShutdown)
			return
		}
	}
}

// quietWatch tells when the connection has received nothing for its limit,
// from the packet counter read every step. It is not safe for concurrent
// use.
type quietWatch struct {
	limit, step time.Duration
	packets     uint64    // the counter at the last change seen
	heardAt     time.Time // when the last change was seen (or a Heartbeat sent)
	lastPacket  time.Time // when the last change was seen
}

func newQuietWatch(conn *quic.Conn, limit time.Duration, now time.Time) *quietWatch {
	return &quietWatch{limit: limit, step: max(limit/quietChecks, time.Millisecond),
		packets: conn.ConnectionStats().PacketsReceived, heardAt: now, lastPacket: now}
}

// due reports whether a Heartbeat is due at now, given the connection's
// packets received so far; if so, the next one is due a limit later unless
// a packet arrives meanwhile.
func (q *quietWatch) due(packets uint64, now time.Time) bool {
	if packets != q.packets {
		q.packets, q.heardAt, q.lastPacket = packets, now, now
		return false
	}
	if now.Sub(q.heardAt) < q.limit {
		return false
	}
	q.heardAt = now
	return true
}

// heartbeat returns a Heartbeat for now.
func (a *Agent) heartbeat() *dataplane.Heartbeat {
	return &dataplane.Heartbeat{
		Version:           dataplane.ProtocolVersion,
		TimestampMs:       uint64(time.Now().UnixMilli()),
		ActiveStreamCount: uint32(a.handler.Active()),
	}
}

// reloader applies Reload's signals until ctx ends.
func (a *Agent) reloader(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reload:
			a.applyReload(a.log)
		}
	}
}

// applyReload re-reads the config; if the routes changed it moves to
// epoch + 1, which every live connection then advertises (pace).
func (a *Agent) applyReload(log hclog.Logger) {
	set, err := a.loadSettings()
	if err != nil {
		log.Warn("config reload failed; keeping the current routes", "error", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current == nil {
		return // not connected yet (the next connection reads the config), or draining: the routes stay withdrawn
	}
	if set.endpoint != a.current.endpoint {
		log.Info("GatewayEndpoint changed; it takes effect at the next reconnect", "new_endpoint", set.endpoint)
	}
	if sameRoutes(a.current, set) {
		log.Info("config reloaded; routes unchanged")
		return
	}
	a.current = set
	a.bumpEpochLocked()
	a.handler.SetRoutes(set.routes)
	log.Info("config reloaded; advertising new routes", "epoch", a.epoch,
		"subnets", len(set.routes.Subnets), "domains", len(set.domains))
	logDetection(log, set)
}

// readControl reads the gateway's control messages until the stream ends,
// handing CertRenewalResponses to answers.
func (a *Agent) readControl(ctx context.Context, conn *quic.Conn, ctrl *quic.Stream, answers *renewAnswers, log hclog.Logger) {
	r := dataplane.NewControlReader(ctrl)
	for ctx.Err() == nil {
		msg, err := r.ReadControl()
		if err == nil {
			err = dataplane.CheckVersion(msg.ProtocolVersion())
		}
		if err != nil {
			switch class := dataplane.ClassifyControlError(err); {
			case class == dataplane.ControlBadVersion: // from CheckVersion: msg was read
				log.Warn("ignoring control message", "tag", msg.Tag(), "error", err)
				continue
			case class.Skip():
				log.Warn("skipping control message", "error", err)
				continue
			}
			// The connection's end reaches the stream read before the
			// connection's context: it is not a stream failure.
			if ctx.Err() == nil && conn.Context().Err() == nil && !transport.ConnectionClosed(err) {
				log.Warn("control stream failed; closing the tunnel", "error", err)
				transport.Close(conn, dataplane.CloseShutdown)
			}
			return
		}
		switch m := msg.(type) {
		case *dataplane.HeartbeatAck:
			rtt := time.Since(time.UnixMilli(int64(m.TimestampMs)))
			log.Trace("heartbeat acknowledged", "rtt", rtt)
		case *dataplane.CertRenewalResponse:
			resp := *m // the reader reuses m
			answers.put(&resp)
		default:
			log.Warn("ignoring unexpected control message", "tag", msg.Tag())
		}
	}
}

// advertise builds the RouteAdvertise of set; a nil set (a draining agent)
// advertises no routes.
func advertise(set *settings, epoch uint64) *dataplane.RouteAdvertise {
	if set == nil {
		return &dataplane.RouteAdvertise{Version: dataplane.ProtocolVersion, Epoch: epoch}
	}
	return &dataplane.RouteAdvertise{
		Version: dataplane.ProtocolVersion,
		Epoch:   epoch,
		Subnets: set.routes.Subnets,
		Domains: set.domains,
	}
}

// logDetection logs the outcome of domain auto-detection for set.
func logDetection(log hclog.Logger, set *settings) {
	if set.detected != "" {
		log.Info("advertising the auto-detected domain", "domain", set.detected, "detected", set.detectNote)
	} else {
		log.Debug("no domain auto-detected", "reason", set.detectNote)
	}
}
