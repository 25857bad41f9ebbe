package relay

import (
	"context"
	"io"
	"testing"
)

const benchBytesPerOp = 64 << 20

// pushThrough writes benchBytesPerOp bytes to w from one goroutine while
// reading as many from r, once per benchmark iteration.
func pushThrough(b *testing.B, w io.Writer, r io.Reader) {
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	rbuf := make([]byte, 64<<10)
	b.SetBytes(benchBytesPerOp)
	b.ReportAllocs()
	for b.Loop() {
		errc := make(chan error, 1)
		go func() {
			for sent := 0; sent < benchBytesPerOp; sent += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		for got := 0; got < benchBytesPerOp; {
			n, err := r.Read(rbuf[:min(len(rbuf), benchBytesPerOp-got)])
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayTCP: TCP client → relay → TCP target, 64 MiB per op.
func BenchmarkRelayTCP(b *testing.B) {
	s := newSession(b, context.Background(), tcpToTCP, Options{})
	pushThrough(b, s.client, s.target)
}

// BenchmarkRelayQUIC: TCP client → relay → QUIC stream → reader, 64 MiB per
// op.
func BenchmarkRelayQUIC(b *testing.B) {
	s := newSession(b, context.Background(), tcpToQUIC, Options{})
	pushThrough(b, s.client, s.target)
}

// BenchmarkLoopbackTCP is the baseline for BenchmarkRelayTCP: one TCP
// connection, no relay.
func BenchmarkLoopbackTCP(b *testing.B) {
	c, d := tcpPair(b)
	defer c.Close()
	defer d.Close()
	pushThrough(b, c, d)
}

// BenchmarkLoopbackQUIC is the baseline for BenchmarkRelayQUIC: one QUIC
// stream, no relay.
func BenchmarkLoopbackQUIC(b *testing.B) {
	gw, agent := quicStreamPair(b)
	pushThrough(b, gw, agent)
}
