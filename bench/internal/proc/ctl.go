package proc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// The control protocol between the benchmark and a child that is the
// benchmark re-executed in another mode: JSON lines. The child prints one
// hello line on stdout, then answers each request line written to its stdin
// with one response line, and exits when its stdin ends (the parent is done,
// or gone). A response object whose "error" field is not empty is a
// failure; the other fields are the two sides' business.

// maxLine bounds one line of the protocol.
const maxLine = 64 << 10

// failure is the part of a response every answer shares.
type failure struct {
	Error string `json:"error,omitempty"`
}

// CtlChild is a child process controlled through the JSON-line protocol.
// Its methods are not safe for concurrent use.
type CtlChild struct {
	*Child
	stdin    io.WriteCloser
	lines    chan []byte   // stdout lines; closed at EOF
	readDone chan struct{} // closed when the stdout reader has ended
}

// StartCtl starts exe with args as a controlled child named name, and
// decodes its hello line into hello, waiting at most a minute (and no
// longer than ctx). On error nothing is left running.
func StartCtl(ctx context.Context, name, exe string, args []string, hello any) (_ *CtlChild, err error) {
	cmd := exec.Command(exe, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// A plain pipe (not StdoutPipe) so that reading it never races with
	// Wait: the reader owns the read end and sees EOF when the child exits.
	r, w, err := os.Pipe()
	if err != nil {
		stdin.Close()
		return nil, err
	}
	cmd.Stdout = w
	c, err := Start(name, cmd)
	w.Close()
	if err != nil {
		stdin.Close()
		r.Close()
		return nil, err
	}
	g := &CtlChild{Child: c, stdin: stdin, lines: make(chan []byte, 1), readDone: make(chan struct{})}
	go func() { // ends at EOF, which the child's exit brings; Stop waits for it
		defer close(g.readDone)
		defer close(g.lines)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 4096), maxLine)
		for sc.Scan() {
			g.lines <- bytes.Clone(sc.Bytes())
		}
	}()
	defer func() {
		if err != nil {
			g.Stop()
		}
	}()
	line, err := g.next(ctx, time.Minute)
	if err != nil {
		return nil, fmt.Errorf("%s child hello: %w", name, err)
	}
	if err := json.Unmarshal(line, hello); err != nil {
		return nil, fmt.Errorf("%s child hello %q: %w", name, line, err)
	}
	return g, nil
}

// next returns the child's next stdout line, waiting at most timeout.
func (g *CtlChild) next(ctx context.Context, timeout time.Duration) ([]byte, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-g.lines:
		if !ok {
			<-g.done
			return nil, fmt.Errorf("%s child closed its output (exit: %v)", g.name, g.err)
		}
		return line, nil
	case <-t.C:
		return nil, fmt.Errorf("no answer from the %s child within %v", g.name, timeout)
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// Call sends req as one JSON line and decodes the answer into resp, waiting
// at most timeout (and no longer than ctx). An answer with an "error" is
// returned as an error holding its text, and resp is left alone.
func (g *CtlChild) Call(ctx context.Context, req, resp any, timeout time.Duration) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := g.stdin.Write(append(b, '\n')); err != nil {
		return err
	}
	line, err := g.next(ctx, timeout)
	if err != nil {
		return err
	}
	var f failure
	if err := json.Unmarshal(line, &f); err != nil {
		return fmt.Errorf("bad response %q: %w", line, err)
	}
	if f.Error != "" {
		return errors.New(f.Error)
	}
	if err := json.Unmarshal(line, resp); err != nil {
		return fmt.Errorf("bad response %q: %w", line, err)
	}
	return nil
}

// Stop closes the child's stdin (its signal to shut down gracefully),
// escalates to SIGTERM after 15 s and to SIGKILL 5 s later, and waits for
// the process and the stdout reader. Call it once.
func (g *CtlChild) Stop() {
	g.stdin.Close()
	g.wait(15 * time.Second)
	g.Child.Stop(5 * time.Second)
	// The reader ends at EOF, which the child's exit brings; lines may
	// still hold an unread line, so drain.
	for range g.lines {
	}
	<-g.readDone
}

// Server is the child's side of the protocol, on this process's stdin and
// stdout. Req is what a request line decodes into. Hello and Answer are
// required; the zero value of the others means none.
type Server[Req any] struct {
	// Run is the child's work, if any: Serve runs it on a goroutine with a
	// context that ends when Serve is done; if it returns before, Serve
	// fails.
	Run func(context.Context) error
	// Hello returns the first line. Serve calls it once Run has started.
	Hello func(context.Context) (any, error)
	// Answer returns the response to one request, called one request at a
	// time. A request line that does not decode is answered with an error
	// without calling it.
	Answer func(context.Context, Req) any
	// Done is called when no more requests will come, on every path out of
	// Serve, before Run's context ends.
	Done func()
}

// Serve writes the hello line and answers requests until stdin ends or ctx
// ends (then it returns nil), or Run returns (an error), and returns once
// Run has returned. Errors are Hello's, Run's, or writing to stdout.
func (s Server[Req]) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	stopped := make(chan error, 1)
	if s.Run != nil {
		wg.Go(func() { stopped <- s.Run(ctx) })
	}
	if s.Done != nil {
		defer s.Done()
	}
	hello, err := s.Hello(ctx)
	if err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(hello); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	lines, stopReading := stdinLines()
	defer stopReading()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-stopped:
			return fmt.Errorf("stopped early: %v", err)
		case line, ok := <-lines:
			if !ok {
				return nil // the parent closed stdin: we are done
			}
			var req Req
			var resp any
			if err := json.Unmarshal(line, &req); err != nil {
				resp = failure{Error: "bad request: " + err.Error()}
			} else {
				resp = s.Answer(ctx, req)
			}
			if err := out.Encode(resp); err != nil {
				return fmt.Errorf("write response: %w", err)
			}
		}
	}
}

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
	sc.Buffer(make([]byte, 4096), maxLine)
	for sc.Scan() {
		select {
		case lines <- bytes.Clone(sc.Bytes()):
		case <-done:
			return
		}
	}
}
