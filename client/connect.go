// Package client is the client side of the gateway's entry, as "outpost
// connect" uses it: it keeps one standing, multiplexed connection to the
// entry, authenticated by a session token and verifying the gateway against
// a pinned CA, and opens one session on it per local connection, bridged to
// a local TCP listener or to stdin/stdout (for ssh -o ProxyCommand). The TLS
// handshake is paid once per Client; a connection that drops is
// reconnected with backoff. A gateway that offers no standing connection
// gets one WebSocket per session instead, as browsers use the entry.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/client/muxstream"
	"github.com/outposthq/outpost/client/wsstream"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/dataplane/transport"
)

// entryPath is the gateway's entry.
const entryPath = "/v1/connect"

// errClosed is what sessions of a closed Client fail with.
var errClosed = errors.New("connect: the client is closed")

// DefaultConnectWait is Config.ConnectWait's default.
const DefaultConnectWait = 15 * time.Second

// Config says how a Client (built by New) reaches the entry.
type Config struct {
	// Gateway is the gateway's https:// base URL or the wss:// connect URL.
	Gateway string
	// Token is the session token.
	Token string
	// CAPEM is the gateway CA certificate; or CAPin, the hex SHA-256 of the
	// CA's SubjectPublicKeyInfo (64 hex digits, either case): the gateway
	// must send that CA after its own certificate, which must verify against
	// it (transport.VerifyCAPin).
	CAPEM []byte
	CAPin string
	// DialTimeout bounds the connection to the gateway: TLS and the
	// upgrade of the standing connection, or a whole WebSocket handshake
	// (default 40 s, which covers the gateway's own wait for an agent).
	DialTimeout time.Duration
	// ConnectWait bounds how long a session waits for the standing
	// connection while it is down (connecting, reconnecting) or full,
	// before it fails with the reason. If zero, DefaultConnectWait.
	ConnectWait time.Duration
	// WebSocket, if true, opens one WebSocket per session (the entry's
	// plain form) instead of sessions on a standing connection.
	WebSocket bool
	// ReplayOnLoss lets a session whose standing connection is lost before
	// the gateway's first byte be opened again with the bytes the local side
	// had sent (at most 64 KiB) sent again (retrying). The target may then
	// get them twice, on two connections (the first one cut): opt in only
	// for protocols where that is harmless. Without it, such a session is
	// opened again only if nothing had been sent yet.
	ReplayOnLoss bool
	Logger       hclog.Logger
	// OnFailure, if set, is called once with the gateway's reason when a
	// session fails (the gateway refused it, no agent could connect, the
	// target refused, ...), as soon as the failure arrives — before the
	// local side is closed. An ssh ProxyCommand uses it to print the reason
	// while ssh still listens: once stdout closes, ssh exits and hangs up
	// on its ProxyCommand.
	OnFailure func(reason string)
}

// Client opens sessions through the entry. Its standing connection is made
// when the first session needs it (or when Listen starts), and lives until
// Close. It is safe for concurrent use.
type Client struct {
	entry       *url.URL // the wss:// URL of the entry
	token       string
	http        *http.Client // WebSocket sessions
	muxTLS      *tls.Config  // the standing connection (HTTP/1.1 only)
	dialTimeout time.Duration
	connectWait time.Duration
	log         hclog.Logger
	single      bool
	replay      bool
	onFail      func(reason string)

	state connState

	start  sync.Once
	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the supervisor
}

// Stream is one session: Read and Write carry the target's bytes,
// CloseWrite ends this side's direction (the target reads EOF) while the
// other goes on, Close ends the session cleanly, Abort resets it. It is a
// relay.Endpoint. A session the gateway could not serve fails its reads
// with an error Failure reads the reason of.
type Stream interface {
	relay.Endpoint
}

// New checks o and returns a Client. It does no I/O.
func New(o Config) (*Client, error) {
	if o.Token == "" {
		return nil, errors.New("connect: a session token is required")
	}
	u, err := entryURL(o.Gateway)
	if err != nil {
		return nil, err
	}
	tlsConf, err := pinnedTLS(o, u)
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 40 * time.Second
	}
	if o.ConnectWait <= 0 {
		o.ConnectWait = DefaultConnectWait
	}
	muxTLS := tlsConf.Clone()
	muxTLS.NextProtos = []string{"http/1.1"}
	c := &Client{
		entry:       u,
		token:       o.Token,
		http:        &http.Client{Timeout: o.DialTimeout, Transport: &http.Transport{TLSClientConfig: tlsConf}},
		muxTLS:      muxTLS,
		dialTimeout: o.DialTimeout,
		connectWait: o.ConnectWait,
		log:         o.Logger,
		single:      !reusable(o.Token),
		replay:      o.ReplayOnLoss,
		onFail:      o.OnFailure,
		state:       connState{changed: make(chan struct{}), all: map[*standing]struct{}{}, webSocket: o.WebSocket},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// SingleUse reports whether the token opens only one session.
func (c *Client) SingleUse() bool { return c.single }

// Connect starts keeping the standing connection up, if it is not yet:
// later sessions find it ready. Open calls it.
func (c *Client) Connect() {
	c.start.Do(func() {
		if c.state.webSocket {
			return
		}
		c.wg.Go(func() { c.supervise(c.ctx) })
	})
}

// Close stops reconnecting, closes the standing connection (sessions still
// on it end) and waits for the Client's goroutines. Idempotent.
func (c *Client) Close() error {
	c.start.Do(func() {})
	c.cancel()
	c.wg.Wait()
	c.closeAll()
	c.http.CloseIdleConnections()
	return nil
}

// Open opens one session: a stream on the standing connection, which it
// waits for up to ConnectWait, or a WebSocket of its own when there is no
// standing connection. A refusal of the token by the gateway is an error
// here or, for one the gateway decides per session (a used-up token), the
// stream's first read.
func (c *Client) Open(ctx context.Context) (Stream, error) {
	if c.ctx.Err() != nil {
		return nil, errClosed
	}
	c.Connect()
	return c.openStream(ctx)
}

// OpenWebSocket opens one session on a WebSocket of its own, as browsers
// use the entry; the stream's Read/Write carry the target's bytes.
func (c *Client) OpenWebSocket(ctx context.Context) (*wsstream.Stream, error) {
	ws, resp, err := websocket.Dial(ctx, c.entry.String(), &websocket.DialOptions{
		HTTPClient: c.http,
		HTTPHeader: http.Header{"Authorization": []string{"Bearer " + c.token}},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return nil, &RefusedError{Status: resp.StatusCode, Reason: strings.TrimSpace(string(body))}
		}
		return nil, fmt.Errorf("connect to %s: %w", c.entry, err)
	}
	ws.SetReadLimit(1 << 20)
	if resp.TLS != nil {
		c.log.Debug("entry connected", "tls_resumed", resp.TLS.DidResume)
	}
	return wsstream.New(ctx, ws), nil
}

// Failure extracts the gateway's reason from an error that ended a
// session: a WebSocket closed with wsstream.StatusConnectFailed, or a
// stream reset with muxstream.ResetFailed.
func Failure(err error) (string, bool) {
	if r, ok := wsstream.Failure(err); ok {
		return r, true
	}
	return muxstream.Failure(err)
}

// Bridge relays local (a TCP connection, or stdio) and one new session until
// both directions end; it returns the session's failure reason if any.
func (c *Client) Bridge(ctx context.Context, local relay.Endpoint) error {
	s, err := c.Open(ctx)
	if err != nil {
		// The reason first, then the local side's end (see OnFailure).
		if c.onFail != nil {
			c.onFail(err.Error())
		}
		local.Abort(relay.ErrorCodeReset)
		return err
	}
	remote := relay.Endpoint(s)
	if _, mux := s.(*muxSession); mux && !c.single {
		// A single-use token was spent by the first attempt: no second.
		remote = newRetrying(c, s)
	}
	if c.onFail != nil {
		remote = &failureNotice{Endpoint: s, fn: c.onFail}
	}
	_, err = relay.Relay(ctx, local, remote, relay.Options{})
	if reason, ok := Failure(err); ok {
		return fmt.Errorf("session failed: %s", reason)
	}
	return err
}

// Stdio bridges stdin/stdout to one session.
func (c *Client) Stdio(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	return c.Bridge(ctx, &stdioEndpoint{r: stdin, w: stdout})
}

// Listen accepts local TCP connections on ln and bridges each to a new
// session, until ctx ends — or after the first one when the token is
// single-use. It connects to the gateway at once, so that the first
// session finds the connection ready, and waits for the bridges it
// started.
func (c *Client) Listen(ctx context.Context, ln net.Listener) error {
	c.Connect()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		c.log.Info("local connection", "from", conn.RemoteAddr().String())
		wg.Go(func() { c.logEnd(c.Bridge(ctx, relay.TCPConn(conn.(*net.TCPConn)))) })
		if c.single {
			ln.Close()
			return nil
		}
	}
}

// logEnd logs how a bridged session ended: a reset by the local program or
// the target (iperf3 resets after a complete run) is a normal end, not an
// error.
func (c *Client) logEnd(err error) {
	var re *relay.Error
	switch {
	case err == nil:
		c.log.Info("session closed")
	case relay.PeerReset(err) && errors.As(err, &re) && re.Side == relay.SideA:
		c.log.Info("session closed: the local connection was reset")
	case relay.PeerReset(err):
		c.log.Info("session closed: the target reset the connection")
	default:
		c.log.Error("session ended with an error", "error", err)
	}
}

// entryURL turns the gateway's base URL into the entry's wss:// URL.
func entryURL(gw string) (*url.URL, error) {
	u, err := url.Parse(gw)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("connect: gateway %q: want https://host:port or wss://host:port/v1/connect", gw)
	}
	switch u.Scheme {
	case "https", "wss":
	default:
		return nil, fmt.Errorf("connect: gateway %q: scheme must be https or wss", gw)
	}
	u.Scheme = "wss"
	if !strings.HasSuffix(u.Path, entryPath) {
		u.Path = strings.TrimSuffix(u.Path, "/") + entryPath
	}
	return u, nil
}

// pinnedTLS verifies the gateway with the given CA, or with a CA the gateway
// presents after its certificate whose key is the pin (transport.VerifyCAPin).
// Both configurations cache TLS sessions, so that the sessions a --listen
// client opens one after another resume instead of doing a full handshake
// each.
func pinnedTLS(o Config, u *url.URL) (*tls.Config, error) {
	host := u.Hostname()
	if len(o.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CAPEM) {
			return nil, errors.New("connect: the CA file holds no PEM certificate")
		}
		return &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12,
			ClientSessionCache: tls.NewLRUClientSessionCache(0)}, nil
	}
	if o.CAPin == "" {
		// A pin given blank is malformed (ParsePin says so), not missing.
		return nil, errors.New("connect: a CA file (--ca-file) or a CA pin (--ca-pin, 64 hex digits) is required")
	}
	pin, err := transport.ParsePin(strings.TrimSpace(o.CAPin))
	if err != nil {
		return nil, fmt.Errorf("connect: CA pin (--ca-pin): %w", err)
	}
	conf := transport.CAPinnedTLS(host, pin)
	// Later sessions of this client resume the TLS session (no certificate
	// chain is sent; the key exchange still runs); the pin is checked
	// again on every connection, against the chain of the session resumed.
	conf.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	return conf, nil
}

// reusable reads the token's "reusable" claim without verifying it (the
// gateway does that); a token it cannot read counts as single-use.
func reusable(tok string) bool {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return false
	}
	var c struct {
		Reusable bool `json:"reusable"`
	}
	return json.Unmarshal(raw, &c) == nil && c.Reusable
}

// failureNotice passes a session's failure reason to fn the moment a read or
// write returns it, before Relay aborts the other endpoint.
type failureNotice struct {
	relay.Endpoint
	fn   func(reason string)
	once sync.Once
}

// WaitRead waits for the session's data without a buffer
// (relay.ReadWaiter).
func (f *failureNotice) WaitRead() error { return relay.WaitRead(f.Endpoint) }

func (f *failureNotice) Read(p []byte) (int, error) {
	n, err := f.Endpoint.Read(p)
	f.notice(err)
	return n, err
}

func (f *failureNotice) Write(p []byte) (int, error) {
	n, err := f.Endpoint.Write(p)
	f.notice(err)
	return n, err
}

func (f *failureNotice) notice(err error) {
	if reason, ok := Failure(err); ok {
		f.once.Do(func() { f.fn(reason) })
	}
}

// stdioEndpoint is stdin/stdout as a relay endpoint: stdout cannot half-close
// on its own, so CloseWrite closes it if it can.
type stdioEndpoint struct {
	r    io.Reader
	w    io.Writer
	once sync.Once
}

func (e *stdioEndpoint) Read(p []byte) (int, error)  { return e.r.Read(p) }
func (e *stdioEndpoint) Write(p []byte) (int, error) { return e.w.Write(p) }
func (e *stdioEndpoint) CloseWrite() error {
	if c, ok := e.w.(io.Closer); ok {
		e.once.Do(func() { c.Close() })
	}
	return nil
}

// Abort closes stdout and interrupts a pending stdin read where the file
// allows it (pipes do).
func (e *stdioEndpoint) Abort(relay.ErrorCode) {
	if d, ok := e.r.(interface{ SetReadDeadline(time.Time) error }); ok {
		_ = d.SetReadDeadline(time.Now())
	}
	e.CloseWrite()
}

func (e *stdioEndpoint) Close() error { return e.CloseWrite() }
