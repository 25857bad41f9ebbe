package tunnel

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/server/internal/registry"
)

// refuseStreams resets every further stream the agent opens on conn, until
// stop is called (which waits for it) or conn ends.
func (s *Server) refuseStreams(conn *quic.Conn, log hclog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(conn.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			st, err := conn.AcceptStream(ctx)
			if err != nil {
				return
			}
			log.Debug("reset a stream the agent opened besides its control stream", "stream", st.StreamID())
			st.CancelRead(relay.ErrorCodeReset)
			st.CancelWrite(relay.ErrorCodeReset)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// controlLoop waits for the agent's control stream and serves it until the
// connection ends, returning the connection's close error.
func (s *Server) controlLoop(ctx context.Context, conn *quic.Conn, e *registry.Entry, cert *x509.Certificate, log hclog.Logger) error {
	actx, cancel := context.WithTimeout(ctx, controlStreamTimeout)
	stream, err := conn.AcceptStream(actx)
	cancel()
	if err != nil {
		if conn.Context().Err() == nil {
			_ = transport.Close(conn, dataplane.CloseProtocolError)
			return fmt.Errorf("no control stream within %v", controlStreamTimeout)
		}
		return context.Cause(conn.Context())
	}
	if s.cfg.Peers != nil {
		// The listener gives every connection a peer's stream credit:
		// an agent opens no stream but its control stream.
		stop := s.refuseStreams(conn, log)
		defer stop()
	}
	w := dataplane.NewControlWriter(stream)
	r := dataplane.NewControlReader(stream)
	var adv advertState
	for {
		msg, err := r.ReadControl()
		if err == nil {
			s.reg.Touch(e)
			err = dataplane.CheckVersion(msg.ProtocolVersion())
		}
		if err != nil {
			switch dataplane.ClassifyControlError(err) {
			case dataplane.ControlUnknownTag:
				s.cfg.Metrics.ControlMessages.WithLabelValues("unknown").Inc()
				log.Warn("skipping control message with an unknown tag", "error", err)
				continue
			case dataplane.ControlMalformed:
				s.cfg.Metrics.ControlMessages.WithLabelValues("invalid").Inc()
				log.Warn("skipping malformed control message", "error", err)
				continue
			case dataplane.ControlBadVersion: // from CheckVersion: msg was read
				s.cfg.Metrics.ControlMessages.WithLabelValues("bad_version").Inc()
				log.Warn("ignoring control message", "tag", msg.Tag(), "error", err)
				continue
			}
			// The connection's end reaches the stream read before the
			// connection's context: either way it is not a stream failure.
			if conn.Context().Err() != nil {
				return context.Cause(conn.Context())
			}
			if transport.ConnectionClosed(err) {
				return err
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("agent closed its control stream")
			}
			log.Warn("control stream failed; closing the connection", "error", err)
			_ = transport.Close(conn, dataplane.CloseProtocolError)
			return err
		}
		if err := s.dispatch(ctx, conn, e, cert, w, &adv, msg, log); err != nil {
			if conn.Context().Err() != nil {
				return context.Cause(conn.Context())
			}
			log.Warn("control stream write failed; closing the connection", "error", err)
			_ = transport.Close(conn, dataplane.CloseProtocolError)
			return err
		}
	}
}

// dispatch handles one well-formed control message of the current version.
func (s *Server) dispatch(ctx context.Context, conn *quic.Conn, e *registry.Entry, cert *x509.Certificate, w *dataplane.ControlWriter, adv *advertState, msg dataplane.ControlMessage, log hclog.Logger) error {
	switch m := msg.(type) {
	case *dataplane.RouteAdvertise:
		s.cfg.Metrics.ControlMessages.WithLabelValues("route_advertise").Inc()
		s.advertise(ctx, e, adv, m, log)
	case *dataplane.Heartbeat:
		s.cfg.Metrics.ControlMessages.WithLabelValues("heartbeat").Inc()
		s.reg.ReportSessions(e, m.ActiveStreamCount)
		s.cfg.Metrics.AgentRTT.WithLabelValues(e.AgentID).Set(conn.ConnectionStats().SmoothedRTT.Seconds())
		return w.Send(&dataplane.HeartbeatAck{Version: dataplane.ProtocolVersion, TimestampMs: m.TimestampMs})
	case *dataplane.CertRenewalRequest:
		s.cfg.Metrics.ControlMessages.WithLabelValues("cert_renewal_request").Inc()
		resp := &dataplane.CertRenewalResponse{Version: dataplane.ProtocolVersion}
		if s.cfg.Renew == nil {
			resp.Result, resp.Reason = dataplane.ResultError, "certificate renewal is not enabled on this gateway"
		} else if certPEM, caPEM, err := s.cfg.Renew(ctx, e.AgentID, cert, m.CSRPEM); err != nil {
			log.Warn("certificate renewal refused", "error", err)
			resp.Result, resp.Reason = dataplane.ResultError, err.Error()
		} else {
			log.Info("agent certificate renewed")
			resp.ClientCertPEM, resp.CACertPEM = certPEM, caPEM
		}
		return w.Send(resp)
	default:
		s.cfg.Metrics.ControlMessages.WithLabelValues("unexpected").Inc()
		log.Warn("ignoring a gateway-to-agent message sent by the agent", "tag", msg.Tag())
	}
	return nil
}

// advertState is what one connection's control loop remembers about the
// advertisements it refused, to log each refusal once.
type advertState struct {
	// capEpoch is the epoch of the last advertisement refused for having
	// too many routes; capped reports that there was one.
	capEpoch uint64
	capped   bool
}

// advertise applies a RouteAdvertise within the per-agent limits: too many
// routes refuse it whole, too many route changes this minute ignore it; in
// both cases the previous routes stay. What the agent is not approved to
// serve is refused route by route, logged and counted once per change.
func (s *Server) advertise(ctx context.Context, e *registry.Entry, adv *advertState, m *dataplane.RouteAdvertise, log hclog.Logger) {
	if n := len(m.Subnets) + len(m.Domains); n > s.cfg.MaxRoutesPerAgent {
		s.cfg.Metrics.RouteAdvertisementsRefused.WithLabelValues("too_many_routes").Inc()
		if !adv.capped || adv.capEpoch != m.Epoch {
			adv.capped, adv.capEpoch = true, m.Epoch
			log.Warn("route advertisement refused: too many routes; the previous routes stay",
				"epoch", m.Epoch, "routes", n, "max_routes_per_agent", s.cfg.MaxRoutesPerAgent)
		}
		return
	}
	if s.reg.WouldReplace(e, m.Epoch) {
		if ok, first := s.changes.allow(e.AgentID); !ok {
			s.cfg.Metrics.RouteAdvertisementsRefused.WithLabelValues("rate_limited").Inc()
			if first {
				log.Warn("route advertisement ignored: too many route changes this minute; the previous routes stay until the minute has passed",
					"epoch", m.Epoch, "max_route_changes_per_minute", s.cfg.MaxRouteChangesPerMinute)
			}
			return
		}
	}
	res := s.reg.Apply(e, m.Epoch, m.Subnets, m.Domains)
	if !res.Replaced {
		log.Trace("route advertisement refreshed or stale", "epoch", m.Epoch)
		return
	}
	log.Info("routes advertised", "epoch", m.Epoch, "subnets", len(res.Accepted.Subnets), "domains", len(res.Accepted.Domains))
	if n := len(res.Rejected.Subnets) + len(res.Rejected.Domains); n > 0 {
		s.cfg.Metrics.RoutesRejected.Add(float64(n))
		log.Warn("advertised routes refused: outside the agent's approved routes", "epoch", m.Epoch,
			"subnets", subnetList(res.Rejected.Subnets), "domains", domainList(res.Rejected.Domains))
	}
	if res.Draining {
		log.Info("agent withdrew its routes: draining")
		return
	}
	if s.cfg.Routes == nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	raw := registry.Routes{Epoch: m.Epoch, Subnets: m.Subnets, Domains: m.Domains}
	if err := s.cfg.Routes.Advertised(sctx, e.AgentID, raw); err != nil {
		log.Warn("could not store the advertised routes; a restarted gateway will not know them", "error", err)
	}
}

// subnetList and domainList render routes for a log line.
func subnetList(ps []netip.Prefix) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

func domainList(ds []dataplane.DomainRoute) string {
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(d.Name)
	}
	return b.String()
}
