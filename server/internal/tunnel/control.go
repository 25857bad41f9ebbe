package tunnel

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/server/internal/registry"
)

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
	w := dataplane.NewControlWriter(stream)
	r := dataplane.NewControlReader(stream)
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
		if err := s.dispatch(ctx, conn, e, cert, w, msg, log); err != nil {
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
func (s *Server) dispatch(ctx context.Context, conn *quic.Conn, e *registry.Entry, cert *x509.Certificate, w *dataplane.ControlWriter, msg dataplane.ControlMessage, log hclog.Logger) error {
	switch m := msg.(type) {
	case *dataplane.RouteAdvertise:
		s.cfg.Metrics.ControlMessages.WithLabelValues("route_advertise").Inc()
		if s.reg.Advertise(e, m.Epoch, m.Subnets, m.Domains) {
			log.Info("routes advertised", "epoch", m.Epoch, "subnets", len(m.Subnets), "domains", len(m.Domains))
		} else {
			log.Trace("route advertisement refreshed or stale", "epoch", m.Epoch)
		}
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
