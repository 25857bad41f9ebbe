package main

import (
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
)

// quicHello is the raw QUIC child's only line: where its server listens
// and the certificate to trust.
type quicHello struct {
	Addr    string `json:"addr"`
	CertPEM string `json:"cert_pem"`
}

// runQUICChild is the whole life of the raw QUIC child (-mode=quic): the
// baseline's server in a process of its own, as the agent is, so that the
// baseline pays the same cross-process costs as the tunnel. It serves until
// its stdin ends or it gets SIGTERM/SIGINT, and returns the exit code.
func runQUICChild(logLevel string) int {
	log := hclog.New(&hclog.LoggerOptions{Name: "bench-quic", Level: hclog.LevelFromString(logLevel), Output: os.Stderr})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, certPEM, err := startQUICServer(log)
	if err != nil {
		log.Error("raw QUIC child failed", "error", err)
		return 1
	}
	defer srv.Close()
	if err := json.NewEncoder(os.Stdout).Encode(quicHello{Addr: srv.addr(), CertPEM: string(certPEM)}); err != nil {
		log.Error("write hello", "error", err)
		return 1
	}
	// It takes no requests: it serves until the parent closes stdin.
	lines, stopReading := stdinLines()
	defer stopReading()
	for {
		select {
		case <-ctx.Done():
			return 0
		case _, ok := <-lines:
			if !ok {
				return 0
			}
		}
	}
}
