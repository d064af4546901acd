package replayer

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tdfs/tdfs/wire"
)

// policyFixture is a replica holding a file "f" (open under handle 1), a
// directory "d" and a file "d/g".
func policyFixture(t *testing.T, o Options) (*Replayer, string) {
	t.Helper()
	root := t.TempDir()
	r := newTestReplayer(t, root, o)
	omit := wire.Time{Omit: true}
	for _, op := range []wire.Op{
		&wire.Create{Path: "f", Handle: 1, Mode: 0o644, Mtime: omit, DirMtime: omit},
		&wire.Mkdir{Path: "d", Mode: 0o755, Mtime: omit, DirMtime: omit},
		&wire.Create{Path: "d/g", Mode: 0o755, Mtime: omit, DirMtime: omit},
	} {
		if err := r.Apply(op); err != nil {
			t.Fatal(err)
		}
	}
	return r, root
}

// TestPolicyRefusals: each op the slave refuses fails with wire.ErrRefused (or
// wire.ErrLimit), says why, and changes nothing, in tolerant mode too.
func TestPolicyRefusals(t *testing.T) {
	omit := wire.Time{Omit: true}
	tm := wire.Time{Sec: 1_000_000}
	cases := []struct {
		name string
		op   wire.Op
		want error
		why  string
	}{
		{"char device", &wire.Mknod{Path: "c", Mode: unix.S_IFCHR | 0o666, Rdev: unix.Mkdev(1, 3), Mtime: tm, DirMtime: tm}, wire.ErrRefused, "character device"},
		{"block device", &wire.Mknod{Path: "b", Mode: unix.S_IFBLK | 0o666, Rdev: unix.Mkdev(8, 0), Mtime: tm, DirMtime: tm}, wire.ErrRefused, "block device"},
		{"setuid create", &wire.Create{Path: "s", Mode: 0o4755, Mtime: tm, DirMtime: tm}, wire.ErrRefused, "setuid bit"},
		{"setgid create", &wire.Create{Path: "s", Mode: 0o2755, Mtime: tm, DirMtime: tm}, wire.ErrRefused, "setgid bit"},
		{"setuid fifo", &wire.Mknod{Path: "p", Mode: unix.S_IFIFO | 0o4644, Mtime: tm, DirMtime: tm}, wire.ErrRefused, "setuid bit"},
		{"setuid chmod with chown", &wire.Setattr{Path: "d/g", Valid: wire.SetMode | wire.SetUid | wire.SetGid,
			Mode: 0o4755, Uid: 4321, Gid: 4321, Mtime: tm}, wire.ErrRefused, "setuid bit"},
		{"setgid chmod by handle", &wire.Setattr{Handle: 1, Valid: wire.SetMode, Mode: 0o2755, Mtime: tm}, wire.ErrRefused, "setgid bit"},
		{"trusted xattr", &wire.Setxattr{Path: "f", Name: "trusted.x", Value: []byte("v")}, wire.ErrRefused, "only a slave running as root"},
		{"posix acl", &wire.Setxattr{Path: "f", Name: "system.posix_acl_access", Value: []byte("v")}, wire.ErrRefused, "only a slave running as root"},
		{"other system xattr", &wire.Setxattr{Path: "f", Name: "system.nfs4_acl", Value: []byte("v")}, wire.ErrRefused, "namespace not replicated"},
		{"unknown namespace", &wire.Setxattr{Path: "f", Name: "btrfs.compression", Value: []byte("zstd")}, wire.ErrRefused, "namespace not replicated"},
		{"file capabilities", &wire.Setxattr{Path: "f", Name: "security.capability", Value: []byte("v")}, wire.ErrRefused, "file capabilities"},
		{"write past the bound", &wire.Write{Handle: 1, Off: 1 << 20, Data: []byte("x"), Mtime: tm}, wire.ErrRefused, "beyond the largest file"},
		{"write at a huge offset", &wire.Write{Handle: 1, Off: 1<<63 - 1, Data: []byte("x"), Mtime: tm}, wire.ErrRefused, "beyond the largest file"},
		{"fallocate past the bound", &wire.Fallocate{Handle: 1, Off: 1 << 19, Len: 1<<19 + 1, Mtime: tm}, wire.ErrRefused, "beyond the largest file"},
		{"truncate past the bound", &wire.Setattr{Path: "f", Valid: wire.SetSize, Size: 1<<20 + 1, Mtime: tm}, wire.ErrRefused, "beyond the largest file"},
		{"too many handles", &wire.Create{Path: "h3", Handle: 3, Mode: 0o644, Mtime: tm, DirMtime: tm}, wire.ErrLimit, "at most 2 open"},
		{"too many handles by open", &wire.Open{Path: "d/g", Handle: 3, Mtime: tm}, wire.ErrLimit, "at most 2 open"},
	}
	for _, tolerant := range []bool{false, true} {
		for _, tc := range cases {
			name := tc.name
			if tolerant {
				name += " tolerant"
			}
			t.Run(name, func(t *testing.T) {
				r, root := policyFixture(t, Options{MaxFileSize: 1 << 20, MaxHandles: 2})
				// A second handle, so the next one is one too many.
				if err := r.Apply(&wire.Open{Path: "d/g", Handle: 2, Mtime: omit}); err != nil {
					t.Fatal(err)
				}
				r.SetTolerant(tolerant)
				before := snapshot(t, root)
				skipped := r.Skipped()
				err := r.Apply(tc.op)
				if tolerant {
					// Skipped like an op meeting a difference: the
					// running pass leaves out what the op touched.
					if err != nil || r.Skipped() != skipped+1 {
						t.Fatalf("tolerant: got %v, %d skipped; want nil, 1 skipped", err, r.Skipped()-skipped)
					}
				} else if !errors.Is(err, tc.want) || !strings.Contains(fmtErr(err), tc.why) {
					t.Fatalf("got %v, want %v naming %q", err, tc.want, tc.why)
				}
				if d := diffTrees(before, snapshot(t, root)); len(d) > 0 {
					t.Errorf("the refused op changed the tree: %v", d)
				}
				if n := r.NumHandles(); n != 2 {
					t.Errorf("%d handles open, want 2", n)
				}
			})
		}
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestPolicyAllows: what the policy lets through.
func TestPolicyAllows(t *testing.T) {
	tm := wire.Time{Sec: 1_000_000}
	r, root := policyFixture(t, Options{MaxFileSize: 1 << 20, MaxHandles: 1})
	for _, op := range []wire.Op{
		// Set-id bits on a directory grant nothing: always allowed.
		&wire.Mkdir{Path: "shared", Mode: 0o2775, Mtime: tm, DirMtime: tm},
		&wire.Mkdir{Path: "sd", Mode: 0o6755, Mtime: tm, DirMtime: tm},
		// Removing an xattr is always safe, whatever its namespace.
		&wire.Removexattr{Path: "f", Name: "trusted.x"},
		&wire.Setattr{Path: "d", Valid: wire.SetMode, Mode: 0o2750, Mtime: tm},
		// Sticky is not set-id.
		&wire.Mkdir{Path: "tmp", Mode: 0o1777, Mtime: tm, DirMtime: tm},
		// Up to the bound exactly.
		&wire.Write{Handle: 1, Off: 1<<20 - 1, Data: []byte("x"), Mtime: tm},
		&wire.Setattr{Path: "f", Valid: wire.SetSize, Size: 1 << 20, Mtime: tm},
		// A handle id reused is not one more handle.
		&wire.Open{Path: "f", Handle: 1, Mtime: tm},
		&wire.Setxattr{Path: "f", Name: "user.color", Value: []byte("blue")},
	} {
		if err := r.Apply(op); err != nil {
			t.Fatalf("%s: %v", describe(op), err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "shared"), &st); err != nil || st.Mode&0o7777 != 0o2775 {
		t.Errorf("shared: mode %#o, %v; want 02775", st.Mode&0o7777, err)
	}
}

// TestPolicyAllowSetuid: with AllowSetuid, set-id modes and file
// capabilities replicate as the master has them.
func TestPolicyAllowSetuid(t *testing.T) {
	tm := wire.Time{Sec: 1_000_000}
	r, root := policyFixture(t, Options{AllowSetuid: true, Chown: os.Geteuid() == 0})
	for _, op := range []wire.Op{
		&wire.Create{Path: "s", Mode: 0o4755, Mtime: tm, DirMtime: tm},
		&wire.Setattr{Path: "d/g", Valid: wire.SetMode, Mode: 0o2755, Mtime: tm},
	} {
		if err := r.Apply(op); err != nil {
			t.Fatalf("%s: %v", describe(op), err)
		}
	}
	for p, want := range map[string]uint32{"s": 0o4755, "d/g": 0o2755} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(root, p), &st); err != nil || st.Mode&0o7777 != want {
			t.Errorf("%s: mode %#o, %v; want %#o", p, st.Mode&0o7777, err, want)
		}
	}
	if os.Geteuid() == 0 {
		// Only root may set file capabilities; the policy let it through.
		cap := []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // v2, cap_net_bind_service
		if err := r.Apply(&wire.Setxattr{Path: "s", Name: "security.capability", Value: cap}); err != nil {
			t.Errorf("security.capability with AllowSetuid: %v", err)
		}
	}
}

// TestPolicyRootXattrs: a slave that applies owners (root) holds trusted.*
// xattrs.
func TestPolicyRootXattrs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("trusted.* xattrs need root")
	}
	r, _ := policyFixture(t, Options{Chown: true})
	if err := r.Apply(&wire.Setxattr{Path: "f", Name: "trusted.x", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyOwnersWarnOnce: a slave that does not apply owners drops them
// with one warning, not one per op, and goes on.
func TestPolicyOwnersWarnOnce(t *testing.T) {
	var logs bytes.Buffer
	tm := wire.Time{Sec: 1_000_000}
	r, root := policyFixture(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	before := snapshot(t, filepath.Join(root, "d"))
	for i := range 3 {
		op := &wire.Setattr{Path: "d/g", Valid: wire.SetUid | wire.SetGid, Uid: uint32(4000 + i), Gid: 4000, Mtime: wire.Time{Omit: true}}
		if err := r.Apply(op); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Apply(&wire.Create{Path: "o", Mode: 0o644, Uid: 4321, Gid: 4321, Mtime: tm, DirMtime: tm}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "not applying owners"); n != 1 {
		t.Errorf("%d owner warnings, want 1:\n%s", n, logs.String())
	}
	if d := diffTrees(before, snapshot(t, filepath.Join(root, "d"))); len(d) > 0 {
		t.Errorf("owners changed: %v", d)
	}
}

// TestPolicyResync: a pass leaves out what the slave's policy forbids and
// reports it, instead of failing: an entry it does not hold at all is
// removed from the replica (the slave's older copy included), an xattr it
// does not hold is left out of the entry. A Verify pass reports the same.
func TestPolicyResync(t *testing.T) {
	tm := wire.Time{Sec: 1_000_000}
	dirAttr := wire.Attr{Mode: 0o755, Mtime: tm}
	cases := []struct {
		name  string
		entry wire.Entry
		why   string
		kept  bool // the entry is held, without what is left out
	}{
		{"setuid file", wire.Entry{Name: "a", Kind: wire.KindFile, FileID: 1, Attr: wire.Attr{Mode: 0o4755, Mtime: tm}}, "setuid bit", false},
		{"setgid fifo", wire.Entry{Name: "a", Kind: wire.KindFifo, Attr: wire.Attr{Mode: 0o2644, Mtime: tm}}, "setgid bit", false},
		{"char device", wire.Entry{Name: "a", Kind: wire.KindCharDev, Rdev: unix.Mkdev(1, 3), Attr: wire.Attr{Mode: 0o644, Mtime: tm}}, "device nodes", false},
		{"huge file", wire.Entry{Name: "a", Kind: wire.KindFile, FileID: 1, Attr: wire.Attr{Mode: 0o644, Size: 1<<20 + 1, Mtime: tm}}, "beyond the largest file", false},
		{"trusted xattr", wire.Entry{Name: "a", Kind: wire.KindFile, FileID: 1, Attr: wire.Attr{Mode: 0o644, Mtime: tm},
			Xattrs: []wire.Xattr{{Name: "trusted.t", Value: []byte("v")}, {Name: "user.u", Value: []byte("v")}}}, "only a slave running as root", true},
	}
	for _, tc := range cases {
		for _, verify := range []bool{false, true} {
			name := tc.name
			if verify {
				name += " verify"
			}
			t.Run(name, func(t *testing.T) {
				_, root := policyFixture(t, Options{})
				r := newTestReplayer(t, root, Options{MaxFileSize: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
				if err := os.Mkdir(filepath.Join(root, "w"), 0o755); err != nil {
					t.Fatal(err)
				}
				// The slave's older copy under the same name.
				if err := unix.Mkfifo(filepath.Join(root, "w", "a"), 0o644); err != nil {
					t.Fatal(err)
				}
				var diffs []wire.Difference
				reply := func(rep wire.ResyncReply) error {
					if d, ok := rep.(*wire.ResyncDirDone); ok {
						diffs = append(diffs, d.Diffs...)
					}
					return nil
				}
				if err := r.ApplyItem(&wire.ResyncBegin{Pass: 1, Verify: verify}, reply); err != nil {
					t.Fatal(err)
				}
				err := r.ApplyItem(&wire.ResyncDir{Pass: 1, DirID: 1, Path: "w", Final: true, Attr: dirAttr, Entries: []wire.Entry{tc.entry}}, reply)
				if err != nil {
					t.Fatalf("pass item: %v", err)
				}
				found := false
				for _, d := range diffs {
					if d.Path == "w/a" && strings.Contains(d.What, "left out by this slave's policy") && strings.Contains(d.What, tc.why) {
						found = true
					}
				}
				if !found {
					t.Errorf("differences %+v, want w/a left out naming %q", diffs, tc.why)
				}
				var st unix.Stat_t
				err = unix.Lstat(filepath.Join(root, "w", "a"), &st)
				switch {
				case verify:
					if err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
						t.Errorf("w/a: %v, mode %#o; want the fifo kept", err, st.Mode)
					}
				case tc.kept:
					if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
						t.Errorf("w/a: %v, mode %#o; want the master's file", err, st.Mode)
					}
				case !errors.Is(err, unix.ENOENT):
					t.Errorf("w/a after a repair pass: %v, want it removed", err)
				}
				if tc.kept && !verify {
					buf := make([]byte, 64)
					if _, err := unix.Lgetxattr(filepath.Join(root, "w", "a"), "trusted.t", buf); !errors.Is(err, unix.ENODATA) {
						t.Errorf("trusted.t: %v, want ENODATA", err)
					}
					if n, err := unix.Lgetxattr(filepath.Join(root, "w", "a"), "user.u", buf); err != nil || string(buf[:n]) != "v" {
						t.Errorf("user.u: %q, %v", buf[:max(n, 0)], err)
					}
				}
			})
		}
	}
}

// A set-id file already in the replica (seeded, or left by a run with
// --allow-setuid) cannot be opened for writing or created over by a
// master when set-id files are not allowed: it would otherwise get the
// master's contents and keep its bit (found by review). With AllowSetuid
// it can.
func TestExistingSetidFileNotRewritten(t *testing.T) {
	for _, allow := range []bool{false, true} {
		root := t.TempDir()
		p := filepath.Join(root, "sbin-tool")
		if err := os.WriteFile(p, []byte("original"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(p, 0o4755); err != nil {
			t.Fatal(err)
		}
		r := newTestReplayer(t, root, Options{AllowSetuid: allow})
		omit := wire.Time{Omit: true}
		errOpen := r.Apply(&wire.Open{Path: "sbin-tool", Handle: 7, Flags: wire.OpenTrunc, Mtime: omit})
		errCreate := r.Apply(&wire.Create{Path: "sbin-tool", Handle: 8, Flags: wire.OpenTrunc, Mode: 0o755, Mtime: omit, DirMtime: omit})
		got, _ := os.ReadFile(p)
		if allow {
			if errOpen != nil || errCreate != nil {
				t.Errorf("with AllowSetuid: open %v, create %v", errOpen, errCreate)
			}
			continue
		}
		if !errors.Is(errOpen, wire.ErrRefused) || !errors.Is(errCreate, wire.ErrRefused) {
			t.Errorf("open %v, create %v: want both refused", errOpen, errCreate)
		}
		if string(got) != "original" {
			t.Errorf("a refused op changed the set-id file: %q", got)
		}
	}
}

// TestPolicyDevices: with AllowDevices, device nodes replicate with their
// number, by op and by pass; the policy announced says so.
func TestPolicyDevices(t *testing.T) {
	tm := wire.Time{Sec: 1_000_000}
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{AllowDevices: true, Chown: true})
	if p := r.Policy(); !p.Allows(wire.PolicyDevices|wire.PolicyPrivXattrs) || p.Allows(wire.PolicySetid) {
		t.Errorf("Policy() = %v", p)
	}
	rdev := unix.Mkdev(1, 3)
	if err := r.Apply(&wire.Mknod{Path: "c", Mode: unix.S_IFCHR | 0o620, Rdev: rdev, Mtime: tm, DirMtime: tm}); err != nil {
		t.Fatal(err)
	}
	// Applied again (a replay): the same device is what the op asked for.
	if err := r.Apply(&wire.Mknod{Path: "c", Mode: unix.S_IFCHR | 0o620, Rdev: rdev, Mtime: tm, DirMtime: tm}); err != nil {
		t.Fatalf("replay: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "c"), &st); err != nil || st.Mode != unix.S_IFCHR|0o620 || st.Rdev != rdev {
		t.Fatalf("c: mode %#o rdev %#x (%v)", st.Mode, st.Rdev, err)
	}
	reply := func(wire.ResyncReply) error { return nil }
	if err := r.ApplyItem(&wire.ResyncBegin{Pass: 1}, reply); err != nil {
		t.Fatal(err)
	}
	entries := []wire.Entry{
		{Name: "b", Kind: wire.KindBlkDev, Rdev: unix.Mkdev(7, 1), Attr: wire.Attr{Mode: 0o600, Mtime: tm}},
		{Name: "c", Kind: wire.KindCharDev, Rdev: unix.Mkdev(1, 5), Attr: wire.Attr{Mode: 0o666, Mtime: tm}},
	}
	if err := r.ApplyItem(&wire.ResyncDir{Pass: 1, DirID: 1, Path: "", Final: true, Attr: wire.Attr{Mode: 0o755, Mtime: tm}, Entries: entries}, reply); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		typ, _ := kindType(e.Kind)
		if err := unix.Lstat(filepath.Join(root, e.Name), &st); err != nil || st.Mode != typ|e.Attr.Mode || st.Rdev != e.Rdev {
			t.Errorf("%s after the pass: mode %#o rdev %#x (%v), want %#o %#x", e.Name, st.Mode, st.Rdev, err, typ|e.Attr.Mode, e.Rdev)
		}
	}
}

// TestPolicyRefusedHandleIsGone: the writes through a handle whose Create
// or Open was refused change nothing, and fail nothing: the file is left
// out of the replica, and the refusal alone asks for a comparison.
func TestPolicyRefusedHandleIsGone(t *testing.T) {
	tm := wire.Time{Sec: 1_000_000}
	root := t.TempDir()
	r := newTestReplayer(t, root, Options{})
	if err := r.Apply(&wire.Create{Path: "s", Handle: 7, Mode: 0o4755, Mtime: tm, DirMtime: tm}); !errors.Is(err, ErrPolicy) {
		t.Fatalf("setuid create: %v, want ErrPolicy", err)
	}
	for _, op := range []wire.Op{
		&wire.Write{Handle: 7, Off: 0, Data: []byte("x"), Mtime: tm},
		&wire.Setattr{Handle: 7, Valid: wire.SetSize, Size: 10, Mtime: tm},
		&wire.Release{Handle: 7},
	} {
		if err := r.Apply(op); err != nil {
			t.Errorf("%s through the refused handle: %v", describe(op), err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "s")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("s: %v, want it absent", err)
	}
	// Released: the id is unknown again.
	if err := r.Apply(&wire.Write{Handle: 7, Off: 0, Data: []byte("x"), Mtime: tm}); !errors.Is(err, ErrUnknownHandle) {
		t.Errorf("write after release: %v, want ErrUnknownHandle", err)
	}
}
