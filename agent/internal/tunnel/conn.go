package tunnel

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
)

// One connection's life: the control stream's first advertisement, the
// goroutines that serve it, and what its end means for Run.

// serve runs one established connection of slot: control stream,
// sessions, until the connection or ctx ends. The primary connection
// renews the certificate; the others reconnect, one at a time, once it has.
func (a *Agent) serve(ctx context.Context, slot int, conn *quic.Conn, set *settings, log hclog.Logger) error {
	// With HAConnections 1 the agent behaves as before clusters existed.
	_, cluster := transport.ReplicaIDFromCert(conn.ConnectionState().TLS.PeerCertificates[0])
	cluster = cluster && a.cfg.HAConnections > 1
	ctrl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		transport.Close(conn, dataplane.CloseShutdown)
		return a.ended(fmt.Errorf("open control stream: %w", err), cluster, log)
	}
	w := dataplane.NewControlWriter(ctrl)
	a.mu.Lock()
	if a.epoch == 0 || a.current == nil || !sameRoutes(a.current, set) {
		a.bumpEpochLocked()
	}
	epoch := a.epoch
	a.current = set
	a.mu.Unlock()
	if err := w.Send(advertise(set, epoch)); err != nil {
		transport.Close(conn, dataplane.CloseShutdown)
		return a.ended(fmt.Errorf("route advertisement: %w", err), cluster, log)
	}
	n, replicas := a.fleet.connected(slot, set.cert.Raw)
	log.Info("tunnel up", "agent_id", set.agentID, "epoch", epoch,
		"subnets", len(set.routes.Subnets), "domains", len(set.domains),
		"cert_not_after", set.cert.NotAfter, "renew_at", renewTime(set.cert, a.cfg.RenewFraction))
	if a.cfg.HAConnections > 1 && n == a.cfg.HAConnections {
		log.Info("holding tunnel connections to distinct gateway replicas", "connections", n, "replicas", replicas)
	}
	logDetection(log, set)

	// The connection's goroutines outlive ctx during a drain: they stop with
	// cctx, when the connection ends.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	answers := newRenewAnswers()
	var wg sync.WaitGroup
	wg.Go(func() { a.readControl(cctx, conn, ctrl, answers, log) })
	wg.Go(func() { a.pace(cctx, conn, w, epoch, log) })
	wg.Go(func() { a.acceptSessions(cctx, conn) })
	wg.Go(func() { a.renewLoop(cctx, conn, slot, w, set, answers, log) })
	wg.Go(func() { a.rollOver(cctx, conn, slot, set) })

	select {
	case <-ctx.Done():
		var perm *PermanentError
		if errors.As(context.Cause(ctx), &perm) {
			// Another connection's permanent failure stops the agent: no
			// drain, the gateway refuses this agent.
			transport.Close(conn, dataplane.CloseShutdown)
			cancel()
			wg.Wait()
			return ctx.Err()
		}
		a.drain(conn, w, log)
		transport.Close(conn, dataplane.CloseShutdown)
		cancel()
		wg.Wait()
		log.Info("tunnel closed", "reason", dataplane.CloseShutdown)
		return ctx.Err()
	case <-conn.Context().Done():
	}
	cancel()
	wg.Wait()
	return a.ended(context.Cause(conn.Context()), cluster, log)
}

// rollOver closes slot's connection with "cert-renewed" when it is its turn
// to reconnect with the certificate the primary renewed (fleet.roll), unless
// the agent drains; it returns then, or when ctx ends.
func (a *Agent) rollOver(ctx context.Context, conn *quic.Conn, slot int, set *settings) {
	for {
		changed := a.fleet.changes()
		// Under mu, so that a drain starting now finds the connection
		// closed rather than closing it under the drain's feet.
		a.mu.Lock()
		if !a.draining && a.fleet.roll(slot, set.cert.Raw) {
			transport.Close(conn, dataplane.CloseCertRenewed)
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// ended turns the error that ended a connection (its close cause, or the
// error of a stream the close failed) into what serve returns:
// errCertRenewed after the agent's own renewal close, a *PermanentError
// when the gateway refused the agent's identity, an error wrapping
// errGatewayRestarted after a stateless reset, one wrapping errReplicaLeft
// after a "shutdown" close by a replica of a cluster (when cluster: the
// gateway names a replica and HAConnections > 1), else a retryable error.
func (a *Agent) ended(err error, cluster bool, log hclog.Logger) error {
	reason, remote, closed := transport.CloseReasonOf(err)
	switch {
	case closed && !remote && reason == dataplane.CloseCertRenewed:
		return errCertRenewed
	case closed && remote:
		if err := refused(reason, a.cfg.ConfigDir); err != nil {
			return err
		}
		if reason == dataplane.CloseConnectionSuperseded {
			log.Warn("another connection with this agent's identity replaced this one; if this repeats, a copy of this config directory runs elsewhere (enroll each agent separately)")
		}
		if cluster && reason == dataplane.CloseShutdown {
			return fmt.Errorf("%w: gateway closed the tunnel: %s", errReplicaLeft, reason)
		}
		return fmt.Errorf("gateway closed the tunnel: %s", reason)
	case errors.Is(err, &quic.StatelessResetError{}):
		return fmt.Errorf("%w: %w", errGatewayRestarted, err)
	}
	return err
}

// acceptSessions serves every stream the gateway opens until ctx ends or the
// connection does, and waits for those sessions.
func (a *Agent) acceptSessions(ctx context.Context, conn *quic.Conn) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Go(func() { a.handler.Serve(ctx, s) })
	}
}
