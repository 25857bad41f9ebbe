package dataplane

import (
	"io"
	"sync"
)

// ControlWriter writes framed control messages to a control stream. Several
// goroutines may Send at once (the periodic sender, the message handler):
// each frame is written whole, never interleaved. Create it with
// NewControlWriter.
type ControlWriter struct {
	mu  sync.Mutex
	dst io.Writer
	buf []byte
}

// NewControlWriter returns a writer of control messages to dst.
func NewControlWriter(dst io.Writer) *ControlWriter {
	return &ControlWriter{dst: dst}
}

// Send encodes m and writes its frame with one Write call. Encoding errors
// (see AppendFrame) are returned before anything is written; write errors
// are returned as they are.
func (w *ControlWriter) Send(m ControlMessage) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	frame, err := m.AppendFrame(w.buf[:0])
	if err != nil {
		return err
	}
	w.buf = frame
	_, err = w.dst.Write(frame)
	return err
}
