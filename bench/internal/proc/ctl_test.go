package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// childEnv makes the test binary play a controlled child (see testChild).
const childEnv = "PROC_TEST_CTL_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(testChild(mode))
	}
	os.Exit(m.Run())
}

type testRequest struct {
	Op string `json:"op"`
	N  int    `json:"n"`
}

type testResponse struct {
	Error  string `json:"error,omitempty"`
	Double int    `json:"double"`
}

// testChild serves "double" requests; in mode "fail" its work fails at
// once.
func testChild(mode string) int {
	srv := Server[testRequest]{
		Hello: func(context.Context) (any, error) { return map[string]int{"pid": os.Getpid()}, nil },
		Answer: func(_ context.Context, r testRequest) any {
			if r.Op != "double" {
				return testResponse{Error: "unknown op " + r.Op}
			}
			return testResponse{Double: 2 * r.N}
		},
	}
	if mode == "fail" {
		srv.Run = func(context.Context) error { return errors.New("boom") }
	}
	if err := srv.Serve(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "test child:", err)
		return 1
	}
	return 0
}

func startTestChild(t *testing.T, ctx context.Context, mode string) *CtlChild {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(childEnv, mode)
	var hello struct {
		PID int `json:"pid"`
	}
	c, err := StartCtl(ctx, "test", exe, nil, &hello)
	if err != nil {
		t.Fatal(err)
	}
	if hello.PID != c.PID() {
		t.Errorf("hello pid = %d, want %d", hello.PID, c.PID())
	}
	return c
}

// TestCtlChild runs the protocol both ways: a request answered, one
// refused by the child, one it cannot decode, and a clean exit when the
// parent closes its stdin.
func TestCtlChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := startTestChild(t, ctx, "serve")
	var resp testResponse
	if err := c.Call(ctx, testRequest{Op: "double", N: 21}, &resp, 10*time.Second); err != nil || resp.Double != 42 {
		t.Errorf("double 21 = %+v, %v; want 42", resp, err)
	}
	if err := c.Call(ctx, testRequest{Op: "triple"}, &resp, 10*time.Second); err == nil || err.Error() != "unknown op triple" {
		t.Errorf("unknown op: error %v, want \"unknown op triple\"", err)
	}
	if err := c.Call(ctx, "not an object", &resp, 10*time.Second); err == nil || !strings.HasPrefix(err.Error(), "bad request: ") {
		t.Errorf("undecodable request: error %v, want a bad request", err)
	}
	c.Stop()
	if done, err := c.Exited(); !done || err != nil {
		t.Errorf("after Stop: exited %v, %v; want a clean exit", done, err)
	}
}

// TestCtlChildWorkFails checks that a child whose work ends early stops
// serving and exits non-zero.
func TestCtlChildWorkFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := startTestChild(t, ctx, "fail")
	defer c.Stop()
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the failed child did not exit")
	}
	if _, err := c.Exited(); err == nil {
		t.Error("the failed child exited with status 0")
	}
	var resp testResponse
	if err := c.Call(ctx, testRequest{Op: "double", N: 1}, &resp, 10*time.Second); err == nil {
		t.Errorf("call to a failed child answered %+v", resp)
	}
}
