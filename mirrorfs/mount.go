package mirrorfs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// Errors returned by Mount for bad options.
var (
	ErrNoSink     = errors.New("mirrorfs: no sink")
	ErrBadBacking = errors.New("mirrorfs: backing is not a directory")
	ErrBadMode    = errors.New("mirrorfs: unknown sync mode")
)

// Options configures a mount.
type Options struct {
	Backing string // the backing directory (must exist)
	Sink    wire.OpSink
	// Mode: ModeAsync, nothing waits; ModeFsync, fsync/fdatasync wait;
	// ModeSync, every mutating op waits. The zero value is ModeAsync
	// (wire's numbering); the command line defaults to ModeFsync.
	Mode wire.SyncMode
	// Run names this run of the master; its RunStart is the first op.
	Run wire.RunID
	// Head is the last seq numbered before this run (seqs continue
	// across runs of the master); the RunStart is Head+1.
	Head uint64
	// Unclean: the previous run ended without a clean stop; a
	// wire.Unclean op follows the RunStart.
	Unclean bool
	// Policy is what the mount allows beyond ordinary entries: the
	// strictest of the master's configuration and its slaves' (policy.go;
	// Server.SetPolicy changes it). nil: everything the protocol carries.
	Policy *wire.Policy
	// Devices mounts without nodev, so that device nodes made through
	// the mount (when the policy allows them) can be opened through it as
	// on the backing filesystem. The mount is always nosuid.
	Devices    bool
	AllowOther bool         // allow_other (default_permissions is always on)
	Debug      bool         // go-fuse request logging
	Logger     *slog.Logger // nil: slog.Default()
}

// Server is a mounted mirror filesystem.
type Server struct {
	srv  *fuse.Server
	m    *mirror
	reqs *RequestCounter
	// served is closed when Serve has returned and the backing dir's
	// descriptor is closed.
	served chan struct{}
}

// Mount mounts the mirror of o.Backing at mountpoint and returns once the
// mount is ready.
//
// Mount sets the process umask to 0: the kernel has already applied the
// calling application's umask to every mode it sends (go-fuse does not ask
// for FUSE_DONT_MASK), and a second umask in the daemon would turn a
// requested 0620 into 0600 on the backing dir. Nothing else in the master
// process may rely on its umask.
func Mount(mountpoint string, o Options) (*Server, error) {
	if o.Sink == nil {
		return nil, ErrNoSink
	}
	if o.Mode > wire.ModeSync {
		return nil, fmt.Errorf("%w: %d", ErrBadMode, o.Mode)
	}
	backing, rootFd, st, err := openBacking(o.Backing)
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}

	unix.Umask(0)

	m := newMirror(o, backing, rootFd, log)
	m.startRun(o, &st)
	rootData := &fs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}
	root := &node{LoopbackNode: &fs.LoopbackNode{RootData: rootData}, m: m}
	rootData.RootNode = root

	opts := mountOptions(o, backing, log)
	raw := &rawFS{RawFileSystem: fs.NewNodeFS(root, opts), m: m}
	counter := &RequestCounter{RawFileSystem: raw, sum: &processRequests}

	srv, err := fuse.NewServer(counter, mountpoint, &opts.MountOptions)
	if err != nil {
		m.closeRoot()
		return nil, fmt.Errorf("mirrorfs: mount %q: %w", mountpoint, err)
	}
	served := make(chan struct{})
	go func() {
		// Serve returns once its request loops have ended: no request
		// can reach the backing dir's descriptor any more.
		srv.Serve()
		m.closeRoot()
		close(served)
	}()
	if err := srv.WaitMount(); err != nil {
		if uerr := srv.Unmount(); uerr != nil {
			log.Error("mirrorfs: unmount after failed mount", "mountpoint", mountpoint, "err", uerr)
		}
		return nil, fmt.Errorf("mirrorfs: mount %q: %w", mountpoint, err)
	}
	return &Server{srv: srv, m: m, reqs: counter, served: served}, nil
}

// openBacking opens the backing directory once; everything below reaches
// it through this descriptor (backing.go), which Serve's goroutine closes
// when the mount ends. It returns the directory's absolute path, the
// descriptor and the directory's attributes.
func openBacking(dir string) (string, int, syscall.Stat_t, error) {
	backing, err := filepath.Abs(dir)
	if err != nil {
		return "", -1, syscall.Stat_t{}, fmt.Errorf("mirrorfs: backing %q: %w", dir, err)
	}
	rootFd, st, err := openRoot(backing)
	if err != nil {
		return "", -1, st, fmt.Errorf("mirrorfs: backing %q: %w", backing, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		unix.Close(rootFd)
		return "", -1, st, fmt.Errorf("%w: %q", ErrBadBacking, backing)
	}
	return backing, rootFd, st, nil
}

// newMirror makes the state shared by the mount's nodes, numbering from
// o.Head on.
func newMirror(o Options, backing string, rootFd int, log *slog.Logger) *mirror {
	m := &mirror{backing: backing, rootFd: rootFd, mode: o.Mode, log: log, root: os.Getuid() == 0, run: o.Run}
	m.seq.sink = o.Sink
	pol := wire.PermissivePolicy
	if o.Policy != nil {
		pol = *o.Policy
	}
	m.gate.p.Store(&pol)
	m.seq.last.Store(o.Head)
	return m
}

// startRun emits the first ops of every run: a new run begins (the slave
// drops the handles of earlier runs), followed by an Unclean if the
// previous run crashed (slaves apply tolerantly until compared); the next
// carries the root directory's own attributes (st), which no other op
// would carry until something changes them (a replica made on another
// filesystem starts with that filesystem's mode and times).
func (m *mirror) startRun(o Options, st *syscall.Stat_t) {
	m.emit(&wire.RunStart{Run: o.Run})
	if o.Unclean {
		m.emit(&wire.Unclean{})
	}
	m.emit(&wire.Setattr{
		Path:  "",
		Valid: wire.SetMode | wire.SetUid | wire.SetGid | wire.SetMtime,
		Mode:  st.Mode & 0o7777,
		Uid:   st.Uid,
		Gid:   st.Gid,
		Atime: wire.Time{Omit: true},
		Mtime: wireTime(st.Mtim),
	})
}

// mountOptions are go-fuse's options for the mirror: the bare loopback's
// (BareLoopbackOptions), logging through log, and what o asks for.
func mountOptions(o Options, backing string, log *slog.Logger) *fs.Options {
	opts := BareLoopbackOptions(backing)
	opts.Logger = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	mopts := &opts.MountOptions
	mopts.AllowOther = o.AllowOther
	if o.Devices {
		mopts.Options = append(slices.Clone(mopts.Options), "dev")
	}
	mopts.Debug = o.Debug
	mopts.Logger = slog.NewLogLogger(log.Handler(), slog.LevelInfo)
	return opts
}

// Wait blocks until the filesystem is unmounted (umount of the mount
// point, or Unmount) and the backing dir's descriptor is closed.
func (s *Server) Wait() {
	s.srv.Wait()
	<-s.served
}

// Unmount unmounts the filesystem and closes the backing dir's
// descriptor. It fails with EBUSY while files on the mount are open.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		return fmt.Errorf("mirrorfs: unmount: %w", err)
	}
	<-s.served
	return nil
}

// Requests returns how many FUSE requests this mount has received so far,
// by opcode name (RequestCounter.Counts).
func (s *Server) Requests() map[string]uint64 { return s.reqs.Counts() }

// LastSeq returns the highest seq handed to the sink.
func (s *Server) LastSeq() uint64 { return s.m.seq.lastSeq() }
