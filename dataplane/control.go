package dataplane

import (
	"encoding/binary"
	"net/netip"
	"strconv"
)

// ControlMessage is one of the five control messages: *RouteAdvertise,
// *Heartbeat, *HeartbeatAck, *CertRenewalRequest or *CertRenewalResponse.
// The set is closed; a type switch over those five pointer types is
// exhaustive.
type ControlMessage interface {
	// Tag returns the message's tag.
	Tag() MessageTag
	// ProtocolVersion returns the message's Version field, for handlers
	// that check it before the type switch (see CheckVersion).
	ProtocolVersion() uint16
	// AppendFrame appends the framed message to dst; see
	// (*Heartbeat).AppendFrame for the contract shared by all messages.
	AppendFrame(dst []byte) ([]byte, error)

	isControlMessage()
}

// Interface checks.
var (
	_ ControlMessage = (*RouteAdvertise)(nil)
	_ ControlMessage = (*Heartbeat)(nil)
	_ ControlMessage = (*HeartbeatAck)(nil)
	_ ControlMessage = (*CertRenewalRequest)(nil)
	_ ControlMessage = (*CertRenewalResponse)(nil)
)

// Fixed payload sizes, in bytes.
const (
	heartbeatPayloadLen    = headerLen + 8 + 4 // timestamp_ms, active_stream_count
	heartbeatAckPayloadLen = headerLen + 8     // timestamp_ms
)

// DomainRoute is one domain a RouteAdvertise carries. The zero value is not
// a valid route (the name is empty).
type DomainRoute struct {
	// Name is a DNS name or a "*."-prefixed wildcard, as ValidateDomainRoute
	// accepts it. Decoded names are lower-case; encoders lower-case them.
	Name string
	// AutoDetected is true when the agent found the domain itself rather
	// than from its configuration.
	AutoDetected bool
}

// RouteAdvertise (agent→gateway, tag 0x01) lists the subnets and domains an
// agent can reach. It is the first message on the control stream and is
// repeated periodically; each change increments Epoch.
//
// Payload layout:
//
//	u8   tag = 0x01
//	u16  version
//	u64  epoch
//	u32  subnet count, then per subnet:
//	       [4]byte IPv4 address, u8 prefix length (0..32, host bits kept)
//	u32  domain count, then per domain:
//	       u32 length, UTF-8 name, u8 auto_detected (0/1; non-zero is true)
//
// The zero value encodes an empty advertisement with version 0.
type RouteAdvertise struct {
	// Version is the protocol version; set it to ProtocolVersion.
	Version uint16
	// Epoch increases with every change of the advertised routes.
	Epoch uint64
	// Subnets are IPv4 prefixes. Host bits are kept as sent (a decoded
	// prefix is netip.PrefixFrom(addr, bits), not Masked). An empty list
	// decodes as nil.
	Subnets []netip.Prefix
	// Domains are domain routes. An empty list decodes as nil.
	Domains []DomainRoute
}

// Tag returns TagRouteAdvertise.
func (*RouteAdvertise) Tag() MessageTag { return TagRouteAdvertise }

// ProtocolVersion returns m.Version.
func (m *RouteAdvertise) ProtocolVersion() uint16 { return m.Version }

func (*RouteAdvertise) isControlMessage() {}

// payloadLen validates m and returns its encoded payload length.
func (m *RouteAdvertise) payloadLen() (uint64, error) {
	n := uint64(headerLen + 8 + countLen + countLen)
	for i, p := range m.Subnets {
		if !p.IsValid() || !p.Addr().Is4() {
			return 0, &InvalidFieldError{
				Field:  elemOf("RouteAdvertise.subnets", i, "").String(),
				Reason: "not a valid IPv4 prefix: " + p.String(),
			}
		}
		n += subnetLen
	}
	for i, d := range m.Domains {
		if reason := domainRouteProblem(d.Name); reason != "" {
			return 0, &InvalidFieldError{Field: elemOf("RouteAdvertise.domains", i, "name").String(), Reason: reason}
		}
		if err := checkString(elemOf("RouteAdvertise.domains", i, "name"), d.Name); err != nil {
			return 0, err
		}
		n += stringSize(d.Name) + 1
	}
	return n, nil
}

// AppendFrame appends the framed message to dst; see
// (*Heartbeat).AppendFrame. Domain names are written lower-cased. It
// returns an *InvalidFieldError for a subnet that is not a valid IPv4
// prefix or an invalid domain route (see ValidateDomainRoute).
func (m *RouteAdvertise) AppendFrame(dst []byte) ([]byte, error) {
	n, err := m.payloadLen()
	if err != nil {
		return dst, err
	}
	b, err := beginFrame(dst, ControlStream, n)
	if err != nil {
		return dst, err
	}
	b = appendHeader(b, uint8(TagRouteAdvertise), m.Version)
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Subnets)))
	for _, p := range m.Subnets {
		a := p.Addr().As4()
		b = append(b, a[:]...)
		b = append(b, byte(p.Bits()))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Domains)))
	for _, d := range m.Domains {
		b = binary.BigEndian.AppendUint32(b, uint32(len(d.Name)))
		b = appendLowerASCII(b, d.Name)
		b = append(b, boolByte(d.AutoDetected))
	}
	return b, nil
}

func decodeRouteAdvertise(p []byte, m *RouteAdvertise) error {
	d := decoder{b: p, off: tagLen}
	version := d.u16(fieldOf("RouteAdvertise.version"))
	epoch := d.u64(fieldOf("RouteAdvertise.epoch"))

	var subnets []netip.Prefix
	if n := d.count(fieldOf("RouteAdvertise.subnets"), subnetLen); n > 0 {
		subnets = make([]netip.Prefix, n)
		for i := range subnets {
			addr := d.fixed(ipv4Len, elemOf("RouteAdvertise.subnets", i, "addr"))
			bits := d.u8(elemOf("RouteAdvertise.subnets", i, "prefix_len"))
			if d.err != nil {
				return d.err
			}
			if bits > maxIPv4Prefix {
				d.invalid(elemOf("RouteAdvertise.subnets", i, "prefix_len"),
					"prefix length "+strconv.Itoa(int(bits))+" > 32")
				return d.err
			}
			subnets[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte(addr)), int(bits))
		}
	}

	var domains []DomainRoute
	if n := d.count(fieldOf("RouteAdvertise.domains"), minDomainLen); n > 0 {
		domains = make([]DomainRoute, n)
		for i := range domains {
			name := d.str(elemOf("RouteAdvertise.domains", i, "name"))
			if d.err != nil {
				return d.err
			}
			if reason := domainRouteProblem(name); reason != "" {
				d.invalid(elemOf("RouteAdvertise.domains", i, "name"), reason)
				return d.err
			}
			auto := d.u8(elemOf("RouteAdvertise.domains", i, "auto_detected"))
			if d.err != nil {
				return d.err
			}
			domains[i] = DomainRoute{Name: lowerASCII(name), AutoDetected: auto != 0}
		}
	}
	if err := d.finish("RouteAdvertise"); err != nil {
		return err
	}
	*m = RouteAdvertise{Version: version, Epoch: epoch, Subnets: subnets, Domains: domains}
	return nil
}

// Heartbeat (agent→gateway, tag 0x02) tells the gateway the agent is alive
// and how many sessions it carries. The gateway answers with a HeartbeatAck
// echoing TimestampMs.
//
// Payload layout (15 bytes):
//
//	u8   tag = 0x02
//	u16  version
//	u64  timestamp_ms (Unix milliseconds, sender's clock)
//	u32  active_stream_count
//
// The zero value encodes a heartbeat with version 0, timestamp 0, count 0.
type Heartbeat struct {
	// Version is the protocol version; set it to ProtocolVersion.
	Version uint16
	// TimestampMs is the sender's wall clock in Unix milliseconds.
	TimestampMs uint64
	// ActiveStreamCount is the number of live sessions on the connection.
	ActiveStreamCount uint32
}

// Tag returns TagHeartbeat.
func (*Heartbeat) Tag() MessageTag { return TagHeartbeat }

// ProtocolVersion returns m.Version.
func (m *Heartbeat) ProtocolVersion() uint16 { return m.Version }

func (*Heartbeat) isControlMessage() {}

// AppendFrame appends the framed message (u32 payload length, payload) to
// dst and returns the extended slice, growing dst at most once. All message
// types share this contract: the message is validated and its size checked
// against its stream's limit (MaxControlPayload for control messages,
// MaxSessionPayload for session messages) before anything is appended; on
// error dst is returned unchanged with an *InvalidFieldError or a
// *MessageTooLargeError. Version is written as it is, never defaulted. It
// does not allocate when dst has room. A Heartbeat cannot fail.
func (m *Heartbeat) AppendFrame(dst []byte) ([]byte, error) {
	b, err := beginFrame(dst, ControlStream, heartbeatPayloadLen)
	if err != nil {
		return dst, err
	}
	b = appendHeader(b, uint8(TagHeartbeat), m.Version)
	b = binary.BigEndian.AppendUint64(b, m.TimestampMs)
	b = binary.BigEndian.AppendUint32(b, m.ActiveStreamCount)
	return b, nil
}

func decodeHeartbeat(p []byte, m *Heartbeat) error {
	d := decoder{b: p, off: tagLen}
	version := d.u16(fieldOf("Heartbeat.version"))
	ts := d.u64(fieldOf("Heartbeat.timestamp_ms"))
	count := d.u32(fieldOf("Heartbeat.active_stream_count"))
	if err := d.finish("Heartbeat"); err != nil {
		return err
	}
	*m = Heartbeat{Version: version, TimestampMs: ts, ActiveStreamCount: count}
	return nil
}

// HeartbeatAck (gateway→agent, tag 0x03) answers a Heartbeat.
//
// Payload layout (11 bytes):
//
//	u8   tag = 0x03
//	u16  version
//	u64  timestamp_ms (echo of the Heartbeat's)
//
// The zero value encodes an ack with version 0 and timestamp 0.
type HeartbeatAck struct {
	// Version is the protocol version; set it to ProtocolVersion.
	Version uint16
	// TimestampMs echoes the Heartbeat's TimestampMs.
	TimestampMs uint64
}

// Tag returns TagHeartbeatAck.
func (*HeartbeatAck) Tag() MessageTag { return TagHeartbeatAck }

// ProtocolVersion returns m.Version.
func (m *HeartbeatAck) ProtocolVersion() uint16 { return m.Version }

func (*HeartbeatAck) isControlMessage() {}

// AppendFrame appends the framed message to dst; see
// (*Heartbeat).AppendFrame. It cannot fail.
func (m *HeartbeatAck) AppendFrame(dst []byte) ([]byte, error) {
	b, err := beginFrame(dst, ControlStream, heartbeatAckPayloadLen)
	if err != nil {
		return dst, err
	}
	b = appendHeader(b, uint8(TagHeartbeatAck), m.Version)
	b = binary.BigEndian.AppendUint64(b, m.TimestampMs)
	return b, nil
}

func decodeHeartbeatAck(p []byte, m *HeartbeatAck) error {
	d := decoder{b: p, off: tagLen}
	version := d.u16(fieldOf("HeartbeatAck.version"))
	ts := d.u64(fieldOf("HeartbeatAck.timestamp_ms"))
	if err := d.finish("HeartbeatAck"); err != nil {
		return err
	}
	*m = HeartbeatAck{Version: version, TimestampMs: ts}
	return nil
}

// CertRenewalRequest (agent→gateway, tag 0x04) asks for a new client
// certificate for the agent's existing key.
//
// Payload layout:
//
//	u8   tag = 0x04
//	u16  version
//	u32  length, UTF-8 csr_pem
//
// The zero value encodes a request with version 0 and an empty CSR.
type CertRenewalRequest struct {
	// Version is the protocol version; set it to ProtocolVersion.
	Version uint16
	// CSRPEM is the PEM-encoded certificate signing request.
	CSRPEM string
}

// Tag returns TagCertRenewalRequest.
func (*CertRenewalRequest) Tag() MessageTag { return TagCertRenewalRequest }

// ProtocolVersion returns m.Version.
func (m *CertRenewalRequest) ProtocolVersion() uint16 { return m.Version }

func (*CertRenewalRequest) isControlMessage() {}

// AppendFrame appends the framed message to dst; see
// (*Heartbeat).AppendFrame. It returns an *InvalidFieldError if CSRPEM is
// not valid UTF-8 and a *MessageTooLargeError if the payload exceeds
// MaxControlPayload.
func (m *CertRenewalRequest) AppendFrame(dst []byte) ([]byte, error) {
	if err := checkString(fieldOf("CertRenewalRequest.csr_pem"), m.CSRPEM); err != nil {
		return dst, err
	}
	b, err := beginFrame(dst, ControlStream, headerLen+stringSize(m.CSRPEM))
	if err != nil {
		return dst, err
	}
	b = appendHeader(b, uint8(TagCertRenewalRequest), m.Version)
	b = appendString(b, m.CSRPEM)
	return b, nil
}

func decodeCertRenewalRequest(p []byte, m *CertRenewalRequest) error {
	d := decoder{b: p, off: tagLen}
	version := d.u16(fieldOf("CertRenewalRequest.version"))
	csr := d.str(fieldOf("CertRenewalRequest.csr_pem"))
	if err := d.finish("CertRenewalRequest"); err != nil {
		return err
	}
	*m = CertRenewalRequest{Version: version, CSRPEM: string(csr)}
	return nil
}

// CertRenewalResponse (gateway→agent, tag 0x05) answers a
// CertRenewalRequest.
//
// Payload layout:
//
//	u8   tag = 0x05
//	u16  version
//	u8   result: 0x00 Success or 0x01 Error
//	Success: u32 length, UTF-8 client_cert_pem; u32 length, UTF-8 ca_cert_pem
//	Error:   u32 length, UTF-8 reason
//
// An unknown result byte is an *InvalidFieldError (the message tag is
// known; its content is not). The zero value encodes a Success with version
// 0 and empty certificates.
type CertRenewalResponse struct {
	// Version is the protocol version; set it to ProtocolVersion.
	Version uint16
	// Result is ResultSuccess or ResultError.
	Result Result
	// ClientCertPEM is the renewed client certificate (Success only).
	ClientCertPEM string
	// CACertPEM is the gateway's CA certificate (Success only).
	CACertPEM string
	// Reason says why renewal failed (Error only).
	Reason string
}

// Tag returns TagCertRenewalResponse.
func (*CertRenewalResponse) Tag() MessageTag { return TagCertRenewalResponse }

// ProtocolVersion returns m.Version.
func (m *CertRenewalResponse) ProtocolVersion() uint16 { return m.Version }

func (*CertRenewalResponse) isControlMessage() {}

// AppendFrame appends the framed message to dst; see
// (*Heartbeat).AppendFrame. It returns an *InvalidFieldError for a Result
// other than ResultSuccess or ResultError, for a field that the Result does
// not carry but is set (Reason on Success, a certificate on Error), and for
// invalid UTF-8; a *MessageTooLargeError if the payload exceeds
// MaxControlPayload.
func (m *CertRenewalResponse) AppendFrame(dst []byte) ([]byte, error) {
	n := uint64(headerLen + 1)
	switch m.Result {
	case ResultSuccess:
		if m.Reason != "" {
			return dst, &InvalidFieldError{Field: "CertRenewalResponse.reason", Reason: "set on a Success result"}
		}
		if err := checkString(fieldOf("CertRenewalResponse.client_cert_pem"), m.ClientCertPEM); err != nil {
			return dst, err
		}
		if err := checkString(fieldOf("CertRenewalResponse.ca_cert_pem"), m.CACertPEM); err != nil {
			return dst, err
		}
		n += stringSize(m.ClientCertPEM) + stringSize(m.CACertPEM)
	case ResultError:
		if m.ClientCertPEM != "" || m.CACertPEM != "" {
			return dst, &InvalidFieldError{Field: "CertRenewalResponse", Reason: "certificates set on an Error result"}
		}
		if err := checkString(fieldOf("CertRenewalResponse.reason"), m.Reason); err != nil {
			return dst, err
		}
		n += stringSize(m.Reason)
	default:
		return dst, &InvalidFieldError{Field: "CertRenewalResponse.result", Reason: "unknown result " + m.Result.String()}
	}
	b, err := beginFrame(dst, ControlStream, n)
	if err != nil {
		return dst, err
	}
	b = appendHeader(b, uint8(TagCertRenewalResponse), m.Version)
	b = append(b, uint8(m.Result))
	if m.Result == ResultSuccess {
		b = appendString(b, m.ClientCertPEM)
		b = appendString(b, m.CACertPEM)
	} else {
		b = appendString(b, m.Reason)
	}
	return b, nil
}

func decodeCertRenewalResponse(p []byte, m *CertRenewalResponse) error {
	d := decoder{b: p, off: tagLen}
	out := CertRenewalResponse{Version: d.u16(fieldOf("CertRenewalResponse.version"))}
	out.Result = Result(d.u8(fieldOf("CertRenewalResponse.result")))
	if d.err != nil {
		return d.err
	}
	switch out.Result {
	case ResultSuccess:
		cert := d.str(fieldOf("CertRenewalResponse.client_cert_pem"))
		ca := d.str(fieldOf("CertRenewalResponse.ca_cert_pem"))
		if d.err != nil {
			return d.err
		}
		out.ClientCertPEM, out.CACertPEM = string(cert), string(ca)
	case ResultError:
		reason := d.str(fieldOf("CertRenewalResponse.reason"))
		if d.err != nil {
			return d.err
		}
		out.Reason = string(reason)
	default:
		d.invalid(fieldOf("CertRenewalResponse.result"), "unknown result "+out.Result.String())
		return d.err
	}
	if err := d.finish("CertRenewalResponse"); err != nil {
		return err
	}
	*m = out
	return nil
}

// controlValues holds the values decodeControl decodes into; a nil field is
// allocated on first use and kept for reuse.
type controlValues struct {
	routeAdvertise      *RouteAdvertise
	heartbeat           *Heartbeat
	heartbeatAck        *HeartbeatAck
	certRenewalRequest  *CertRenewalRequest
	certRenewalResponse *CertRenewalResponse
}

// DecodeControl decodes one control message payload (a frame without its
// length prefix) into a newly allocated message. Strings and slices in the
// result are copies: nothing aliases payload.
//
// It returns a *TruncatedError if payload ends early (including an empty
// payload), an *UnknownTagError for a tag other than 0x01..0x05, and an
// *InvalidFieldError for invalid UTF-8, a prefix length over 32, an invalid
// domain route, an unknown CertRenewalResponse result, or trailing bytes.
// It does not check the version. It does not check the size limit either:
// payload is whatever the frame carried.
func DecodeControl(payload []byte) (ControlMessage, error) {
	var v controlValues
	return decodeControl(payload, &v)
}

func decodeControl(p []byte, v *controlValues) (ControlMessage, error) {
	if len(p) < tagLen {
		return nil, &TruncatedError{Field: "ControlMessage.tag", Need: tagLen}
	}
	switch tag := MessageTag(p[0]); tag {
	case TagRouteAdvertise:
		if v.routeAdvertise == nil {
			v.routeAdvertise = new(RouteAdvertise)
		}
		if err := decodeRouteAdvertise(p, v.routeAdvertise); err != nil {
			return nil, err
		}
		return v.routeAdvertise, nil
	case TagHeartbeat:
		if v.heartbeat == nil {
			v.heartbeat = new(Heartbeat)
		}
		if err := decodeHeartbeat(p, v.heartbeat); err != nil {
			return nil, err
		}
		return v.heartbeat, nil
	case TagHeartbeatAck:
		if v.heartbeatAck == nil {
			v.heartbeatAck = new(HeartbeatAck)
		}
		if err := decodeHeartbeatAck(p, v.heartbeatAck); err != nil {
			return nil, err
		}
		return v.heartbeatAck, nil
	case TagCertRenewalRequest:
		if v.certRenewalRequest == nil {
			v.certRenewalRequest = new(CertRenewalRequest)
		}
		if err := decodeCertRenewalRequest(p, v.certRenewalRequest); err != nil {
			return nil, err
		}
		return v.certRenewalRequest, nil
	case TagCertRenewalResponse:
		if v.certRenewalResponse == nil {
			v.certRenewalResponse = new(CertRenewalResponse)
		}
		if err := decodeCertRenewalResponse(p, v.certRenewalResponse); err != nil {
			return nil, err
		}
		return v.certRenewalResponse, nil
	default:
		return nil, &UnknownTagError{Stream: ControlStream, Message: "control message", Tag: uint8(tag)}
	}
}
