// Package peer is the peer link between the gateway replicas of a cluster
// (issue 17): a replica that receives a client session for an agent
// connected only to other replicas forwards it to one of them over a QUIC
// connection between the two, one stream per session.
//
// # Identity
//
// Every replica holds a peer certificate from the cluster CA, issued at
// start in memory and re-issued when a third of its life is left
// (Identity; the certificate itself is described in pki/peer.go): URI SAN
// urn:outpost:peer:<replica-id> and the private extended key usage
// pki.PeerEKU, never clientAuth or serverAuth. Both ends verify the other's
// chain with pki.Authority.VerifyPeerChain during the handshake, and the
// dialing end also checks that the replica id is the one it meant to reach.
// An agent certificate is never accepted as a peer's, nor a peer
// certificate as an agent's.
//
// # Connection
//
// The link runs on each replica's agent QUIC listener (the replica's
// peer_endpoint in the store), told apart by its ALPN, ALPN ("gw-peer/1"):
// the listener's TLS configuration switches to ServerTLS for a client that
// offers it (tunnel.Config.Peers). The forwarding replica dials from a UDP
// socket of its own, one connection per replica it needs, opened on demand
// (concurrent first uses share one dial) and reused; a connection that
// carried no session for IdleTimeout is closed, and every connection is
// closed when the gateway stops.
//
// # Protocol
//
// Frames are [u32 big-endian payload length][payload], the length checked
// against MaxFramePayload before anything is read or allocated. Payloads
// start with u8 tag, u16 version (ProtocolVersion, 1).
//
// On each stream the forwarding replica writes, at once:
//
//	Forward   tag 0x01, u16 version, [16]byte agent_id (UUID), [16]byte session_id
//	then the session's ConnectRequest frame (dataplane), as the agent reads it
//	then, optionally, the client's first bytes (the first flight)
//
// The receiving replica reads both frames (FrameTimeout), checks that the
// session ids agree and the agent holds a connection to it, opens a
// stream on that connection as a local session would — counting against
// the agent's session limit there — and sends the ConnectRequest on it; an
// agent whose connection to it went quiet (unresponsive) is refused. Then
// it answers with one Status frame:
//
//	Accepted  tag 0x00, u16 version
//	Refused   tag 0x01, u16 version, u8 code, u16 length, UTF-8 reason (≤ MaxReasonLen bytes)
//
// After Accepted it splices the two streams byte for byte both ways, the
// agent's ConnectResponse included, until both directions end: a
// half-close passes through as a half-close, a reset of either stream
// resets the other. Before the first of the agent's bytes, and as soon as
// the agent's QUIC stack acknowledged the request (tunnel.Pending.Heard,
// checked every 2 ms), it sends one more Status frame:
//
//	Heard     tag 0x02, u16 version
//
// so that the forwarding replica tells an agent that is alive but still
// dialing from one that is gone, as it does for its own agents (the
// broker's hedging), and not from the liveness of the replica in between.
// After Refused it closes the stream.
//
// The forwarding side waits for the Status before it hands the stream to
// the session (tunnel.Remote.Forward), which costs no round trip the
// session would not wait for anyway: the agent's ConnectResponse comes
// after it. A Refused, or a replica that cannot be reached, moves it on to
// the next replica holding the agent. While another replica is left to
// try, a replica must also answer within StatusTimeout (1 s; one that does
// not is tried last for a while: it died, most likely) and say Heard before
// the session is handed over, so that an agent leaving that replica in the
// meantime moves the session on rather than fails it. When none takes the
// session it fails
// with a *tunnel.AgentError naming the agent and, for each replica, why
// (the broker then tries its next candidate). A replica never forwards a
// forwarded session again.
//
// Where agents are comes from the store (cluster.Member.AgentReplicas and
// the replicas' peer endpoints), cached for LocateTTL (1 s); a refusal
// drops the agent's cached location.
package peer
