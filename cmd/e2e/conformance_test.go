package e2e

// A POSIX conformance suite run against the real mount, modelled on
// pjdfstest's syscalls, with a differential oracle: every case runs the
// same system calls in a plain reference directory (a t.TempDir() on the
// same filesystem as the master's backing dir) and through the master's
// mount, and the errno and output of every step, and the final state of
// every entry the case made, must be the same in both. The expectation is
// therefore whatever ext4 (or tmpfs) does on this kernel, not a hand-written
// table of errnos that could be wrong.
//
// The steps run in worker processes: the test binary itself, re-executed
// with confWorkerEnv set (init intercepts it before TestMain) and with the
// credentials of the case's user, since setuid in one Go process would
// change every thread. A worker reads a JSON confRequest on stdin and
// prints a confResponse.
//
// Two configurations: with --allow-setuid --allow-devices on the master and
// its slave the mount must match the reference exactly; with the defaults
// it must match except for the documented refusals, which
// confPolicyRefuses maps from the reference's result (the reference run
// emulates them: a step the mount would refuse is undone on the reference
// and recorded as EPERM). After the cases the slave must converge to a
// tree equal to the backing dir (converge, treecmp).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// confWorkerEnv makes the test binary a conformance worker (init).
const confWorkerEnv = "TDFS_CONFORMANCE_WORKER"

func init() {
	if os.Getenv(confWorkerEnv) == "1" {
		os.Exit(confWorkerMain(os.Stdin, os.Stdout, os.Stderr))
	}
}

// confUser is a user steps run as.
type confUser struct {
	uid, gid uint32
	groups   []uint32
}

// The users of the cases: root, nobody, and uid 1001 without and with
// the supplementary group 2000.
var confUsers = map[string]confUser{
	"root":   {0, 0, []uint32{0}},
	"nobody": {nobody, nobody, []uint32{nobody}},
	"u1001":  {1001, 1001, []uint32{1001}},
	"u1001g": {1001, 1001, []uint32{1001, 2000}},
}

// confUserOrder is the order the users' workers run in.
var confUserOrder = []string{"root", "nobody", "u1001", "u1001g"}

// confCase is one conformance case: setup runs as root, then steps as
// user, both in the case's own directory, which is owned by user (mode
// 0755) in both trees. Steps are in the language of confExec.run.
type confCase struct {
	name  string
	user  string
	setup []string
	steps []string
}

// confRequest is what a worker is asked to do: run each list of steps in
// its directory.
type confRequest struct {
	// Policy: "" runs the steps as they are (the mount); "report" marks
	// the steps the default policy would refuse (Hit); "enforce" also
	// undoes them and records EPERM (the reference of the defaults).
	Policy string `json:"policy"`
	// Umask is the umask each run starts with: 0 for setups (their
	// modes are exact), 022 for steps.
	Umask int       `json:"umask"`
	Runs  []confRun `json:"runs"`
}

type confRun struct {
	Dir   string   `json:"dir"`
	Steps []string `json:"steps"`
}

type confResponse struct {
	Runs [][]confResult `json:"runs"`
}

// confResult is the outcome of one step: its errno name ("0" for
// success) and what it read, if anything.
type confResult struct {
	E   string `json:"e"`
	Out string `json:"out,omitempty"`
	// Hit: the step succeeded on the reference, and a mount with the
	// default policy refuses it (confPolicyRefuses).
	Hit bool `json:"hit,omitempty"`
}

func (r confResult) String() string {
	s := r.E
	if r.Out != "" {
		s += " " + r.Out
	}
	if r.Hit {
		s += " (the default policy refuses it)"
	}
	return s
}

// confPolicyRefuses is the one documented difference between a mount
// whose master and slaves run with the defaults (neither --allow-setuid
// nor --allow-devices) and the reference: an op that succeeds on the
// reference and leaves an entry in state st fails on the mount with EPERM
// and changes nothing if st is a character or block device, or has a
// setuid or setgid bit on anything but a directory. (Setting the
// security.capability xattr is refused the same way: it is part of the
// same policy flag, wire.PolicySetid; see confExec.run's setxattr.) Steps
// that fail on the reference fail the same way on the mount.
func confPolicyRefuses(st *unix.Stat_t) bool {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return false
	case unix.S_IFCHR, unix.S_IFBLK:
		return true
	}
	return st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0
}

// confCapXattr is the file capability xattr.
const confCapXattr = "security.capability"

// confCapBlob is a valid version 2 file capability, as setcap
// cap_net_raw+ep writes it: magic 0x02000001 (revision 2, effective),
// permitted CAP_NET_RAW, inheritable none, little-endian.
var confCapBlob = []byte{
	0x01, 0x00, 0x00, 0x02, // magic_etc
	0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // permitted, inheritable (low words)
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // permitted, inheritable (high words)
}

// confWorkerMain runs a worker: decode a request, run it, print the
// response. Each step is logged to errw before it runs, so that the parent
// can name the step a hung worker was in.
func confWorkerMain(in io.Reader, out, errw io.Writer) int {
	var req confRequest
	if err := json.NewDecoder(in).Decode(&req); err != nil {
		fmt.Fprintln(errw, "conformance worker: decoding the request:", err)
		return 2
	}
	var resp confResponse
	for i, r := range req.Runs {
		if err := os.Chdir(r.Dir); err != nil {
			fmt.Fprintln(errw, "conformance worker:", err)
			return 2
		}
		unix.Umask(req.Umask)
		x := &confExec{root: r.Dir, fds: map[string]int{}, policy: req.Policy}
		res := make([]confResult, 0, len(r.Steps))
		for j, s := range r.Steps {
			fmt.Fprintf(errw, "run %d (%s) step %d: %.200s\n", i, r.Dir, j, s)
			cr, err := x.run(s)
			if err != nil {
				fmt.Fprintf(errw, "conformance worker: bad step %q: %v\n", s, err)
				return 2
			}
			res = append(res, cr)
		}
		x.closeAll()
		resp.Runs = append(resp.Runs, res)
	}
	if err := json.NewEncoder(out).Encode(&resp); err != nil {
		fmt.Fprintln(errw, "conformance worker:", err)
		return 2
	}
	return 0
}

// confExec runs steps in one directory (the process's working directory).
type confExec struct {
	root   string         // the absolute path of the working directory
	fds    map[string]int // open descriptors by slot name
	policy string         // confRequest.Policy
}

func (x *confExec) closeAll() {
	for k, fd := range x.fds {
		unix.Close(fd)
		delete(x.fds, k)
	}
}

// at resolves a path argument for the *at syscalls: "@slot/rest" is rest
// relative to the directory open in slot, "$/rest" is rest under the
// working directory given as an absolute path, anything else is relative
// to the working directory.
func (x *confExec) at(p string) (int, string, error) {
	if s, ok := strings.CutPrefix(p, "@"); ok {
		slot, rest, _ := strings.Cut(s, "/")
		fd, ok := x.fds[slot]
		if !ok {
			fd = -1 // the open failed: EBADF
		}
		if rest == "" {
			rest = "."
		}
		return fd, rest, nil
	}
	if rest, ok := strings.CutPrefix(p, "$/"); ok {
		return unix.AT_FDCWD, x.root + "/" + rest, nil
	}
	return unix.AT_FDCWD, p, nil
}

// path resolves a path argument for the syscalls that take a path only.
func (x *confExec) path(p string) (string, error) {
	fd, rel, err := x.at(p)
	if err != nil || fd == unix.AT_FDCWD {
		return rel, err
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", fd, rel), nil
}

// slot returns the descriptor in slot name, or -1 (EBADF) if the open
// that should have filled it failed.
func (x *confExec) slot(name string) (int, error) {
	fd, ok := x.fds[name]
	if !ok {
		return -1, nil
	}
	return fd, nil
}

// confErrno names the errno of err ("0" for nil).
func confErrno(err error) string {
	if err == nil {
		return "0"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return fmt.Sprintf("errno%d", int(e))
	}
	return "error(" + err.Error() + ")"
}

var confOpenFlags = map[string]int{
	"rdonly": unix.O_RDONLY, "wronly": unix.O_WRONLY, "rdwr": unix.O_RDWR,
	"creat": unix.O_CREAT, "excl": unix.O_EXCL, "trunc": unix.O_TRUNC, "append": unix.O_APPEND,
	"directory": unix.O_DIRECTORY, "nofollow": unix.O_NOFOLLOW, "nonblock": unix.O_NONBLOCK,
	"path": unix.O_PATH,
}

var confNodeTypes = map[string]uint32{
	"reg": unix.S_IFREG, "fifo": unix.S_IFIFO, "sock": unix.S_IFSOCK, "chr": unix.S_IFCHR,
	"blk": unix.S_IFBLK, "dir": unix.S_IFDIR, "none": 0,
}

func confMode(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	return uint32(v), err
}

// confData is a data argument: "*N" is N bytes of a fixed pattern,
// anything else the literal text.
func confData(s string) []byte {
	if n, err := strconv.Atoi(strings.TrimPrefix(s, "*")); err == nil && strings.HasPrefix(s, "*") {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + i%26)
		}
		return b
	}
	return []byte(s)
}

// confTimeArg parses a utimensat time: now, omit or SEC[.FRACTION].
func confTimeArg(s string) (unix.Timespec, error) {
	switch s {
	case "now":
		return unix.Timespec{Nsec: unix.UTIME_NOW}, nil
	case "omit":
		return unix.Timespec{Nsec: unix.UTIME_OMIT}, nil
	}
	sec, frac, _ := strings.Cut(s, ".")
	sv, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return unix.Timespec{}, err
	}
	var ns int64
	if frac != "" {
		if ns, err = strconv.ParseInt((frac + "000000000")[:9], 10, 64); err != nil {
			return unix.Timespec{}, err
		}
	}
	return unix.Timespec{Sec: sv, Nsec: ns}, nil
}

// confTime shows a timestamp: exactly if it is an explicit old one (the
// cases set times before 2017), "now" if it is within the last minutes.
func confTime(ts unix.Timespec) string {
	if ts.Sec < 1500000000 {
		return fmt.Sprintf("%d.%09d", ts.Sec, ts.Nsec)
	}
	if d := time.Since(time.Unix(ts.Sec, ts.Nsec)); d > -time.Minute && d < 10*time.Minute {
		return "now"
	}
	return fmt.Sprintf("at(%d)", ts.Sec)
}

var confTypeNames = map[uint32]string{
	unix.S_IFREG: "reg", unix.S_IFDIR: "dir", unix.S_IFIFO: "fifo", unix.S_IFSOCK: "sock",
	unix.S_IFCHR: "chr", unix.S_IFBLK: "blk", unix.S_IFLNK: "lnk",
}

// confDescribe shows what the suite compares of an entry's attributes:
// type, the 12 permission bits, owner, link count, and the size (not of
// directories: that is the filesystem's business) or device number.
// Inode numbers and times are left out.
func confDescribe(st *unix.Stat_t) string {
	typ, ok := confTypeNames[st.Mode&unix.S_IFMT]
	if !ok {
		typ = fmt.Sprintf("type%o", st.Mode&unix.S_IFMT)
	}
	s := fmt.Sprintf("%s %04o %d:%d nlink=%d", typ, st.Mode&0o7777, st.Uid, st.Gid, st.Nlink)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
	case unix.S_IFCHR, unix.S_IFBLK:
		s += fmt.Sprintf(" rdev=%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	default:
		s += fmt.Sprintf(" size=%d", st.Size)
	}
	return s
}

// run runs one step and returns its result; an error means the step
// itself is malformed (a bug in the case table).
func (x *confExec) run(step string) (confResult, error) {
	f := strings.Fields(step)
	if len(f) == 0 {
		return confResult{}, errors.New("empty step")
	}
	op, a := f[0], f[1:]
	var (
		res confResult
		err error // the syscall's
	)
	need := func(lo, hi int) error {
		if len(a) < lo || len(a) > hi {
			return fmt.Errorf("%s takes %d to %d arguments", op, lo, hi)
		}
		return nil
	}
	// refuse applies the default policy to a step that succeeded on the
	// reference and left st: it marks the result, and when enforcing
	// undoes the step (undo) and answers EPERM instead.
	refuse := func(st *unix.Stat_t, undo func()) {
		if x.policy == "" || err != nil || st == nil || !confPolicyRefuses(st) {
			return
		}
		res.Hit = true
		if x.policy == "enforce" {
			undo()
			err = unix.EPERM
			res.Out = ""
		}
	}
	lstatAt := func(fd int, p string, flags int) *unix.Stat_t {
		var st unix.Stat_t
		if unix.Fstatat(fd, p, &st, flags) != nil {
			return nil
		}
		return &st
	}
	switch op {
	case "open", "mkfile":
		// open PATH FLAGS [MODE] [>SLOT]; mkfile PATH MODE DATA creates
		// a new file with DATA.
		var (
			flags int
			mode  uint32
			slot  string
			data  []byte
		)
		if op == "mkfile" {
			if e := need(3, 3); e != nil {
				return res, e
			}
			flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL
			if mode, err = confMode(a[1]); err != nil {
				return res, err
			}
			data = confData(a[2])
		} else {
			if e := need(2, 4); e != nil {
				return res, e
			}
			for _, n := range strings.Split(a[1], "|") {
				v, ok := confOpenFlags[n]
				if !ok {
					return res, fmt.Errorf("unknown open flag %q", n)
				}
				flags |= v
			}
			for _, s := range a[2:] {
				if t, ok := strings.CutPrefix(s, ">"); ok {
					slot = t
				} else if mode, err = confMode(s); err != nil {
					return res, err
				}
			}
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		existed := lstatAt(dfd, p, 0) != nil
		var fd int
		fd, err = unix.Openat(dfd, p, flags|unix.O_CLOEXEC, mode)
		if err == nil && flags&unix.O_CREAT != 0 && !existed {
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil {
				refuse(&st, func() {
					unix.Close(fd)
					unix.Unlinkat(dfd, p, 0)
				})
			}
		}
		if err == nil {
			if data != nil {
				var n int
				n, err = unix.Write(fd, data)
				if err == nil && n != len(data) {
					res.Out = fmt.Sprintf("short write %d", n)
				}
			}
			if slot != "" {
				if old, ok := x.fds[slot]; ok {
					unix.Close(old)
				}
				x.fds[slot] = fd
			} else {
				unix.Close(fd)
			}
		}
	case "close":
		if e := need(1, 1); e != nil {
			return res, e
		}
		fd, e := x.slot(a[0])
		if e != nil {
			return res, e
		}
		delete(x.fds, a[0])
		if fd < 0 {
			err = unix.EBADF
		} else {
			err = unix.Close(fd)
		}
	case "pwrite", "read", "ftruncate", "fchmod", "fchown", "fstat", "fsync", "write":
		if len(a) < 1 {
			return res, fmt.Errorf("%s needs a slot", op)
		}
		fd, e := x.slot(a[0])
		if e != nil {
			return res, e
		}
		switch op {
		case "pwrite": // pwrite SLOT OFF DATA
			if e := need(3, 3); e != nil {
				return res, e
			}
			off, e := strconv.ParseInt(a[1], 10, 64)
			if e != nil {
				return res, e
			}
			var n int
			if n, err = unix.Pwrite(fd, confData(a[2]), off); err == nil {
				res.Out = fmt.Sprintf("n=%d", n)
			}
		case "write": // write SLOT DATA, at the descriptor's offset
			if e := need(2, 2); e != nil {
				return res, e
			}
			var n int
			if n, err = unix.Write(fd, confData(a[1])); err == nil {
				res.Out = fmt.Sprintf("n=%d", n)
			}
		case "read": // read SLOT OFF LEN
			if e := need(3, 3); e != nil {
				return res, e
			}
			off, e1 := strconv.ParseInt(a[1], 10, 64)
			n, e2 := strconv.Atoi(a[2])
			if e := errors.Join(e1, e2); e != nil {
				return res, e
			}
			buf := make([]byte, n)
			if n, err = unix.Pread(fd, buf, off); err == nil {
				res.Out = strconv.Quote(string(buf[:n]))
			}
		case "ftruncate": // ftruncate SLOT LEN
			if e := need(2, 2); e != nil {
				return res, e
			}
			n, e := strconv.ParseInt(a[1], 10, 64)
			if e != nil {
				return res, e
			}
			err = unix.Ftruncate(fd, n)
		case "fchmod": // fchmod SLOT MODE
			if e := need(2, 2); e != nil {
				return res, e
			}
			mode, e := confMode(a[1])
			if e != nil {
				return res, e
			}
			var pre unix.Stat_t
			unix.Fstat(fd, &pre)
			if err = unix.Fchmod(fd, mode); err == nil {
				var st unix.Stat_t
				unix.Fstat(fd, &st)
				refuse(&st, func() { unix.Fchmod(fd, pre.Mode&0o7777) })
			}
		case "fchown": // fchown SLOT UID GID
			if e := need(3, 3); e != nil {
				return res, e
			}
			uid, e1 := strconv.Atoi(a[1])
			gid, e2 := strconv.Atoi(a[2])
			if e := errors.Join(e1, e2); e != nil {
				return res, e
			}
			err = unix.Fchown(fd, uid, gid)
		case "fstat":
			var st unix.Stat_t
			if err = unix.Fstat(fd, &st); err == nil {
				res.Out = confDescribe(&st)
			}
		case "fsync":
			err = unix.Fsync(fd)
		}
	case "mkdir", "mkfifo", "mknod":
		// mkdir PATH MODE; mkfifo PATH MODE; mknod PATH TYPE MODE [MAJOR MINOR]
		if len(a) < 2 {
			return res, fmt.Errorf("%s needs a path and a mode", op)
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		switch op {
		case "mkdir":
			if e := need(2, 2); e != nil {
				return res, e
			}
			mode, e := confMode(a[1])
			if e != nil {
				return res, e
			}
			err = unix.Mkdirat(dfd, p, mode)
		case "mkfifo":
			if e := need(2, 2); e != nil {
				return res, e
			}
			mode, e := confMode(a[1])
			if e != nil {
				return res, e
			}
			err = unix.Mkfifoat(dfd, p, mode)
		case "mknod":
			if e := need(3, 5); e != nil {
				return res, e
			}
			typ, ok := confNodeTypes[a[1]]
			if !ok {
				return res, fmt.Errorf("unknown node type %q", a[1])
			}
			mode, e := confMode(a[2])
			if e != nil {
				return res, e
			}
			var dev uint64
			if len(a) == 5 {
				maj, e1 := strconv.ParseUint(a[3], 10, 32)
				mnr, e2 := strconv.ParseUint(a[4], 10, 32)
				if e := errors.Join(e1, e2); e != nil {
					return res, e
				}
				dev = unix.Mkdev(uint32(maj), uint32(mnr))
			}
			err = unix.Mknodat(dfd, p, typ|mode, int(dev))
		}
		if err == nil {
			refuse(lstatAt(dfd, p, unix.AT_SYMLINK_NOFOLLOW), func() {
				unix.Unlinkat(dfd, p, 0)
			})
		}
	case "symlink": // symlink TARGET PATH
		if e := need(2, 2); e != nil {
			return res, e
		}
		dfd, p, e := x.at(a[1])
		if e != nil {
			return res, e
		}
		err = unix.Symlinkat(a[0], dfd, p)
	case "link": // link OLD NEW [follow]
		if e := need(2, 3); e != nil {
			return res, e
		}
		d1, p1, e1 := x.at(a[0])
		d2, p2, e2 := x.at(a[1])
		if e := errors.Join(e1, e2); e != nil {
			return res, e
		}
		flags := 0
		if len(a) == 3 && a[2] == "follow" {
			flags = unix.AT_SYMLINK_FOLLOW
		}
		err = unix.Linkat(d1, p1, d2, p2, flags)
	case "rename": // rename OLD NEW [noreplace|exchange]
		if e := need(2, 3); e != nil {
			return res, e
		}
		d1, p1, e1 := x.at(a[0])
		d2, p2, e2 := x.at(a[1])
		if e := errors.Join(e1, e2); e != nil {
			return res, e
		}
		var flags uint
		if len(a) == 3 {
			switch a[2] {
			case "noreplace":
				flags = unix.RENAME_NOREPLACE
			case "exchange":
				flags = unix.RENAME_EXCHANGE
			default:
				return res, fmt.Errorf("unknown rename flag %q", a[2])
			}
		}
		err = unix.Renameat2(d1, p1, d2, p2, flags)
	case "unlink", "rmdir":
		if e := need(1, 1); e != nil {
			return res, e
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		flags := 0
		if op == "rmdir" {
			flags = unix.AT_REMOVEDIR
		}
		err = unix.Unlinkat(dfd, p, flags)
	case "chmod": // chmod PATH MODE (follows symlinks)
		if e := need(2, 2); e != nil {
			return res, e
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		mode, e := confMode(a[1])
		if e != nil {
			return res, e
		}
		pre := lstatAt(dfd, p, 0)
		if err = unix.Fchmodat(dfd, p, mode, 0); err == nil {
			refuse(lstatAt(dfd, p, 0), func() { unix.Fchmodat(dfd, p, pre.Mode&0o7777, 0) })
		}
	case "chown", "lchown": // chown PATH UID GID
		if e := need(3, 3); e != nil {
			return res, e
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		uid, e1 := strconv.Atoi(a[1])
		gid, e2 := strconv.Atoi(a[2])
		if e := errors.Join(e1, e2); e != nil {
			return res, e
		}
		flags := 0
		if op == "lchown" {
			flags = unix.AT_SYMLINK_NOFOLLOW
		}
		err = unix.Fchownat(dfd, p, uid, gid, flags)
	case "truncate": // truncate PATH LEN
		if e := need(2, 2); e != nil {
			return res, e
		}
		p, e := x.path(a[0])
		if e != nil {
			return res, e
		}
		n, e := strconv.ParseInt(a[1], 10, 64)
		if e != nil {
			return res, e
		}
		err = unix.Truncate(p, n)
	case "writeat": // writeat PATH OFF DATA: open for writing, pwrite, close
		if e := need(3, 3); e != nil {
			return res, e
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		off, e := strconv.ParseInt(a[1], 10, 64)
		if e != nil {
			return res, e
		}
		var fd int
		if fd, err = unix.Openat(dfd, p, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0); err == nil {
			var n int
			if n, err = unix.Pwrite(fd, confData(a[2]), off); err == nil {
				res.Out = fmt.Sprintf("n=%d", n)
			}
			unix.Close(fd)
		}
	case "cat": // cat PATH: the whole contents
		if e := need(1, 1); e != nil {
			return res, e
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		var fd int
		if fd, err = unix.Openat(dfd, p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0); err == nil {
			buf := make([]byte, 1<<16)
			var n int
			if n, err = unix.Read(fd, buf); err == nil {
				res.Out = strconv.Quote(string(buf[:n]))
			}
			unix.Close(fd)
		}
	case "utimens": // utimens PATH (null | ATIME MTIME) [nofollow]
		if len(a) < 2 {
			return res, errors.New("utimens needs a path and times")
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		flags := 0
		if a[len(a)-1] == "nofollow" {
			flags = unix.AT_SYMLINK_NOFOLLOW
			a = a[:len(a)-1]
		}
		if len(a) == 2 && a[1] == "null" {
			pp, e := unix.BytePtrFromString(p)
			if e != nil {
				return res, e
			}
			if _, _, en := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(dfd), uintptr(unsafe.Pointer(pp)), 0, uintptr(flags), 0, 0); en != 0 {
				err = en
			}
			break
		}
		if e := need(3, 3); e != nil {
			return res, e
		}
		at, e1 := confTimeArg(a[1])
		mt, e2 := confTimeArg(a[2])
		if e := errors.Join(e1, e2); e != nil {
			return res, e
		}
		err = unix.UtimesNanoAt(dfd, p, []unix.Timespec{at, mt}, flags)
	case "stat", "lstat", "times": // stat PATH; times PATH [nofollow]
		if e := need(1, 2); e != nil {
			return res, e
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		flags := 0
		if op == "lstat" || (len(a) == 2 && a[1] == "nofollow") {
			flags = unix.AT_SYMLINK_NOFOLLOW
		}
		var st unix.Stat_t
		if err = unix.Fstatat(dfd, p, &st, flags); err == nil {
			if op == "times" {
				res.Out = "atime=" + confTime(st.Atim) + " mtime=" + confTime(st.Mtim)
			} else {
				res.Out = confDescribe(&st)
			}
		}
	case "readlink":
		if e := need(1, 1); e != nil {
			return res, e
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		buf := make([]byte, 8192)
		var n int
		if n, err = unix.Readlinkat(dfd, p, buf); err == nil {
			res.Out = confShort(string(buf[:n]))
		}
	case "ls":
		if e := need(1, 1); e != nil {
			return res, e
		}
		dfd, p, e := x.at(a[0])
		if e != nil {
			return res, e
		}
		var fd int
		if fd, err = unix.Openat(dfd, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			d := os.NewFile(uintptr(fd), p)
			var names []string
			names, err = d.Readdirnames(-1)
			d.Close()
			sort.Strings(names)
			res.Out = strings.Join(names, ",")
		}
	case "setxattr", "getxattr", "removexattr", "listxattr":
		// setxattr PATH NAME VALUE [nofollow] ("cap": confCapBlob);
		// getxattr PATH NAME [nofollow]; removexattr PATH NAME [nofollow];
		// listxattr PATH [nofollow]
		if len(a) < 1 {
			return res, fmt.Errorf("%s needs a path", op)
		}
		p, e := x.path(a[0])
		if e != nil {
			return res, e
		}
		nofollow := a[len(a)-1] == "nofollow"
		if nofollow {
			a = a[:len(a)-1]
		}
		switch op {
		case "setxattr":
			if e := need(3, 3); e != nil {
				return res, e
			}
			val := []byte(a[2])
			if a[2] == "cap" {
				val = confCapBlob
			}
			var old []byte
			if x.policy != "" && a[1] == confCapXattr {
				buf := make([]byte, 256)
				if n, e := unix.Getxattr(p, a[1], buf); e == nil {
					old = buf[:n]
				}
			}
			if nofollow {
				err = unix.Lsetxattr(p, a[1], val, 0)
			} else {
				err = unix.Setxattr(p, a[1], val, 0)
			}
			if err == nil && a[1] == confCapXattr && x.policy != "" {
				res.Hit = true
				if x.policy == "enforce" {
					if old != nil {
						unix.Setxattr(p, a[1], old, 0)
					} else {
						unix.Removexattr(p, a[1])
					}
					err = unix.EPERM
				}
			}
		case "getxattr":
			if e := need(2, 2); e != nil {
				return res, e
			}
			buf := make([]byte, 4096)
			var n int
			if nofollow {
				n, err = unix.Lgetxattr(p, a[1], buf)
			} else {
				n, err = unix.Getxattr(p, a[1], buf)
			}
			if err == nil {
				res.Out = hex.EncodeToString(buf[:n])
			}
		case "removexattr":
			if e := need(2, 2); e != nil {
				return res, e
			}
			if nofollow {
				err = unix.Lremovexattr(p, a[1])
			} else {
				err = unix.Removexattr(p, a[1])
			}
		case "listxattr":
			if e := need(1, 1); e != nil {
				return res, e
			}
			buf := make([]byte, 4096)
			var n int
			if nofollow {
				n, err = unix.Llistxattr(p, buf)
			} else {
				n, err = unix.Listxattr(p, buf)
			}
			if err == nil {
				names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
				sort.Strings(names)
				res.Out = strings.Join(names, ",")
			}
		}
	case "umask":
		if e := need(1, 1); e != nil {
			return res, e
		}
		mode, e := confMode(a[0])
		if e != nil {
			return res, e
		}
		unix.Umask(int(mode))
	default:
		return res, fmt.Errorf("unknown op %q", op)
	}
	res.E = confErrno(err)
	if err != nil {
		res.Out = ""
	}
	return res, nil
}

// confShort shortens long text (long symlink targets) for messages,
// keeping it comparable.
func confShort(s string) string {
	if len(s) <= 80 {
		return strconv.Quote(s)
	}
	sum := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%q...(%d bytes, sha256 %x)", s[:40], len(s), sum[:6])
}

// confShortStep shortens a step for messages (long paths).
func confShortStep(s string) string {
	f := strings.Fields(s)
	for i, w := range f {
		if len(w) > 60 {
			f[i] = fmt.Sprintf("%s...(%d bytes)", w[:30], len(w))
		}
	}
	return strings.Join(f, " ")
}

// confWorker runs req as user u and returns the results of each run.
func confWorker(t *testing.T, user string, req confRequest) [][]confResult {
	t.Helper()
	u := confUsers[user]
	in, err := json.Marshal(&req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), confWorkerEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}}
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("conformance worker as %s hung; it was at:\n%s", user, strings.Join(lastN(strings.Split(strings.TrimSpace(stderr.String()), "\n"), 3), "\n"))
	}
	if err != nil {
		t.Fatalf("conformance worker as %s: %v\n%s", user, err, strings.Join(lastN(strings.Split(strings.TrimSpace(stderr.String()), "\n"), 5), "\n"))
	}
	var resp confResponse
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil || len(resp.Runs) != len(req.Runs) {
		t.Fatalf("conformance worker as %s: bad response (%v): %.500s", user, err, stdout.String())
	}
	return resp.Runs
}

// confOutcome is what running the cases in one tree gave.
type confOutcome struct {
	setup, steps [][]confResult      // by case
	snap         []map[string]string // by case: confSnap of its directory
}

// confExecute runs every case not in skip in its directory under root:
// all setups as root, then the steps of each user's cases in one worker
// per user, then snapshots each case directory.
func confExecute(t *testing.T, root string, cases []confCase, policy string, skip map[int]string) *confOutcome {
	t.Helper()
	o := &confOutcome{
		setup: make([][]confResult, len(cases)),
		steps: make([][]confResult, len(cases)),
		snap:  make([]map[string]string, len(cases)),
	}
	var req confRequest
	var idx []int
	for i, c := range cases {
		if _, ok := skip[i]; !ok && len(c.setup) > 0 {
			req.Runs = append(req.Runs, confRun{Dir: filepath.Join(root, confID(i)), Steps: c.setup})
			idx = append(idx, i)
		}
	}
	req.Policy, req.Umask = policy, 0
	for k, r := range confWorker(t, "root", req) {
		o.setup[idx[k]] = r
	}
	for _, user := range confUserOrder {
		req, idx = confRequest{Policy: policy, Umask: 0o022}, nil
		for i, c := range cases {
			if _, ok := skip[i]; !ok && c.user == user {
				req.Runs = append(req.Runs, confRun{Dir: filepath.Join(root, confID(i)), Steps: c.steps})
				idx = append(idx, i)
			}
		}
		if len(req.Runs) == 0 {
			continue
		}
		for k, r := range confWorker(t, user, req) {
			o.steps[idx[k]] = r
		}
	}
	for i := range cases {
		if _, ok := skip[i]; ok {
			continue
		}
		s, err := confSnap(filepath.Join(root, confID(i)))
		if err != nil {
			t.Fatalf("case %s: %v", cases[i].name, err)
		}
		o.snap[i] = s
	}
	return o
}

func confID(i int) string { return fmt.Sprintf("c%03d", i) }

// confSnap describes every entry under dir, dir itself as ".", by path
// relative to dir: confDescribe, the symlink target, a hash of a regular
// file's contents, and the xattrs. It walks with descriptors, so paths
// longer than PATH_MAX are no obstacle.
func confSnap(dir string) (map[string]string, error) {
	m := make(map[string]string)
	describe := func(dfd int, name, rel string) (*unix.Stat_t, error) {
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, fmt.Errorf("lstat %s: %w", rel, err)
		}
		d := confDescribe(&st)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			buf := make([]byte, 8192)
			n, err := unix.Readlinkat(dfd, name, buf)
			if err != nil {
				return nil, fmt.Errorf("readlink %s: %w", rel, err)
			}
			d += " -> " + confShort(string(buf[:n]))
		case unix.S_IFREG:
			fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("open %s: %w", rel, err)
			}
			h := sha256.New()
			file := os.NewFile(uintptr(fd), rel)
			_, err = io.Copy(h, file)
			file.Close()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", rel, err)
			}
			d += fmt.Sprintf(" sha256=%x", h.Sum(nil)[:6])
		}
		p := fmt.Sprintf("/proc/self/fd/%d/%s", dfd, name)
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(p, buf)
		if err != nil && err != unix.ENOTSUP {
			return nil, fmt.Errorf("listxattr %s: %w", rel, err)
		}
		var xs []string
		for _, x := range strings.Split(string(buf[:max(n, 0)]), "\x00") {
			if x == "" {
				continue
			}
			v := make([]byte, 4096)
			vn, err := unix.Lgetxattr(p, x, v)
			if err != nil {
				return nil, fmt.Errorf("getxattr %s %s: %w", rel, x, err)
			}
			xs = append(xs, x+"="+hex.EncodeToString(v[:vn]))
		}
		sort.Strings(xs)
		if len(xs) > 0 {
			d += " xattrs[" + strings.Join(xs, " ") + "]"
		}
		m[rel] = d
		return &st, nil
	}
	var walk func(dfd int, rel string) error
	walk = func(dfd int, rel string) error {
		d := os.NewFile(uintptr(dfd), rel)
		defer d.Close()
		names, err := d.Readdirnames(-1)
		if err != nil {
			return fmt.Errorf("readdir %s: %w", rel, err)
		}
		sort.Strings(names)
		for _, n := range names {
			r := path.Join(rel, n)
			st, err := describe(dfd, n, r)
			if err != nil {
				return err
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				fd, err := unix.Openat(dfd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("open %s: %w", r, err)
				}
				if err := walk(fd, r); err != nil {
					return err
				}
			}
		}
		return nil
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if _, err := describe(fd, ".", "."); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return m, walk(fd, ".")
}

// confCompare returns a line for every difference between the reference
// (expected) and the mount (got) of case c.
func confCompare(c confCase, ref, mnt *confOutcome, i int) []string {
	var out []string
	steps := func(phase, user string, list []string, exp, got []confResult) {
		for j, s := range list {
			if j >= len(exp) || j >= len(got) {
				out = append(out, fmt.Sprintf("%s %d %q as %s: no result (expected %d, got %d)", phase, j, confShortStep(s), user, len(exp), len(got)))
				return
			}
			if exp[j].E != got[j].E || exp[j].Out != got[j].Out {
				out = append(out, fmt.Sprintf("%s %d %q as %s: expected %s, got %s", phase, j, confShortStep(s), user, exp[j], got[j]))
			}
		}
	}
	steps("setup step", "root", c.setup, ref.setup[i], mnt.setup[i])
	steps("step", c.user, c.steps, ref.steps[i], mnt.steps[i])
	es, gs := ref.snap[i], mnt.snap[i]
	var paths []string
	for p := range es {
		paths = append(paths, p)
	}
	for p := range gs {
		if _, ok := es[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		e, eok := es[p]
		g, gok := gs[p]
		switch {
		case !eok:
			out = append(out, fmt.Sprintf("final state of %s: expected no entry, got %s", confShortStep(p), g))
		case !gok:
			out = append(out, fmt.Sprintf("final state of %s: expected %s, got no entry", confShortStep(p), e))
		case e != g:
			out = append(out, fmt.Sprintf("final state of %s: expected %s, got %s", confShortStep(p), e, g))
		}
	}
	return out
}

// confHelpHas reports whether tdfs binary name's --help mentions flag.
func confHelpHas(name, flag string) bool {
	out, _ := exec.Command(bin(name), "--help").CombinedOutput()
	return strings.Contains(string(out), flag)
}

// TestConformance runs the case table (conformance_cases_test.go) in the
// two configurations, each with its own master and slave.
func TestConformance(t *testing.T) {
	for _, cfg := range []string{"allow", "default"} {
		t.Run(cfg, func(t *testing.T) {
			t.Parallel()
			runConformance(t, cfg == "default")
		})
	}
}

func runConformance(t *testing.T, defaults bool) {
	start := time.Now()
	k := newPKI(t, "s1")
	mflags, sflags := []string{"--allow-other"}, []string(nil)
	policy, skipWhy := "enforce", ""
	if !defaults {
		policy = "report"
		var missing []string
		for _, f := range []struct{ bin, flag string }{
			{"tdfs-master", "--allow-setuid"}, {"tdfs-master", "--allow-devices"},
			{"tdfs-slave", "--allow-setuid"}, {"tdfs-slave", "--allow-devices"},
		} {
			if !confHelpHas(f.bin, f.flag) {
				missing = append(missing, f.bin+" "+f.flag)
				continue
			}
			if f.bin == "tdfs-master" {
				mflags = append(mflags, f.flag)
			} else {
				sflags = append(sflags, f.flag)
			}
		}
		if len(missing) > 0 {
			skipWhy = "this build lacks " + strings.Join(missing, ", ") +
				": the cases with device nodes, set-id bits or file capabilities cannot run with them allowed"
			t.Log(skipWhy)
		}
	}
	s := startSlave(t, k, "s1", sflags...)
	m := startMaster(t, k, []*slave{s}, mflags...)
	ref := filepath.Join(t.TempDir(), "ref")
	if err := os.Mkdir(ref, 0o755); err != nil {
		t.Fatal(err)
	}
	openUp(t, ref)
	openUp(t, m.mnt)
	t.Logf("reference %s (%d bytes), mount %s (%d bytes), backing dir %s (%d bytes)",
		ref, len(ref), m.mnt, len(m.mnt), m.dir, len(m.dir))
	cases := confCases(max(len(ref), len(m.mnt)))
	for i, c := range cases {
		u, ok := confUsers[c.user]
		if !ok {
			t.Fatalf("case %s: unknown user %q", c.name, c.user)
		}
		for _, root := range []string{ref, m.mnt} {
			d := filepath.Join(root, confID(i))
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(d, int(u.uid), int(u.gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	refOut := confExecute(t, ref, cases, policy, nil)
	skip := map[int]string{}
	nsteps := 0
	for i, c := range cases {
		nsteps += len(c.setup) + len(c.steps)
		isHit := func(r confResult) bool { return r.Hit }
		setupHit := slices.ContainsFunc(refOut.setup[i], isHit)
		for j, r := range refOut.setup[i] {
			if r.E == "EOPNOTSUPP" && strings.Contains(c.setup[j], confCapXattr) {
				skip[i] = "the reference filesystem does not hold file capabilities"
				continue
			}
			// A setup step may fail where an earlier one was refused
			// by the default policy (it made nothing).
			if r.E != "0" && !setupHit {
				t.Errorf("case %s: setup step %d %q fails on the reference itself: %s (a bug in the case table)", c.name, j, confShortStep(c.setup[j]), r)
			}
		}
		hit := setupHit || slices.ContainsFunc(refOut.steps[i], isHit)
		if _, ok := skip[i]; !ok && hit && skipWhy != "" {
			skip[i] = skipWhy
		}
	}
	mntOut := confExecute(t, m.mnt, cases, "", skip)
	t.Logf("%d cases, %d steps, ran in both trees in %v", len(cases), nsteps, time.Since(start).Round(time.Millisecond))
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if why, ok := skip[i]; ok {
				t.Skip(why)
			}
			// The first differences of a case; the rest mostly follow
			// from them.
			const shown = 8
			diffs := confCompare(c, refOut, mntOut, i)
			for _, d := range diffs[:min(len(diffs), shown)] {
				t.Errorf("case %s (dir %s, as %s): %s", c.name, confID(i), c.user, d)
			}
			if len(diffs) > shown {
				t.Errorf("case %s: ... and %d more differences", c.name, len(diffs)-shown)
			}
		})
	}
	confSettle(t, m, []*slave{s})
}

// confSettle makes everything durable on the slaves, waits for them to
// converge to the backing dir (a strict tree compare), then stops the
// daemons cleanly.
func confSettle(t *testing.T, m *master, slaves []*slave) {
	t.Helper()
	f, err := os.Open(m.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync of the mount root: %v", err)
	}
	f.Close()
	timeout := 60 * time.Second
	// No op may reach a slave that it would leave out: the mount refuses
	// those first.
	for _, s := range slaves {
		if l := s.linesFrom(0, `refused by this slave|closing master connection`); len(l) > 0 {
			t.Errorf("slave %s refused ops or closed the connection:\n%s", s.addr, strings.Join(lastN(l, 10), "\n"))
			timeout = 10 * time.Second
		}
	}
	converge(t, m, slaves, timeout)
	m.stop(syscall.SIGTERM, 60*time.Second)
	for _, s := range slaves {
		s.stop(syscall.SIGTERM, 30*time.Second)
	}
}
