package dataplane

import (
	"bytes"
	"errors"
	"sync"
	"testing"
)

func TestControlWriterFramesAreWhole(t *testing.T) {
	var buf lockedBuffer
	w := NewControlWriter(&buf)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				if err := w.Send(&Heartbeat{Version: ProtocolVersion, TimestampMs: uint64(i*1000 + j)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	r := NewControlReader(bytes.NewReader(buf.b.Bytes()))
	for n := range 400 {
		if _, err := r.ReadControl(); err != nil {
			t.Fatalf("frame %d: %v", n, err)
		}
	}
}

func TestControlWriterRejectsBeforeWriting(t *testing.T) {
	var buf lockedBuffer
	w := NewControlWriter(&buf)
	err := w.Send(&CertRenewalRequest{Version: ProtocolVersion, CSRPEM: string(make([]byte, MaxControlPayload))})
	var tooLarge *MessageTooLargeError
	if !errors.As(err, &tooLarge) || buf.b.Len() != 0 {
		t.Fatalf("got %v with %d bytes written", err, buf.b.Len())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
