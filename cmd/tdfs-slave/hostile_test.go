package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/certs"
	"github.com/tdfs/tdfs/internal/treecmp"
	"github.com/tdfs/tdfs/quictransport"
	"github.com/tdfs/tdfs/replayer"
	"github.com/tdfs/tdfs/slave"
	"github.com/tdfs/tdfs/wire"
)

// A hostile master: it holds a valid master certificate and speaks the
// protocol by hand, to a real slave (Server, handler, replayer) on a
// temporary root. Each attack must close its connection with the expected
// code and a log line naming the reason, change nothing in the root or
// its parent directory, and leave the slave serving the next master.

// hostilePKI is a CA with a master and a slave certificate.
type hostilePKI struct {
	pool          *x509.CertPool
	master, slave tls.Certificate
}

var (
	pkiOnce sync.Once
	pkiVal  *hostilePKI
	pkiErr  error
)

func testPKI(t *testing.T) *hostilePKI {
	t.Helper()
	pkiOnce.Do(func() {
		ca, err := certs.NewCA("hostile CA", certs.Ed25519)
		if err != nil {
			pkiErr = err
			return
		}
		issue := func(o certs.IssueOptions) tls.Certificate {
			c, k, err := ca.Issue(o)
			if err != nil {
				pkiErr = err
			}
			return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k, Leaf: c}
		}
		p := &hostilePKI{pool: x509.NewCertPool()}
		p.pool.AddCert(ca.Cert)
		p.master = issue(certs.IssueOptions{Name: "evil-master", Role: certs.RoleMaster})
		p.slave = issue(certs.IssueOptions{Name: "slave", Hosts: []string{"127.0.0.1"}, Role: certs.RoleSlave})
		pkiVal = p
	})
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pkiVal
}

// lockedBuf is a log destination safe for concurrent writes.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// hostileSlave is a running slave: base is the root's parent, holding
// the root "r" and files a hostile master would like to reach.
type hostileSlave struct {
	base, root string
	addr       string
	logs       *lockedBuf
	srv        *quictransport.Slave
}

var hostileEpoch = wire.Epoch{'h', 'o', 's', 't'}

func startHostileSlave(t *testing.T, o replayer.Options) *hostileSlave {
	t.Helper()
	p := testPKI(t)
	base := t.TempDir()
	root := filepath.Join(base, "r")
	for _, d := range []string{root, filepath.Join(base, "victimdir")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "victim"), []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	o.Logger = log
	r, err := replayer.New(root, o)
	if err != nil {
		t.Fatal(err)
	}
	h, err := slave.New(r, root, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := quictransport.NewSlave(quictransport.SlaveConfig{
		Listen: "127.0.0.1:0", TLS: certs.ServerConfig(p.slave, p.pool, nil), Handler: h, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		h.Close()
		r.Close()
		if t.Failed() {
			t.Logf("slave log:\n%s", logs.String())
		}
	})
	return &hostileSlave{base: base, root: root, addr: srv.Addr().String(), logs: logs, srv: srv}
}

// rawMaster is a master connection driven by hand.
type rawMaster struct {
	t    *testing.T
	conn *quic.Conn
	ctrl *quic.Stream
	fr   *wire.FrameReader
	ack  wire.HelloAck
	next uint64 // the seq of the next op
}

// dial connects, sends Hello and reads the HelloAck.
func (s *hostileSlave) dial(t *testing.T) *rawMaster {
	t.Helper()
	p := testPKI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, s.addr, certs.ClientConfig(p.master, p.pool, "127.0.0.1"),
		&quic.Config{HandshakeIdleTimeout: 5 * time.Second, MaxIdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	ctrl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := wire.Hello{Version: wire.Version, Epoch: hostileEpoch, Run: wire.RunID{1}, First: 1}
	if _, err := ctrl.Write(wire.AppendFrame(nil, wire.FrameHello, h.Append(nil), nil)); err != nil {
		t.Fatal(err)
	}
	m := &rawMaster{t: t, conn: conn, ctrl: ctrl, fr: wire.NewFrameReader(ctrl, nil)}
	ctrl.SetReadDeadline(time.Now().Add(30 * time.Second))
	kind, body, err := m.fr.Next()
	if err != nil || kind != wire.FrameHelloAck {
		t.Fatalf("hello-ack: %v %v", kind, err)
	}
	if m.ack, err = wire.ParseHelloAck(body); err != nil {
		t.Fatal(err)
	}
	m.next = m.ack.Applied + 1
	return m
}

func opFrame(seq uint64, op wire.Op) []byte {
	return wire.AppendFrame(nil, wire.FrameOp, wire.AppendOp(nil, seq, op), nil)
}

// send sends each op on the control stream, numbered from next.
func (m *rawMaster) send(ops ...wire.Op) {
	m.t.Helper()
	var b []byte
	for _, op := range ops {
		b = append(b, opFrame(m.next, op)...)
		m.next++
	}
	m.write(b)
}

func (m *rawMaster) write(b []byte) {
	m.t.Helper()
	if _, err := m.ctrl.Write(b); err != nil {
		m.t.Fatal(err)
	}
}

// waitApplied reads acks until the slave applied every op sent.
func (m *rawMaster) waitApplied() {
	m.t.Helper()
	m.ctrl.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		kind, body, err := m.fr.Next()
		if err != nil {
			m.t.Fatalf("waiting for op %d to be applied: %v (%v)", m.next-1, err, context.Cause(m.conn.Context()))
		}
		switch kind {
		case wire.FrameAck:
			a, err := wire.ParseAck(body)
			if err != nil {
				m.t.Fatal(err)
			}
			if a.Applied >= m.next-1 {
				return
			}
		case wire.FrameError:
			e, _ := wire.ParseError(body)
			m.t.Fatalf("the slave gave up: %v", e)
		}
	}
}

// closedWith waits for the slave to close the connection and returns its
// code.
func (m *rawMaster) closedWith() (wire.ErrorCode, string) {
	m.t.Helper()
	select {
	case <-m.conn.Context().Done():
	case <-time.After(30 * time.Second):
		m.t.Fatal("the slave did not close the connection")
	}
	cause := context.Cause(m.conn.Context())
	ae, ok := errors.AsType[*quic.ApplicationError](cause)
	if !ok || !ae.Remote {
		m.t.Fatalf("connection ended by %v, not by the slave", cause)
	}
	return wire.ErrorCode(ae.ErrorCode), ae.ErrorMessage
}

// snapshotParent copies the root's parent, root included, preserving
// everything treecmp compares.
func snapshotParent(t *testing.T, s *hostileSlave) string {
	t.Helper()
	ref := filepath.Join(t.TempDir(), "ref")
	if out, err := exec.Command("cp", "-a", s.base, ref).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
	return ref
}

func requireUnchanged(t *testing.T, s *hostileSlave, ref string) {
	t.Helper()
	for _, c := range []struct{ what, a, b string }{
		{"the slave's root", filepath.Join(ref, "r"), s.root},
		{"the root's parent directory", ref, s.base},
	} {
		d, err := treecmp.Diff(c.a, c.b, treecmp.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if d != "" {
			t.Errorf("%s changed:\n%s", c.what, d)
		}
	}
}

var omitTime = wire.Time{Omit: true}

// TestHostileMaster sends each attack after a few ordinary ops.
func TestHostileMaster(t *testing.T) {
	tm := wire.Time{Sec: 1_700_000_000}
	big := make([]byte, 8)
	type attack struct {
		name  string
		opts  replayer.Options
		setup []wire.Op
		// send sends the attack on m, whose next op is m.next.
		send func(m *rawMaster)
		code wire.ErrorCode
		log  string
	}
	ops := func(ops ...wire.Op) func(m *rawMaster) { return func(m *rawMaster) { m.send(ops...) } }
	file := &wire.Create{Path: "f", Handle: 1, Mode: 0o644, Mtime: tm, DirMtime: tm}
	attacks := []attack{
		// Refused by the slave's policy: nothing changes, and the slave
		// asks to be compared, leaving out of its replica what it does
		// not hold (the master's mount refuses these before they reach
		// any slave; a master that sends them anyway does not halt it).
		{name: "mknod of a char device", send: ops(&wire.Mknod{Path: "null", Mode: unix.S_IFCHR | 0o666, Rdev: unix.Mkdev(1, 3), Mtime: tm, DirMtime: tm}),
			code: wire.CodeNeedsResync, log: "mknod of a character device"},
		{name: "mknod of a block device", send: ops(&wire.Mknod{Path: "sda", Mode: unix.S_IFBLK | 0o660, Rdev: unix.Mkdev(8, 0), Mtime: tm, DirMtime: tm}),
			code: wire.CodeNeedsResync, log: "mknod of a block device"},
		{name: "setuid create", send: ops(&wire.Create{Path: "suid", Mode: 0o4755, Mtime: tm, DirMtime: tm}),
			code: wire.CodeNeedsResync, log: "has the setuid bit"},
		{name: "setgid chmod", setup: []wire.Op{file}, send: ops(&wire.Setattr{Path: "f", Valid: wire.SetMode, Mode: 0o2755, Mtime: tm}),
			code: wire.CodeNeedsResync, log: "has the setgid bit"},
		{name: "file capabilities", setup: []wire.Op{file},
			send: ops(&wire.Setxattr{Path: "f", Name: "security.capability", Value: []byte{0, 0, 0, 2}}),
			code: wire.CodeNeedsResync, log: "grants file capabilities"},
		{name: "trusted xattr when not root", opts: replayer.Options{Chown: false}, setup: []wire.Op{file},
			send: ops(&wire.Setxattr{Path: "f", Name: "trusted.overlay.opaque", Value: []byte("y")}),
			code: wire.CodeNeedsResync, log: "only a slave running as root"},
		{name: "unknown xattr namespace", setup: []wire.Op{file},
			send: ops(&wire.Setxattr{Path: "f", Name: "system.sockprotoname", Value: []byte("x")}),
			code: wire.CodeNeedsResync, log: "namespace not replicated"},
		{name: "write past the size bound", setup: []wire.Op{file},
			send: ops(&wire.Write{Handle: 1, Off: replayer.DefaultMaxFileSize, Data: big, Mtime: tm}),
			code: wire.CodeNeedsResync, log: "beyond the largest file this slave accepts"},
		{name: "truncate past the size bound", opts: replayer.Options{MaxFileSize: 1 << 20}, setup: []wire.Op{file},
			send: ops(&wire.Setattr{Handle: 1, Valid: wire.SetSize, Size: 1<<20 + 1, Mtime: tm}),
			code: wire.CodeNeedsResync, log: "truncate ends at 1048577"},
		{name: "too many handles", opts: replayer.Options{MaxHandles: 1}, setup: []wire.Op{file},
			send: ops(&wire.Create{Path: "g", Handle: 2, Mode: 0o644, Mtime: tm, DirMtime: tm}),
			code: wire.CodeNeedsResync, log: "keeps at most 1 open"},
		{name: "unknown op code", send: func(m *rawMaster) {
			body := append(binary.AppendUvarint(nil, m.next), 200, 1, 2, 3)
			m.write(wire.AppendFrame(nil, wire.FrameOp, body, nil))
		}, code: wire.CodeProtocol, log: "unknown op type 200"},
		{name: "write through a handle never opened", send: ops(&wire.Write{Handle: 99, Data: big, Mtime: tm}),
			code: wire.CodeNeedsResync, log: "unknown handle 99"},
		{name: "seq below the next", setup: []wire.Op{file}, send: func(m *rawMaster) {
			m.write(opFrame(m.next-1, &wire.Unlink{Path: "f", DirMtime: tm}))
		}, code: wire.CodeProtocol, log: "arrived but the next op expected is"},
		{name: "seq backwards on the control stream", send: func(m *rawMaster) {
			// Op next+1 waits for op next (a write in flight?); then next
			// comes, after it, on the control stream.
			m.write(append(opFrame(m.next+1, &wire.Unlink{Path: "x", DirMtime: tm}),
				opFrame(m.next, &wire.Mkdir{Path: "x", Mode: 0o755, Mtime: tm, DirMtime: tm})...))
		}, code: wire.CodeProtocol, log: "on the control stream after op"},
		{name: "seq skips", send: func(m *rawMaster) {
			m.write(opFrame(m.next+10_000, &wire.Mkdir{Path: "x", Mode: 0o755, Mtime: tm, DirMtime: tm}))
		}, code: wire.CodeProtocol, log: "ops were skipped"},
		{name: "frame over the maximum", send: func(m *rawMaster) {
			hdr := append([]byte{byte(wire.FrameOp), 0}, binary.AppendUvarint(nil, wire.MaxFrameLen+1)...)
			m.write(append(hdr, make([]byte, 4096)...))
		}, code: wire.CodeProtocol, log: "exceeds"},
		{name: "not a write on a data stream", send: func(m *rawMaster) {
			ds, err := m.conn.OpenUniStreamSync(context.Background())
			if err != nil {
				m.t.Fatal(err)
			}
			ds.Write(opFrame(m.next, &wire.Mkdir{Path: "x", Mode: 0o755, Mtime: tm, DirMtime: tm}))
			ds.Close()
		}, code: wire.CodeProtocol, log: "on a data stream, which carries only writes"},
		{name: "path with ..", send: ops(&wire.Create{Path: "../escaped", Mode: 0o644, Mtime: tm, DirMtime: tm}),
			code: wire.CodeProtocol, log: "malformed"},
		{name: "path with .. inside", send: ops(&wire.Create{Path: "a/../../victim", Handle: 3, Flags: wire.OpenTrunc, Mode: 0o644, Mtime: tm, DirMtime: tm}),
			code: wire.CodeProtocol, log: "malformed"},
		{name: "absolute path", send: ops(&wire.Unlink{Path: "/etc/passwd", DirMtime: tm}),
			code: wire.CodeProtocol, log: "malformed"},
		// A symlink where an op expects a file or a directory: no
		// master that made the symlink sends these (the kernel resolves
		// symlinks before FUSE sees a path), so the slave's tree differs
		// from the master's, or the master lies. Either way nothing is
		// followed, and the slave asks to be compared (CodeNeedsResync):
		// a pass is confined beneath the root like every op.
		{name: "write through a symlink out of the root",
			setup: []wire.Op{&wire.Symlink{Path: "esc", Target: "../victim", Mtime: tm, DirMtime: tm}},
			send: ops(&wire.Open{Path: "esc", Handle: 4, Flags: wire.OpenTrunc, Mtime: tm},
				&wire.Write{Handle: 4, Data: []byte("pwned"), Mtime: tm}),
			code: wire.CodeNeedsResync, log: "symlink is not a regular file"},
		{name: "truncate through a symlink out of the root",
			setup: []wire.Op{&wire.Symlink{Path: "esc", Target: "../victim", Mtime: tm, DirMtime: tm}},
			send:  ops(&wire.Setattr{Path: "esc", Valid: wire.SetSize, Size: 0, Mtime: tm}),
			code:  wire.CodeNeedsResync, log: "symlink is not a regular file"},
		{name: "create through a directory symlink out of the root",
			setup: []wire.Op{&wire.Symlink{Path: "escdir", Target: "../victimdir", Mtime: tm, DirMtime: tm}},
			send:  ops(&wire.Create{Path: "escdir/pwned", Handle: 5, Mode: 0o644, Mtime: tm, DirMtime: tm}),
			code:  wire.CodeNeedsResync, log: `\"escdir\" leaves the root, passes through a symlink`},
		{name: "create through an absolute symlink",
			setup: []wire.Op{&wire.Symlink{Path: "abs", Target: "/", Mtime: tm, DirMtime: tm}},
			send:  ops(&wire.Create{Path: "abs/tmp/pwned", Mode: 0o644, Mtime: tm, DirMtime: tm}),
			code:  wire.CodeNeedsResync, log: `\"abs/tmp\" leaves the root, passes through a symlink`},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			s := startHostileSlave(t, a.opts)
			m := s.dial(t)
			// Something ordinary first: the slave is in use.
			m.send(append([]wire.Op{&wire.RunStart{Run: wire.RunID{1}},
				&wire.Mkdir{Path: "d", Mode: 0o755, Mtime: tm, DirMtime: tm}}, a.setup...)...)
			m.waitApplied()
			applied := m.next - 1
			ref := snapshotParent(t, s)

			a.send(m)
			code, msg := m.closedWith()
			if code != a.code {
				t.Errorf("closed with %v (%s), want %v", code, msg, a.code)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(s.logs.String(), a.log) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if logs := s.logs.String(); !strings.Contains(logs, "closing master connection") || !strings.Contains(logs, a.log) {
				t.Errorf("the slave's log does not name the reason %q:\n%s", a.log, logs)
			}
			requireUnchanged(t, s, ref)

			// The slave keeps serving: a well-behaved master goes on
			// where the slave stands.
			good := s.dial(t)
			if good.ack.Applied != applied {
				t.Errorf("hello-ack applied %d, want %d", good.ack.Applied, applied)
			}
			good.send(&wire.Create{Path: "d/after", Mode: 0o644, Mtime: tm, DirMtime: tm})
			good.waitApplied()
			if _, err := os.Lstat(filepath.Join(s.root, "d", "after")); err != nil {
				t.Errorf("the next master's op: %v", err)
			}
		})
	}
}

// TestHostileMasterOwners: a slave that does not apply owners (not root)
// drops a master's chowns with one warning, not one per op, keeps the
// connection, and changes nothing.
func TestHostileMasterOwners(t *testing.T) {
	tm := wire.Time{Sec: 1_700_000_000}
	s := startHostileSlave(t, replayer.Options{Chown: false})
	m := s.dial(t)
	m.send(&wire.RunStart{Run: wire.RunID{1}}, &wire.Create{Path: "f", Mode: 0o644, Mtime: tm, DirMtime: tm})
	m.waitApplied()
	ref := snapshotParent(t, s)
	for i := range 5 {
		m.send(&wire.Setattr{Path: "f", Valid: wire.SetUid | wire.SetGid, Uid: uint32(4000 + i), Gid: 4000, Mtime: omitTime})
	}
	m.waitApplied()
	if n := strings.Count(s.logs.String(), "not applying owners"); n != 1 {
		t.Errorf("%d owner warnings, want 1:\n%s", n, s.logs.String())
	}
	if strings.Contains(s.logs.String(), "closing master connection") {
		t.Errorf("the connection was closed:\n%s", s.logs.String())
	}
	requireUnchanged(t, s, ref)
}

// TestHostileMasterSetuidAllowed: with --allow-setuid a master's set-id
// files replicate as they are.
func TestHostileMasterSetuidAllowed(t *testing.T) {
	tm := wire.Time{Sec: 1_700_000_000}
	s := startHostileSlave(t, replayer.Options{AllowSetuid: true})
	m := s.dial(t)
	m.send(&wire.RunStart{Run: wire.RunID{1}}, &wire.Create{Path: "sudo", Mode: 0o4755, Mtime: tm, DirMtime: tm})
	m.waitApplied()
	st, err := os.Lstat(filepath.Join(s.root, "sudo"))
	if err != nil || st.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("sudo: %v %v, want setuid", st.Mode(), err)
	}
}
