// Package testpg runs a throwaway PostgreSQL server for tests: one server
// per test binary, started on the first call of DSN, and one fresh database
// per test.
//
// It runs the server binaries of the machine's PostgreSQL (Debian's
// /usr/lib/postgresql/N/bin, the newest N, or initdb and postgres on PATH).
// PostgreSQL refuses to run as root, so when the tests run as root the
// server runs as the postgres user. Its data directory, its Unix socket
// (it listens on no TCP port) and its log live in one temporary directory
// that Stop removes. fsync is off: a crash loses the test data, which is
// thrown away anyway.
//
// Without the binaries, DSN skips the test and says what to install
// (apt-get install postgresql); with the CI environment variable set it
// fails the test instead, so CI cannot pass by skipping.
//
// A test that needs to stop the database under the code it tests (and
// start it again) takes a server of its own with NewServer.
//
// A test whose code runs in other network namespaces (a cluster of
// gateway processes) takes a server with NewServerWith: it also listens on
// a TCP address, and may be started inside a namespace of the test's own.
//
// A package whose tests call DSN stops the server at the end: its TestMain
// calls Main, or wraps testing.M with StopAfter when something else (such
// as goleak) runs the tests.
package testpg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Limits of the shared server's life.
const (
	// startTimeout bounds initdb and the server's start.
	startTimeout = 2 * time.Minute
	// stopTimeout is how long Stop waits for a fast shutdown before it
	// kills the server.
	stopTimeout = 30 * time.Second
	// adminTimeout bounds creating and dropping one database.
	adminTimeout = 30 * time.Second
	// installHint is what a developer without the binaries should do.
	installHint = "install the PostgreSQL server (apt-get install postgresql)"
)

var (
	mu sync.Mutex
	// Guarded by mu.
	shared   *server
	startErr error
	started  bool
	// skipReason is why a test was skipped; "" if none was.
	skipReason string
)

// server is one PostgreSQL server.
type server struct {
	dir  string              // the temporary directory: data/, the socket, postgres.log
	bin  string              // the directory of the server binaries
	cred *syscall.Credential // whom the server runs as; nil for this process's user
	opts Options             // the TCP listener and how the process starts

	// cmd and exited are the running server process, replaced by each
	// launch; not safe for concurrent use (Server documents it).
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// DSN creates a fresh, empty database on the shared server (starting the
// server on first use) and returns a postgres:// DSN for it, as the
// database's owner. The database is dropped when the test ends, after the
// test's own cleanups (register them after calling DSN). It is safe for
// concurrent use by parallel tests.
//
// When no server can be started, DSN skips the test with the reason and
// what to install; with the CI environment variable set, it fails it.
func DSN(tb testing.TB) string {
	tb.Helper()
	s := require(tb)
	name := "t_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	if err := s.admin(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("testpg: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
		defer cancel()
		// FORCE ends connections a failed test left open.
		if err := s.admin(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("testpg: %v", err)
		}
	})
	return s.dsn(name)
}

// Require starts the shared server if needed; when it cannot run, Require
// skips the test, or fails it with the CI environment variable set, as DSN
// does. It lets a group of tests skip once rather than one by one.
func Require(tb testing.TB) {
	tb.Helper()
	require(tb)
}

func require(tb testing.TB) *server {
	tb.Helper()
	s, err := get()
	if err != nil {
		cannotRun(tb, err)
	}
	return s
}

// cannotRun skips tb because no server can run, or fails it with the CI
// environment variable set.
func cannotRun(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf("PostgreSQL tests cannot run (CI is set, so they may not be skipped): %v", err)
	}
	mu.Lock()
	if skipReason == "" {
		skipReason = err.Error()
	}
	mu.Unlock()
	tb.Skipf("skipping the PostgreSQL half: %v", err)
}

// SkipReason returns why a test of this process was skipped for want of a
// PostgreSQL server (what to install), or "" if none was: for a TestMain
// that reports skipped suites, since go test shows a passing package's
// output only with -v.
func SkipReason() string {
	mu.Lock()
	defer mu.Unlock()
	return skipReason
}

// Available starts the shared server if needed and reports why it cannot
// run, or nil. It neither skips nor fails anything.
func Available() error {
	_, err := get()
	return err
}

// Main runs the package's tests, stops the server and exits with the tests'
// code: `func TestMain(m *testing.M) { testpg.Main(m) }`.
func Main(m *testing.M) {
	os.Exit(StopAfter(m).Run())
}

// StopAfter returns m with a Run that stops the server after the tests,
// for runners that take a testing.M-like value:
// `goleak.VerifyTestMain(testpg.StopAfter(m))`.
func StopAfter(m *testing.M) interface{ Run() int } { return stopAfter{m} }

type stopAfter struct{ m *testing.M }

func (s stopAfter) Run() int {
	code := s.m.Run()
	if err := Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testpg: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Stop stops the shared server, if one was started, and removes its
// directory. It is idempotent; a later DSN does not start another server.
func Stop() error {
	mu.Lock()
	defer mu.Unlock()
	started = true
	if startErr == nil {
		startErr = errors.New("the test server was stopped")
	}
	s := shared
	shared = nil
	if s == nil {
		return nil
	}
	return s.stop()
}

// get returns the shared server, starting it on the first call.
func get() (*server, error) {
	mu.Lock()
	defer mu.Unlock()
	if !started {
		started = true
		shared, startErr = start(Options{})
	}
	return shared, startErr
}

// debianBins is where Debian's packages put each major version's server
// binaries.
const debianBins = "/usr/lib/postgresql/*/bin"

// binDir finds the directory holding initdb and postgres: the newest of
// the directories matching pattern, else the one on PATH.
func binDir(pattern string) (string, error) {
	dirs, _ := filepath.Glob(pattern)
	// Newest major version first.
	slices.SortFunc(dirs, func(a, b string) int { return majorOf(b) - majorOf(a) })
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "initdb")) && isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	if initdb, err := exec.LookPath("initdb"); err == nil {
		d := filepath.Dir(initdb)
		if isExecutable(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server binaries (initdb, postgres) in %s or on PATH; %s", pattern, installHint)
}

func majorOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// start initializes a cluster in a new temporary directory and runs the
// server on a Unix socket there, and on the TCP address of o if it names
// one.
func start(o Options) (_ *server, err error) {
	bin, err := binDir(debianBins)
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "outpost-pg-")
	if err != nil {
		return nil, fmt.Errorf("testpg: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("testpg: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()

	data := filepath.Join(dir, "data")
	initdb := command(ctx, cred, dir, filepath.Join(bin, "initdb"),
		"-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("testpg: initdb: %w\n%s", err, out)
	}
	if o.ListenAddr != "" {
		// initdb trusts the loopback addresses only.
		hba, err := os.OpenFile(filepath.Join(data, "pg_hba.conf"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return nil, fmt.Errorf("testpg: %w", err)
		}
		_, err = fmt.Fprintf(hba, "host all all %s trust\n", o.TrustNet)
		if cerr := hba.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("testpg: pg_hba.conf: %w", err)
		}
	}

	s := &server{dir: dir, bin: bin, cred: cred, opts: o}
	if err := s.launch(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// launch runs the server on the data directory and socket in s.dir and
// waits until it accepts connections.
func (s *server) launch(ctx context.Context) error {
	logPath := filepath.Join(s.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testpg: %w", err)
	}
	defer logFile.Close() // the server keeps its own descriptor
	// Not CommandContext: the server outlives ctx, which bounds the start
	// only.
	cmd := command(context.Background(), s.cred, s.dir, filepath.Join(s.bin, "postgres"),
		"-D", filepath.Join(s.dir, "data"),
		"-k", s.dir, // the socket directory
		"-c", "listen_addresses="+s.opts.ListenAddr,
		"-c", "port="+strconv.Itoa(s.opts.port()),
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=200",
		"-c", "shared_buffers=32MB",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If the test binary dies without Stop (a timeout panic, a kill), the
	// kernel tells the server to shut down at once.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	spawn := s.opts.Spawn
	if spawn == nil {
		spawn = (*exec.Cmd).Start
	}
	if err := spawn(cmd); err != nil {
		return fmt.Errorf("testpg: start postgres: %w", err)
	}
	exited := make(chan struct{})
	s.cmd, s.exited = cmd, exited
	// Owned by s: shutdown waits for it.
	go func() {
		cmd.Wait()
		close(exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.shutdown()
		log, _ := os.ReadFile(logPath)
		return fmt.Errorf("testpg: %w\npostgres log:\n%s", err, log)
	}
	return nil
}

// runAs returns the credentials to run the server with: the postgres
// user's when running as root, nil (this process's user) otherwise.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and no postgres user to run the server as (%v); %s", err, installHint)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("testpg: postgres user has ids %q:%q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// command prepares a server binary to run as cred in dir, with the C locale.
func command(ctx context.Context, cred *syscall.Credential, dir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	return cmd
}

// waitReady polls until the server accepts a connection, it exits, or ctx
// ends.
func (s *server) waitReady(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		conn, err := pgx.Connect(ctx, s.dsn("postgres"))
		if err == nil {
			return conn.Close(ctx)
		}
		last = err
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited at start: %v", s.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready after %v: %v", startTimeout, last)
		case <-tick.C:
		}
	}
}

// dsn is the DSN of database name, over the socket in s.dir (which
// carries the port in its name).
func (s *server) dsn(name string) string {
	q := url.Values{"host": {s.dir}, "port": {strconv.Itoa(s.opts.port())}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + name, RawQuery: q.Encode()}).String()
}

// tcpDSN is the DSN of database name over the TCP listener of s.opts.
func (s *server) tcpDSN(name string) string {
	host := net.JoinHostPort(s.opts.ListenAddr, strconv.Itoa(s.opts.port()))
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Host: host, Path: "/" + name, RawQuery: "sslmode=disable"}).String()
}

// admin runs one statement on the maintenance database.
func (s *server) admin(ctx context.Context, stmt string) error {
	conn, err := pgx.Connect(ctx, s.dsn("postgres"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	return nil
}

// stop shuts the server down and removes its directory.
func (s *server) stop() error {
	err := s.shutdown()
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("testpg: %w", rmErr))
	}
	return err
}

// shutdown asks for a fast shutdown, kills the server if that takes too
// long, and waits for it. The data directory stays.
func (s *server) shutdown() error {
	var err error
	if sigErr := s.cmd.Process.Signal(syscall.SIGINT); sigErr == nil {
		timer := time.NewTimer(stopTimeout)
		select {
		case <-s.exited:
		case <-timer.C:
			err = fmt.Errorf("testpg: postgres did not stop within %v; killed", stopTimeout)
			s.cmd.Process.Kill()
			<-s.exited
		}
		timer.Stop()
	} else {
		<-s.exited // it had exited already
	}
	return err
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Server is a PostgreSQL server of one test's own, which the test may stop
// and start again to see what its code does while the database is down.
// Build it with NewServer. Its methods are not safe for concurrent use.
type Server struct {
	s *server
}

// Options adjust a server of NewServerWith. The zero value is NewServer's
// server: a Unix socket only, started as a child of this process.
type Options struct {
	// ListenAddr, if set, is an IP address the server also listens on over
	// TCP, at Port; Server.DSN then answers DSNs over it. Clients from
	// TrustNet connect without a password, as on the Unix socket.
	ListenAddr string
	// Port is the TCP port (and the number in the Unix socket's name). If
	// zero, 5432.
	Port int
	// TrustNet is the CIDR of the TCP clients to trust ("10.1.0.0/16").
	// Required with ListenAddr.
	TrustNet string
	// Spawn starts the server process the package prepared (its start, and
	// again on Server.Start); its error fails the start. A test that runs
	// the server in a network namespace of its own starts it from a thread
	// switched into the namespace (the child inherits the thread's). If
	// nil, cmd.Start.
	Spawn func(cmd *exec.Cmd) error
}

func (o Options) port() int {
	if o.Port == 0 {
		return 5432
	}
	return o.Port
}

// NewServer starts a server for tb alone (initdb and a start take a second
// or two), stopped and removed when the test ends. When no server can run
// it skips tb, or fails it with the CI environment variable set, as DSN
// does.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	return NewServerWith(tb, Options{})
}

// NewServerWith is NewServer with options: a TCP listener, and how the
// process starts. Invalid options fail tb.
func NewServerWith(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.ListenAddr != "" {
		if net.ParseIP(o.ListenAddr) == nil {
			tb.Fatalf("testpg: ListenAddr %q is not an IP address", o.ListenAddr)
		}
		if _, _, err := net.ParseCIDR(o.TrustNet); err != nil {
			tb.Fatalf("testpg: TrustNet: %v", err)
		}
	}
	s, err := start(o)
	if err != nil {
		cannotRun(tb, err)
	}
	tb.Cleanup(func() {
		if err := s.stop(); err != nil {
			tb.Errorf("testpg: %v", err)
		}
	})
	return &Server{s: s}
}

// DSN creates a fresh database on the server, owned by the DSN's user, and
// returns a postgres:// DSN for it: over the TCP listener if the server has
// one (Options.ListenAddr), else over the Unix socket. It stays until the
// server is removed.
func (srv *Server) DSN(tb testing.TB) string {
	tb.Helper()
	dsn, err := srv.NewDatabase(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return dsn
}

// NewDatabase is DSN outside a test: it returns the error instead of
// failing a test. ctx bounds the creation, itself bounded at 30 s.
func (srv *Server) NewDatabase(ctx context.Context) (string, error) {
	name := "t_" + randomHex(8)
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	if err := srv.s.admin(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("testpg: %w", err)
	}
	if srv.s.opts.ListenAddr != "" {
		return srv.s.tcpDSN(name), nil
	}
	return srv.s.dsn(name), nil
}

// Launch starts a server of the caller's own outside a test (a benchmark
// program), as NewServer does in one: on a Unix socket only, as the
// postgres user when this process runs as root. The error says why no
// server can run (no server binaries, no postgres user: what to install),
// or why it did not start. The caller removes it with Close; if this
// process dies first, the kernel tells the server to shut down.
func Launch() (*Server, error) {
	s, err := start(Options{})
	if err != nil {
		return nil, err
	}
	return &Server{s: s}, nil
}

// Close shuts the server down and removes its directory, as the cleanup of
// NewServer does: for a server of Launch. Call it once.
func (srv *Server) Close() error { return srv.s.stop() }

// Stop shuts the server down (a fast shutdown: connections are cut); its
// data stays for Start.
func (srv *Server) Stop(tb testing.TB) {
	tb.Helper()
	if err := srv.s.shutdown(); err != nil {
		tb.Fatal(err)
	}
}

// Start starts a stopped server again on the same data and socket, so
// DSNs given before reach it again, and waits until it accepts
// connections.
func (srv *Server) Start(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := srv.s.launch(ctx); err != nil {
		tb.Fatal(err)
	}
}
