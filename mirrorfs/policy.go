package mirrorfs

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tdfs/tdfs/wire"
)

// What the mount refuses because a slave would. A slave holds only what
// its policy allows (wire.Policy: set-id files and file capabilities,
// device nodes, privileged xattrs, a size bound) and leaves anything else
// out of its replica. An op it would leave out is refused here instead,
// to the application that asked, before the backing dir changes: the
// replicas then hold every byte the master holds. The policy is the
// strictest of the master's own configuration and of every slave that
// has announced one (Server.SetPolicy).
//
// Set-id bits on a directory are always allowed (they grant no
// privilege); trusted.* xattrs and POSIX ACLs need a slave running as
// root; an xattr namespace other than user.*, security.*, trusted.* and
// the POSIX ACLs is never replicated.

// setidBits are the setuid and setgid mode bits.
const setidBits = syscall.S_ISUID | syscall.S_ISGID

// policyGate holds the policy the mount enforces (read at every write:
// an atomic pointer) and logs its refusals, at most one line per kind of
// refusal each refusalLogEvery.
type policyGate struct {
	p      atomic.Pointer[wire.Policy]
	mu     sync.Mutex // guards logged
	logged map[string]refusalLog
}

type refusalLog struct {
	at     time.Time
	missed int // refusals of this kind not logged since at
}

const refusalLogEvery = 10 * time.Second

// get returns the policy; a mirror made without one (Options.Policy nil)
// allows everything the protocol carries.
func (g *policyGate) get() wire.Policy {
	if p := g.p.Load(); p != nil {
		return *p
	}
	return wire.PermissivePolicy
}

// SetPolicy changes what the mount refuses from now on: the caller passes
// the strictest of its own configuration and its slaves' policies.
func (s *Server) SetPolicy(p wire.Policy) {
	if old := s.m.gate.p.Swap(&p); old == nil || *old != p {
		s.m.log.Info("mirrorfs: the mount now allows only what every slave holds", "policy", p.String())
	}
}

// Policy returns the policy the mount enforces.
func (s *Server) Policy() wire.Policy { return s.m.gate.get() }

// refuse logs a refusal of kind (rate-limited) and returns an error
// carrying errno for the application.
func (m *mirror) refuse(errno syscall.Errno, kind, rel, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	g := &m.gate
	g.mu.Lock()
	if g.logged == nil {
		g.logged = make(map[string]refusalLog)
	}
	l := g.logged[kind]
	now := time.Now()
	log := now.Sub(l.at) >= refusalLogEvery
	missed := l.missed
	if log {
		g.logged[kind] = refusalLog{at: now}
	} else {
		l.missed++
		g.logged[kind] = l
	}
	g.mu.Unlock()
	if log {
		args := []any{"path", rel, "errno", errno.Error()}
		if missed > 0 {
			args = append(args, "also_refused_since_last_line", missed)
		}
		m.log.Warn("mirrorfs: refused, as a slave would not replicate it: "+msg, args...)
	}
	return fmt.Errorf("%s: %w", msg, errno)
}

// checkMode refuses a mode with a set-id bit on an object of type typ
// (S_IF* bits) other than a directory, unless the policy allows them.
func (m *mirror) checkMode(what, rel string, typ, mode uint32) error {
	if typ == syscall.S_IFDIR || mode&setidBits == 0 {
		return nil
	}
	if m.gate.get().Allows(wire.PolicySetid) {
		return nil
	}
	return m.refuse(syscall.EPERM, "setid", rel, "%s with mode %#o: set-id bits on files are replicated only with --allow-setuid on the master and every slave",
		what, mode&0o7777)
}

// checkDevice refuses a character or block device unless the policy
// allows them.
func (m *mirror) checkDevice(rel string, mode uint32) error {
	typ := mode & syscall.S_IFMT
	if typ != syscall.S_IFCHR && typ != syscall.S_IFBLK {
		return nil
	}
	if m.gate.get().Allows(wire.PolicyDevices) {
		return nil
	}
	return m.refuse(syscall.EPERM, "device", rel, "mknod of a device node: devices are replicated only with --allow-devices on the master and every slave")
}

// checkXattr refuses setting or removing an xattr a slave would not hold.
func (m *mirror) checkXattr(rel, name string) error {
	p := m.gate.get()
	switch {
	case name == capXattr:
		if p.Allows(wire.PolicySetid) {
			return nil
		}
		return m.refuse(syscall.EPERM, "xattr", rel, "xattr %q (file capabilities) is replicated only with --allow-setuid on the master and every slave", name)
	case strings.HasPrefix(name, "user."), strings.HasPrefix(name, "security."):
		return nil
	case strings.HasPrefix(name, "trusted."), name == "system.posix_acl_access", name == "system.posix_acl_default":
		if p.Allows(wire.PolicyPrivXattrs) {
			return nil
		}
		return m.refuse(syscall.EPERM, "xattr", rel, "xattr %q is replicated only to slaves running as root", name)
	}
	return m.refuse(syscall.EPERM, "xattr", rel, "xattr %q: its namespace is not replicated (user.*, security.*, trusted.*, POSIX ACLs)", name)
}

// checkEnd refuses a file size, or the end of a write at off of n bytes,
// beyond the largest file every slave holds (EFBIG, as for a file past
// RLIMIT_FSIZE). n names the file in the log line.
func (m *mirror) checkEnd(what string, n *node, off, length uint64) error {
	max := m.gate.get().MaxFileSize
	if off <= max && length <= max-off {
		return nil
	}
	rel, _ := relPath(n.inode())
	return m.refuse(syscall.EFBIG, "size", rel, "%s ending at %d: beyond the largest file a slave holds (%d bytes, its --max-file-size)", what, off+length, max)
}
