package dataplane

import (
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Sizes of fixed-width wire elements, in bytes.
const (
	tagLen        = 1
	versionLen    = 2
	countLen      = 4 // u32 list count
	stringLenLen  = 4 // u32 string byte length
	sessionIDLen  = 16
	ipv4Len       = 4
	subnetLen     = ipv4Len + 1          // address + prefix length
	minDomainLen  = stringLenLen + 0 + 1 // empty string + bool: the structural minimum
	headerLen     = tagLen + versionLen  // tag + version, at the start of every payload
	maxIPv4Prefix = 32
)

// field names a wire field for error messages without building the string
// unless an error happens: either a plain name, or element index of list
// name, optionally followed by ".elem"; then part (".length", ".count") when
// the field's length prefix was being read.
type field struct {
	name  string
	index int // -1: not a list element
	elem  string
	part  string
}

// fieldOf returns the field with the given full name.
func fieldOf(name string) field { return field{name: name, index: -1} }

// elemOf returns element i of list, or its sub-field elem when elem != "".
func elemOf(list string, i int, elem string) field {
	return field{name: list, index: i, elem: elem}
}

// withPart returns f naming its length or count prefix.
func (f field) withPart(part string) field {
	f.part = part
	return f
}

func (f field) String() string {
	s := f.name
	if f.index >= 0 {
		s += "[" + strconv.Itoa(f.index) + "]"
		if f.elem != "" {
			s += "." + f.elem
		}
	}
	return s + f.part
}

// decoder reads primitives from a payload. The first failure is kept in err;
// later reads return zero values, so a decode function can read a whole
// message and check err once where nothing depends on the values read.
type decoder struct {
	b   []byte
	off int
	err error
}

// left returns the number of unread bytes.
func (d *decoder) left() uint64 { return uint64(len(d.b) - d.off) }

// need reports whether n more bytes are available, recording a
// *TruncatedError for f if not.
func (d *decoder) need(n uint64, f field) bool {
	if d.err != nil {
		return false
	}
	if have := d.left(); have < n {
		d.err = &TruncatedError{Field: f.String(), Need: n, Have: have}
		return false
	}
	return true
}

// invalid records an *InvalidFieldError for f unless an error is recorded.
func (d *decoder) invalid(f field, reason string) {
	if d.err == nil {
		d.err = &InvalidFieldError{Field: f.String(), Reason: reason}
	}
}

func (d *decoder) u8(f field) uint8 {
	if !d.need(1, f) {
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) u16(f field) uint16 {
	if !d.need(2, f) {
		return 0
	}
	v := binary.BigEndian.Uint16(d.b[d.off:])
	d.off += 2
	return v
}

func (d *decoder) u32(f field) uint32 {
	if !d.need(4, f) {
		return 0
	}
	v := binary.BigEndian.Uint32(d.b[d.off:])
	d.off += 4
	return v
}

func (d *decoder) u64(f field) uint64 {
	if !d.need(8, f) {
		return 0
	}
	v := binary.BigEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

// fixed returns the next n bytes, aliasing the payload.
func (d *decoder) fixed(n int, f field) []byte {
	if !d.need(uint64(n), f) {
		return nil
	}
	v := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return v
}

// str reads a string (u32 length + bytes) and checks that it is UTF-8. The
// result aliases the payload: callers copy it.
func (d *decoder) str(f field) []byte {
	if !d.need(stringLenLen, f.withPart(".length")) {
		return nil
	}
	n := binary.BigEndian.Uint32(d.b[d.off:])
	d.off += stringLenLen
	// Compare as uint64 before converting: on 32-bit platforms int(n) can
	// be negative.
	if !d.need(uint64(n), f) {
		return nil
	}
	v := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	if !utf8.Valid(v) {
		d.invalid(f, "invalid UTF-8")
		return nil
	}
	return v
}

// count reads a u32 list count and checks that the bytes left can hold that
// many elements of at least minElem bytes each, so that the caller may
// allocate the list. It returns 0 after an error.
func (d *decoder) count(f field, minElem uint64) int {
	n := d.u32(f.withPart(".count"))
	if d.err != nil {
		return 0
	}
	if !d.need(uint64(n)*minElem, f) {
		return 0
	}
	return int(n)
}

// finish records an *InvalidFieldError if bytes are left after a complete
// message, and returns the recorded error.
func (d *decoder) finish(msg string) error {
	if d.err == nil && d.off != len(d.b) {
		d.err = &InvalidFieldError{
			Field:  msg,
			Reason: strconv.Itoa(len(d.b)-d.off) + " trailing bytes after the message",
		}
	}
	return d.err
}

// beginFrame checks a payload of n bytes against the limit of stream kind k
// and appends the frame header to dst, growing it once to fit the whole
// frame. On error it returns dst unchanged.
func beginFrame(dst []byte, k StreamKind, n uint64) ([]byte, error) {
	if limit := k.limit(); n > limit {
		return dst, &MessageTooLargeError{Stream: k, Size: n, Limit: limit}
	}
	dst = slices.Grow(dst, FrameHeaderLen+int(n))
	return binary.BigEndian.AppendUint32(dst, uint32(n)), nil
}

// appendHeader appends the tag and version that start every payload.
func appendHeader(b []byte, tag uint8, version uint16) []byte {
	b = append(b, tag)
	return binary.BigEndian.AppendUint16(b, version)
}

// appendString appends s as a u32 length and its bytes.
func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// stringSize returns the encoded size of s.
func stringSize(s string) uint64 { return stringLenLen + uint64(len(s)) }

// checkString returns an *InvalidFieldError if s is not valid UTF-8.
func checkString(f field, s string) error {
	if !utf8.ValidString(s) {
		return &InvalidFieldError{Field: f.String(), Reason: "invalid UTF-8"}
	}
	return nil
}

// boolByte encodes a bool as 0 or 1.
func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// hasUpperASCII reports whether s contains an ASCII upper-case letter.
func hasUpperASCII[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

// lowerASCII returns s with ASCII letters lower-cased (other bytes as they
// are) as a string that does not alias a []byte s.
func lowerASCII[T string | []byte](s T) string {
	if !hasUpperASCII(s) {
		return string(s)
	}
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

// appendLowerASCII appends s with ASCII letters lower-cased.
func appendLowerASCII(b []byte, s string) []byte {
	if !hasUpperASCII(s) {
		return append(b, s...)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}
