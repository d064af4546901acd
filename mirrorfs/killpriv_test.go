package mirrorfs

import (
	"encoding/binary"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// backingFile makes rel in the backing dir (not through the mount, as a
// set-id file left there by an earlier life of the tree) with mode.
func (e *env) backingFile(rel string, mode uint32) {
	e.t.Helper()
	if err := os.WriteFile(e.b(rel), []byte("0123456789"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := syscall.Chmod(e.b(rel), mode); err != nil {
		e.t.Fatal(err)
	}
}

// backingMode returns the permission bits of rel in the backing dir.
func (e *env) backingMode(rel string) uint32 {
	e.t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(e.b(rel), &st); err != nil {
		e.t.Fatal(err)
	}
	return st.Mode & 0o7777
}

// capValue is a valid security.capability (VFS_CAP_REVISION_2, effective,
// permitted CAP_NET_BIND_SERVICE): the kernel refuses malformed ones.
func capValue() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1)
	binary.LittleEndian.PutUint32(b[4:], 1<<unix.CAP_NET_BIND_SERVICE)
	return b
}

// writeAs opens rel on the mount for writing (as uid 1234 unless root) and
// writes one byte at offset 0.
func (e *env) writeAs(root bool, rel string) {
	e.t.Helper()
	do := func() {
		f, err := os.OpenFile(e.m(rel), os.O_WRONLY, 0)
		if err != nil {
			e.t.Errorf("open %s: %v", rel, err)
			return
		}
		if _, err := f.WriteAt([]byte("x"), 0); err != nil {
			e.t.Errorf("write %s: %v", rel, err)
		}
		if err := f.Close(); err != nil {
			e.t.Errorf("close %s: %v", rel, err)
		}
	}
	if root {
		do()
	} else {
		asUser(e.t, 1234, 1234, do)
	}
	e.settle()
}

// seqOf returns the index in recs of the first op that match accepts, or -1.
func seqOf(recs []rec, match func(wire.Op) bool) int {
	for i, r := range recs {
		if match(r.op) {
			return i
		}
	}
	return -1
}

// firstWrite returns the index of the first Write through a handle opened
// on rel.
func firstWrite(recs []rec, rel string) int {
	var h uint64
	for i, r := range recs {
		switch o := r.op.(type) {
		case *wire.Open:
			if o.Path == rel {
				h = o.Handle
			}
		case *wire.Write:
			if h != 0 && o.Handle == h {
				return i
			}
		}
	}
	return -1
}

// modeSetattr returns the index of the first Setattr of rel's mode and the
// mode it sets.
func modeSetattr(recs []rec, rel string) (int, uint32) {
	i := seqOf(recs, func(op wire.Op) bool {
		s, ok := op.(*wire.Setattr)
		return ok && s.Path == rel && s.Valid&wire.SetMode != 0
	})
	if i < 0 {
		return -1, 0
	}
	return i, recs[i].op.(*wire.Setattr).Mode
}

// TestWriteKillsSetID: a writer without CAP_FSETID clears S_ISUID, and
// S_ISGID when group execute is set or the writer is not in the file's
// group, of a file the backing dir holds
// (CAP_HANDLE_KILLPRIV_V2 makes that the filesystem's job); the change is
// replicated as a Setattr numbered before the write. A root writer keeps
// them.
func TestWriteKillsSetID(t *testing.T) {
	e := newEnv(t, wire.ModeAsync)
	for _, c := range []struct {
		name       string
		mode, want uint32
		root       bool
	}{
		{"suid", 0o4777, 0o777, false},
		{"sgid-gx", 0o2777, 0o777, false},
		{"both", 0o6777, 0o777, false},
		// Without group execute, set-gid goes only for a writer outside
		// the file's group (root's group 0 here).
		{"sgid-nogx", 0o2767, 0o767, false},
		{"root", 0o6777, 0o6777, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.backingFile(c.name, c.mode)
			mark := e.sink.mark()
			e.writeAs(c.root, c.name)
			if got := e.backingMode(c.name); got != c.want {
				t.Errorf("backing mode %#o after the write, want %#o", got, c.want)
			}
			recs := e.sink.since(mark)
			w := firstWrite(recs, c.name)
			if w < 0 {
				t.Fatalf("no write replicated; ops %v", types(recs))
			}
			i, mode := modeSetattr(recs, c.name)
			switch {
			case c.want == c.mode && i >= 0:
				t.Errorf("mode Setattr %#o replicated, want none; ops %v", mode, types(recs))
			case c.want != c.mode && i < 0:
				t.Errorf("no mode Setattr replicated; ops %v", types(recs))
			case c.want != c.mode && (i > w || mode != c.want):
				t.Errorf("Setattr mode %#o at %d, write at %d: want %#o before the write", mode, i, w, c.want)
			}
		})
	}
}

// TestWriteRemovesCapability: any write, root's included, removes
// security.capability, replicated as a Removexattr before the write; a
// root writer keeps the set-id bits.
func TestWriteRemovesCapability(t *testing.T) {
	e := newEnv(t, wire.ModeAsync)
	e.backingFile("cap", 0o4755)
	if err := unix.Setxattr(e.b("cap"), capXattr, capValue(), 0); err != nil {
		t.Skipf("backing filesystem refuses %s: %v", capXattr, err)
	}
	mark := e.sink.mark()
	e.writeAs(true, "cap")
	if _, err := unix.Getxattr(e.b("cap"), capXattr, nil); err != unix.ENODATA {
		t.Errorf("getxattr %s after the write: %v, want ENODATA", capXattr, err)
	}
	if got := e.backingMode("cap"); got != 0o4755 {
		t.Errorf("mode %#o after a root write, want %#o", got, 0o4755)
	}
	recs := e.sink.since(mark)
	rm := seqOf(recs, func(op wire.Op) bool {
		r, ok := op.(*wire.Removexattr)
		return ok && r.Path == "cap" && r.Name == capXattr
	})
	if w := firstWrite(recs, "cap"); rm < 0 || w < 0 || rm > w {
		t.Errorf("Removexattr at %d, write at %d: want the removal before the write; ops %v", rm, w, types(recs))
	}
}

// TestTruncateKillsSetID: truncate(2) by a caller without CAP_FSETID
// reaches the mirror as SETATTR size with FATTR_KILL_SUIDGID and no mode;
// the mirror clears the bits and replicates that before the truncate.
func TestTruncateKillsSetID(t *testing.T) {
	e := newEnv(t, wire.ModeAsync)
	e.backingFile("t", 0o6777)
	mark := e.sink.mark()
	asUser(t, 1234, 1234, func() {
		if err := syscall.Truncate(e.m("t"), 3); err != nil {
			t.Errorf("truncate: %v", err)
		}
	})
	if got := e.backingMode("t"); got != 0o777 {
		t.Errorf("backing mode %#o after the truncate, want 0777", got)
	}
	recs := e.sink.since(mark)
	i, mode := modeSetattr(recs, "t")
	tr := seqOf(recs, func(op wire.Op) bool {
		s, ok := op.(*wire.Setattr)
		return ok && s.Path == "t" && s.Valid&wire.SetSize != 0
	})
	if i < 0 || tr < 0 || i > tr || mode != 0o777 {
		t.Errorf("mode Setattr %#o at %d, truncate at %d: want 0777 before the truncate; ops %v", mode, i, tr, types(recs))
	}
}

// TestNoGetxattrPerWrite: with CAP_HANDLE_KILLPRIV_V2 the kernel stops
// asking GETXATTR(security.capability) before every write.
func TestNoGetxattrPerWrite(t *testing.T) {
	e := newEnv(t, wire.ModeAsync)
	f, err := os.Create(e.m("w"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := e.srv.Requests()
	buf := make([]byte, 4096)
	const writes = 200
	for i := range writes {
		if _, err := f.WriteAt(buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	d := diffCounts(e.srv.Requests(), before)
	if d["WRITE"] != writes {
		t.Errorf("%d WRITEs for %d writes", d["WRITE"], writes)
	}
	// The VFS checks once before it marks the inode S_NOSEC.
	if d["GETXATTR"] > 1 {
		t.Errorf("%d GETXATTRs for %d writes, want at most 1; requests %v", d["GETXATTR"], writes, d)
	}
}

// TestCreateTruncKillsSetID: CREATE reaches an existing file when the
// kernel holds a negative dentry for it (here: made beside the mount while
// the kernel remembered the name as absent). With O_TRUNC and
// OPEN_KILL_SUIDGID the mirror clears the set-id bits and replicates that
// before the Create.
func TestCreateTruncKillsSetID(t *testing.T) {
	e := newEnv(t, wire.ModeAsync)
	if err := os.Mkdir(e.m("d"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.m("d"), 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(e.m("d/f")); !os.IsNotExist(err) {
		t.Fatalf("lstat d/f: %v, want ENOENT", err)
	}
	e.backingFile("d/f", 0o6777) // the kernel still believes d/f absent
	mark := e.sink.mark()
	asUser(t, 1234, 1234, func() {
		f, err := os.OpenFile(e.m("d/f"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Errorf("open O_CREAT|O_TRUNC: %v", err)
			return
		}
		f.Close()
	})
	e.settle()
	recs := e.sink.since(mark)
	c := seqOf(recs, func(op wire.Op) bool { _, ok := op.(*wire.Create); return ok })
	if c < 0 {
		t.Skipf("the kernel sent no CREATE (negative dentry expired?); ops %v", types(recs))
	}
	if got := e.backingMode("d/f"); got != 0o777 {
		t.Errorf("backing mode %#o, want 0777", got)
	}
	i, mode := modeSetattr(recs, "d/f")
	if i < 0 || i > c || mode != 0o777 {
		t.Errorf("mode Setattr %#o at %d, Create at %d: want 0777 before the Create; ops %v", mode, i, c, types(recs))
	}
}
