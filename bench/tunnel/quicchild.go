package main

import (
	"context"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/bench/internal/load"
	"github.com/outposthq/outpost/bench/internal/proc"
)

// quicHello is the raw QUIC child's only line: where its server listens
// and the certificate to trust.
type quicHello struct {
	Addr    string `json:"addr"`
	CertPEM string `json:"cert_pem"`
}

// serveQUIC is the life of the raw QUIC child (-mode=quic; see runChild):
// the baseline's server in a process of its own, as the agent is, so that
// the baseline pays the same cross-process costs as the tunnel. It serves
// until its stdin ends or it gets SIGTERM/SIGINT, and answers no request.
func serveQUIC(ctx context.Context, log hclog.Logger) error {
	srv, certPEM, err := load.StartQUICServer(log)
	if err != nil {
		return err
	}
	defer srv.Close()
	return proc.Server[request]{
		Hello:  func(context.Context) (any, error) { return quicHello{Addr: srv.Addr(), CertPEM: string(certPEM)}, nil },
		Answer: func(_ context.Context, req request) any { return unknownOp(req) },
	}.Serve(ctx)
}
