package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"sync"
)

// stdinLines reads this child's stdin (the parent's requests) line by line
// on a goroutine and sends each line on the returned channel, which is
// closed at EOF: the parent closes the pipe when it is done, or dies. stop
// interrupts a pending read and waits for the goroutine; call it once.
//
// On Linux stdin is switched to non-blocking mode first, so that it joins
// Go's poller and Close interrupts a blocked read (a blocking pipe cannot
// be interrupted: the goroutine would only end with the process).
func stdinLines() (lines <-chan []byte, stop func()) {
	f := os.Stdin
	if setNonblock(0) == nil {
		f = os.NewFile(0, "stdin")
	}
	ch := make(chan []byte)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { readLines(f, ch, done) })
	return ch, func() {
		close(done)
		f.Close()
		wg.Wait()
	}
}

// readLines sends each line of r on lines until EOF or a read error (then
// closes lines) or until done is closed.
func readLines(r io.Reader, lines chan<- []byte, done <-chan struct{}) {
	defer close(lines)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxRequestLine)
	for sc.Scan() {
		select {
		case lines <- bytes.Clone(sc.Bytes()):
		case <-done:
			return
		}
	}
}
