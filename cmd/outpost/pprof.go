package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/hashicorp/go-hclog"
)

// pprofFlag is --pprof-listen, which the long-running commands (gateway,
// agent run/up, connect) take.
type pprofFlag struct{ addr string }

func (p *pprofFlag) register(fs *flag.FlagSet) {
	fs.StringVar(&p.addr, "pprof-listen", "", "serve Go profiles (net/http/pprof) on this address at /debug/pprof/, e.g. 127.0.0.1:6060 (default off; never on the API port)")
}

// start serves the profiles on a listener and mux of their own until stop
// is called; with no address it does nothing. Importing net/http/pprof also
// registers its handlers on http.DefaultServeMux, which nothing in this
// program serves.
func (p *pprofFlag) start(log hclog.Logger) (stop func(), err error) {
	if p.addr == "" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if host, _, err := net.SplitHostPort(p.addr); err == nil {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			log.Warn("--pprof-listen is not a loopback address: anyone who reaches it can read this process's profiles", "address", p.addr)
		}
	}
	return serveHTTP(p.addr, "pprof", "/debug/pprof/", mux, log)
}

// serveHTTP serves h on addr, on a plain-HTTP server of its own, until the
// returned stop is called; stop closes the listener and waits for the
// server. what and path name it in the logs.
func serveHTTP(addr, what, path string, h http.Handler, log hclog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", what, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(what+" server failed", "error", err)
		}
	}()
	log.Info("serving "+what, "url", "http://"+ln.Addr().String()+path)
	return func() {
		srv.Close()
		<-done
	}, nil
}
