package load

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// The three services a benchmark target offers. Every exchange is one
// connection (or QUIC stream):
//
//	sink:   client sends N bytes and half-closes; the target answers with N
//	        as a big-endian uint64 and half-closes.
//	source: client sends N as a big-endian uint64 (and may half-close); the
//	        target sends N bytes and half-closes.
//	echo:   the target sends back everything it reads until EOF.
const (
	// chunkSize is the read and write size of sinks, sources and clients.
	chunkSize = 256 << 10
	// maxSourceBytes bounds what a source agrees to send.
	maxSourceBytes = 64 << 30
	// echoBufSize is an echo's buffer: sessions carry one byte.
	echoBufSize = 512
)

// duplex is one connection or QUIC stream as the exchanges use it.
// CloseWrite sends EOF and keeps reading; Close ends what is left
// gracefully.
type duplex interface {
	io.ReadWriter
	CloseWrite() error
	SetDeadline(t time.Time) error
	Close() error
}

var _ duplex = (*net.TCPConn)(nil)

// streamDuplex adapts a QUIC stream: CloseWrite is the stream's Close (FIN),
// Close stops receiving and closes the send side if still open.
type streamDuplex struct{ s *quic.Stream }

func (d streamDuplex) Read(p []byte) (int, error)    { return d.s.Read(p) }
func (d streamDuplex) Write(p []byte) (int, error)   { return d.s.Write(p) }
func (d streamDuplex) CloseWrite() error             { return d.s.Close() }
func (d streamDuplex) SetDeadline(t time.Time) error { return d.s.SetDeadline(t) }
func (d streamDuplex) Close() error {
	d.s.CancelRead(0)
	return d.s.Close()
}

// writeN writes n bytes from buf, chunk by chunk.
func writeN(w io.Writer, n int64, buf []byte) error {
	for n > 0 {
		k, err := w.Write(buf[:min(int64(len(buf)), n)])
		n -= int64(k)
		if err != nil {
			return err
		}
	}
	return nil
}

// drain reads r to EOF and returns how many bytes it read.
func drain(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// serveSink is the target side of a sink exchange.
func serveSink(d duplex) error {
	n, err := drain(d, make([]byte, chunkSize))
	if err != nil {
		return fmt.Errorf("sink: read: %w", err)
	}
	if _, err := d.Write(binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
		return fmt.Errorf("sink: answer: %w", err)
	}
	return d.CloseWrite()
}

// serveSource is the target side of a source exchange.
func serveSource(d duplex) error {
	var hdr [8]byte
	if _, err := io.ReadFull(d, hdr[:]); err != nil {
		return fmt.Errorf("source: read length: %w", err)
	}
	n := binary.BigEndian.Uint64(hdr[:])
	if n > maxSourceBytes {
		return fmt.Errorf("source: %d bytes asked, limit %d", n, maxSourceBytes)
	}
	buf := make([]byte, chunkSize)
	if err := writeN(d, int64(n), buf); err != nil {
		return fmt.Errorf("source: write: %w", err)
	}
	if err := d.CloseWrite(); err != nil {
		return fmt.Errorf("source: close write: %w", err)
	}
	_, err := drain(d, buf[:echoBufSize])
	return err
}

// serveEcho is the target side of an echo exchange.
func serveEcho(d duplex) error {
	buf := make([]byte, echoBufSize)
	for {
		k, err := d.Read(buf)
		if k > 0 {
			if _, werr := d.Write(buf[:k]); werr != nil {
				return fmt.Errorf("echo: write: %w", werr)
			}
		}
		if errors.Is(err, io.EOF) {
			return d.CloseWrite()
		}
		if err != nil {
			return fmt.Errorf("echo: read: %w", err)
		}
	}
}

// serveMux reads the first byte and serves the exchange it names
// (modeSink, modeSource or modeEcho).
func serveMux(d duplex) error {
	var mode [1]byte
	if _, err := io.ReadFull(d, mode[:]); err != nil {
		return fmt.Errorf("read mode: %w", err)
	}
	switch mode[0] {
	case modeSink:
		return serveSink(d)
	case modeSource:
		return serveSource(d)
	case modeEcho:
		return serveEcho(d)
	}
	return fmt.Errorf("unknown mode %q", mode[0])
}

// upload is the client side of a sink exchange: it writes prefix (the
// bytes a path needs before the payload: an entry header, a mode byte),
// then n bytes, half-closes and checks the sink's count.
func upload(d duplex, prefix []byte, n int64) error {
	if len(prefix) > 0 {
		if _, err := d.Write(prefix); err != nil {
			return fmt.Errorf("upload: write header: %w", err)
		}
	}
	if err := writeN(d, n, make([]byte, chunkSize)); err != nil {
		return fmt.Errorf("upload: write: %w", err)
	}
	if err := d.CloseWrite(); err != nil {
		return fmt.Errorf("upload: close write: %w", err)
	}
	var ack [8]byte
	if _, err := io.ReadFull(d, ack[:]); err != nil {
		return fmt.Errorf("upload: read the sink's count: %w", err)
	}
	if got := binary.BigEndian.Uint64(ack[:]); got != uint64(n) {
		return fmt.Errorf("upload: sink received %d bytes, sent %d", got, n)
	}
	return nil
}

// download is the client side of a source exchange: it writes prefix and
// the length n, half-closes, and reads to EOF checking the count.
func download(d duplex, prefix []byte, n int64) error {
	req := binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), uint64(n))
	if _, err := d.Write(req); err != nil {
		return fmt.Errorf("download: write request: %w", err)
	}
	if err := d.CloseWrite(); err != nil {
		return fmt.Errorf("download: close write: %w", err)
	}
	got, err := drain(d, make([]byte, chunkSize))
	if err != nil {
		return fmt.Errorf("download: read after %d bytes: %w", got, err)
	}
	if got != n {
		return fmt.Errorf("download: received %d bytes, want %d", got, n)
	}
	return nil
}

// EchoOnce sends prefix and one byte on d, and reads the byte back. The
// error says which step failed.
func EchoOnce(d io.ReadWriter, prefix []byte) error {
	msg := append(append(make([]byte, 0, len(prefix)+1), prefix...), 'x')
	if _, err := d.Write(msg); err != nil {
		return fmt.Errorf("echo: write: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(d, b[:]); err != nil {
		return fmt.Errorf("echo: read: %w", err)
	}
	if b[0] != 'x' {
		return fmt.Errorf("echo: got %q back, want 'x'", b[0])
	}
	return nil
}
