package load

// Path is a way bytes go from the benchmark's client to a target.
type Path int

// The paths, in the order the throughput load runs and the report lists
// them.
const (
	PathTCP             Path = iota // loopback TCP, both ends in this process
	PathQUICLocal                   // raw QUIC, both ends in this process
	PathQUIC                        // raw QUIC, server in a child process: "b"
	PathRaw                         // TCP → bench entry → gateway → QUIC → agent → TCP target
	PathConnect                     // TCP → outpost connect → WebSocket → gateway → QUIC → agent → TCP: "c"
	PathConnectParallel             // Settings.Parallel sessions of PathConnect at once
	NumPaths
)

var pathNames = [NumPaths]string{
	"direct TCP",
	"raw quic-go stream, one process",
	"raw quic-go stream, two processes (b)",
	"Outpost raw session via the bench TCP entry (no WebSocket)",
	"Outpost single session via `outpost connect` (c)",
	"Outpost parallel sessions via `outpost connect`, aggregate",
}

// pathSlugs name a path's files.
var pathSlugs = [NumPaths]string{"tcp", "quic-local", "quic", "raw", "connect", "connect-parallel"}

// cpuNames name the processes a path's CPU time is read from (see
// Rig.cpuPIDs).
var cpuNames = [NumPaths][]string{
	{"client + target"},
	{"client + server"},
	{"client", "server"},
	{"gateway", "agent", "client + target"},
	{"gateway", "agent", "connect", "client + target"},
	{"gateway", "agent", "connect", "client + target"},
}

// String is the path's name in the report.
func (p Path) String() string { return pathNames[p] }

// Processes names the processes whose CPU time the path is charged, in the
// order of CPUTotals.Ticks: for the Outpost paths, the gateway and the
// agent first.
func (p Path) Processes() []string { return cpuNames[p] }

// Outpost says whether the path goes through the gateway and the agent.
func (p Path) Outpost() bool { return p >= PathRaw }

// Dir is a direction of a transfer.
type Dir int

// The two directions.
const (
	DirUp   Dir = iota // client → target (sink)
	DirDown            // target → client (source)
	NumDirs
)

var dirNames = [NumDirs]string{"client → target", "target → client"}

// String is the direction's name in the report.
func (d Dir) String() string { return dirNames[d] }

// Setup is a way to open a session, as the setup load times it.
type Setup int

// The session setups.
const (
	SetupDirect   Setup = iota // TCP connect to the echo target
	SetupQUIC                  // a new stream on an open raw QUIC connection (two processes)
	SetupRaw                   // through the bench entry, the gateway and the agent
	SetupEntry                 // through the WebSocket entry, with the client library
	SetupStanding              // a session on the client library's standing connection
	SetupCold                  // a new client library: its standing connection, then one session
	SetupGateway               // DialAgent inside the gateway child
	NumSetups
)

var setupNames = [NumSetups]string{
	"direct TCP",
	"raw quic-go stream, two processes",
	"Outpost raw session via the bench TCP entry",
	"Outpost via the WebSocket entry (connect library: TLS + upgrade + echo + close)",
	"Outpost via the standing connection (connect library: stream + echo + close)",
	"Outpost first session of a cold client (connect library: TLS + upgrade + stream + echo + close)",
	"Outpost in gateway (DialAgent + echo + close)",
}

// String is the setup's name in the report.
func (s Setup) String() string { return setupNames[s] }
