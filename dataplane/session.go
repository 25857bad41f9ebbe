package dataplane

// Session message tags. They live in their own space: the first payload
// byte of a ConnectRequest names the transport, that of a ConnectResponse
// is its Result.
const (
	// connectTCP is the ConnectRequest tag for a TCP target.
	connectTCP = 0x01
)

// connectRequestFixedLen is the size of a ConnectRequest payload before the
// target's bytes: tag, version, session_id, target length.
const connectRequestFixedLen = headerLen + sessionIDLen + stringLenLen

// ConnectRequest (gateway→agent, the first frame on a session stream) asks
// the agent to open a TCP connection to Target. Tag 0x01 is TCP, the only
// transport of protocol v1.
//
// Payload layout:
//
//	u8        tag = 0x01 (TCP)
//	u16       version
//	[16]byte  session_id (UUID, RFC 4122 byte order)
//	u32       length, UTF-8 target
//
// The zero value encodes a request with version 0, the nil session ID and
// an empty target.
type ConnectRequest struct {
	// Version is the protocol version; set it to ProtocolVersion.
	Version uint16
	// SessionID identifies the session in logs and audit on both ends.
	SessionID SessionID
	// Target is "host:port", with an IPv6 literal in brackets
	// ("[2001:db8::1]:22"). The codec checks only that it is UTF-8; the
	// agent's session handler validates it.
	Target string
}

// AppendFrame appends the framed message to dst; see
// (*Heartbeat).AppendFrame. It returns an *InvalidFieldError if Target is
// not valid UTF-8 and a *MessageTooLargeError if the payload exceeds
// MaxSessionPayload.
func (m *ConnectRequest) AppendFrame(dst []byte) ([]byte, error) {
	if err := checkString(fieldOf("ConnectRequest.target"), m.Target); err != nil {
		return dst, err
	}
	b, err := beginFrame(dst, SessionStream, connectRequestFixedLen+uint64(len(m.Target)))
	if err != nil {
		return dst, err
	}
	b = appendHeader(b, connectTCP, m.Version)
	b = append(b, m.SessionID[:]...)
	b = appendString(b, m.Target)
	return b, nil
}

// DecodeConnectRequest decodes a ConnectRequest payload (a frame without its
// length prefix). Target is a copy: nothing aliases payload.
//
// It returns a *TruncatedError if payload ends early, an *UnknownTagError
// for a tag other than 0x01, and an *InvalidFieldError for a target that is
// not UTF-8 or trailing bytes. It checks neither the version nor the size
// limit.
func DecodeConnectRequest(payload []byte) (ConnectRequest, error) {
	d := decoder{b: payload}
	tag := d.u8(fieldOf("ConnectRequest.tag"))
	if d.err != nil {
		return ConnectRequest{}, d.err
	}
	if tag != connectTCP {
		return ConnectRequest{}, &UnknownTagError{Stream: SessionStream, Message: "ConnectRequest", Tag: tag}
	}
	var m ConnectRequest
	m.Version = d.u16(fieldOf("ConnectRequest.version"))
	id := d.fixed(sessionIDLen, fieldOf("ConnectRequest.session_id"))
	target := d.str(fieldOf("ConnectRequest.target"))
	if err := d.finish("ConnectRequest"); err != nil {
		return ConnectRequest{}, err
	}
	m.SessionID = SessionID(id)
	m.Target = string(target)
	return m, nil
}

// ConnectResponse (agent→gateway, the first frame back on a session stream)
// tells the gateway whether the agent reached the target. Its tag is its
// Result.
//
// Payload layout:
//
//	Success: u8 tag = 0x00, u16 version
//	Error:   u8 tag = 0x01, u16 version, u32 length, UTF-8 reason
//
// The zero value encodes a Success with version 0.
type ConnectResponse struct {
	// Version is the protocol version; set it to ProtocolVersion.
	Version uint16
	// Result is ResultSuccess or ResultError.
	Result Result
	// Reason says why the connection failed (Error only).
	Reason string
}

// AppendFrame appends the framed message to dst; see
// (*Heartbeat).AppendFrame. It returns an *InvalidFieldError for a Result
// other than ResultSuccess or ResultError, a Reason on a Success, or a
// Reason that is not UTF-8; a *MessageTooLargeError if the payload exceeds
// MaxSessionPayload.
func (m *ConnectResponse) AppendFrame(dst []byte) ([]byte, error) {
	n := uint64(headerLen)
	switch m.Result {
	case ResultSuccess:
		if m.Reason != "" {
			return dst, &InvalidFieldError{Field: "ConnectResponse.reason", Reason: "set on a Success result"}
		}
	case ResultError:
		if err := checkString(fieldOf("ConnectResponse.reason"), m.Reason); err != nil {
			return dst, err
		}
		n += stringSize(m.Reason)
	default:
		return dst, &InvalidFieldError{Field: "ConnectResponse.result", Reason: "unknown result " + m.Result.String()}
	}
	b, err := beginFrame(dst, SessionStream, n)
	if err != nil {
		return dst, err
	}
	b = appendHeader(b, uint8(m.Result), m.Version)
	if m.Result == ResultError {
		b = appendString(b, m.Reason)
	}
	return b, nil
}

// DecodeConnectResponse decodes a ConnectResponse payload (a frame without
// its length prefix). Reason is a copy: nothing aliases payload.
//
// It returns a *TruncatedError if payload ends early, an *UnknownTagError
// for a tag other than 0x00 and 0x01, and an *InvalidFieldError for a
// reason that is not UTF-8 or trailing bytes. It checks neither the version
// nor the size limit.
func DecodeConnectResponse(payload []byte) (ConnectResponse, error) {
	d := decoder{b: payload}
	tag := Result(d.u8(fieldOf("ConnectResponse.tag")))
	if d.err != nil {
		return ConnectResponse{}, d.err
	}
	if tag != ResultSuccess && tag != ResultError {
		return ConnectResponse{}, &UnknownTagError{Stream: SessionStream, Message: "ConnectResponse", Tag: uint8(tag)}
	}
	m := ConnectResponse{Result: tag}
	m.Version = d.u16(fieldOf("ConnectResponse.version"))
	if tag == ResultError {
		reason := d.str(fieldOf("ConnectResponse.reason"))
		if d.err == nil {
			m.Reason = string(reason)
		}
	}
	if err := d.finish("ConnectResponse"); err != nil {
		return ConnectResponse{}, err
	}
	return m, nil
}
