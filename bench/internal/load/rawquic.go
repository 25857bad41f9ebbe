package load

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane/transport"
)

// The raw QUIC baseline: a quic-go server and client on loopback with the
// configuration Outpost uses (transport.Config{}.QUIC, transport.ServerTLS
// and ClientTLS) and a self-signed ECDSA P-256 certificate. Each exchange is
// one stream whose first byte picks the service.
const (
	modeSink   = 'S'
	modeSource = 'R'
	modeEcho   = 'E'
)

var loopbackUDP = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}

// QUICServer serves sink, source and echo streams on a loopback UDP port.
// Close stops it and waits for its goroutines.
type QUICServer struct {
	udp    *net.UDPConn
	tr     *quic.Transport
	ln     *quic.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
	log    hclog.Logger
}

// StartQUICServer listens on 127.0.0.1 with a new self-signed certificate
// and returns the server and the certificate (PEM) clients must trust. log
// gets the streams that fail (at debug level); nil discards. The error is
// the certificate's or the listener's.
func StartQUICServer(log hclog.Logger) (_ *QUICServer, certPEM []byte, err error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	cert, err := selfSigned()
	if err != nil {
		return nil, nil, err
	}
	s := &QUICServer{log: log}
	if s.udp, err = net.ListenUDP("udp", loopbackUDP); err != nil {
		return nil, nil, err
	}
	s.tr = &quic.Transport{Conn: s.udp}
	s.ln, err = s.tr.Listen(transport.ServerTLS(&tls.Config{Certificates: []tls.Certificate{cert}}), transport.Config{}.QUIC())
	if err != nil {
		s.tr.Close()
		s.udp.Close()
		return nil, nil, fmt.Errorf("raw quic: listen: %w", err)
	}
	var ctx context.Context
	ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(func() { s.accept(ctx) })
	return s, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), nil
}

// Addr is the server's UDP address.
func (s *QUICServer) Addr() string { return s.udp.LocalAddr().String() }

func (s *QUICServer) accept(ctx context.Context) {
	for {
		conn, err := s.ln.Accept(ctx)
		if err != nil {
			return
		}
		s.wg.Go(func() {
			defer conn.CloseWithError(0, "")
			for {
				st, err := conn.AcceptStream(ctx)
				if err != nil {
					return
				}
				s.wg.Go(func() { s.handle(streamDuplex{st}) })
			}
		})
	}
}

func (s *QUICServer) handle(d streamDuplex) {
	defer d.Close()
	if err := serveMux(d); err != nil {
		s.log.Debug("raw quic stream", "error", err)
	}
}

// Close closes the listener and every connection and waits for the
// server's goroutines.
func (s *QUICServer) Close() {
	s.cancel()
	s.ln.Close()
	s.wg.Wait()
	s.tr.Close()
	s.udp.Close()
}

// QUICClient is one QUIC connection to a QUICServer. Its methods are safe
// for concurrent use; Close ends them.
type QUICClient struct {
	udp  *net.UDPConn
	tr   *quic.Transport
	conn *quic.Conn
}

// DialQUIC connects to the QUICServer at addr trusting the certificate in
// certPEM; the handshake is bounded by ctx and the configuration's
// handshake timeout. The error is the dial's.
func DialQUIC(ctx context.Context, addr string, certPEM []byte) (*QUICClient, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		return nil, errors.New("raw quic: no certificate to trust")
	}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c := &QUICClient{}
	if c.udp, err = net.ListenUDP("udp", loopbackUDP); err != nil {
		return nil, err
	}
	c.tr = &quic.Transport{Conn: c.udp}
	tlsConf := transport.ClientTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if c.conn, err = c.tr.Dial(ctx, raddr, tlsConf, transport.Config{}.QUIC()); err != nil {
		c.Close()
		return nil, fmt.Errorf("raw quic: dial %s: %w", addr, err)
	}
	return c, nil
}

// stream opens a stream, bounded by ctx.
func (c *QUICClient) stream(ctx context.Context) (streamDuplex, error) {
	s, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return streamDuplex{}, fmt.Errorf("raw quic: open stream: %w", err)
	}
	return streamDuplex{s}, nil
}

// echoSession is one timed session on its own stream: send the echo mode
// and one byte, read the byte back, close.
func (c *QUICClient) echoSession(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, SessionTimeout)
	defer cancel()
	d, err := c.stream(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = d.SetDeadline(dl)
	}
	return EchoOnce(d, []byte{modeEcho})
}

// Close closes the connection and the socket.
func (c *QUICClient) Close() {
	if c.conn != nil {
		c.conn.CloseWithError(0, "benchmark done")
	}
	c.tr.Close()
	c.udp.Close()
}

// selfSigned makes a throw-away ECDSA P-256 certificate for 127.0.0.1.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "outpost-bench"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
