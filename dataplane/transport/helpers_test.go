package transport

import (
	"crypto/tls"
	"runtime"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/testtls"
)

// testTLS returns a server config with a fresh self-signed ECDSA P-256
// certificate for 127.0.0.1 and a client config trusting it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	cert, roots := testtls.SelfSigned(t, "transport test")
	server = ServerTLS(&tls.Config{Certificates: []tls.Certificate{cert}})
	client = ClientTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	return server, client
}

// checkGoroutines records the goroutine count and, at cleanup, waits until it
// is back to that baseline. Register it first so that it runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for runtime.NumGoroutine() > base {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutines: %d, baseline %d\n%s", runtime.NumGoroutine(), base, buf[:n])
				return
			}
			<-tick.C
		}
	})
}
