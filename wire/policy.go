package wire

import (
	"fmt"
	"strings"
)

// Policy is what a slave holds in its replica beyond ordinary files,
// directories, symlinks, fifos and sockets: it announces it in its
// HelloAck, and the master's mount refuses (EPERM, EFBIG) what the
// strictest slave would refuse, before the backing dir changes. An op a
// slave refuses would otherwise have to be left out of its replica.
type Policy struct {
	Flags PolicyFlags
	// MaxFileSize is the largest file size, and end of a write, the slave
	// holds.
	MaxFileSize uint64
}

// PolicyFlags are the kinds of entries and attributes a policy allows.
type PolicyFlags uint32

const (
	// PolicySetid: setuid and setgid bits on anything but a directory,
	// and the security.capability xattr (file capabilities). Set-id bits
	// on directories are always held.
	PolicySetid PolicyFlags = 1 << iota
	// PolicyDevices: character and block device nodes.
	PolicyDevices
	// PolicyPrivXattrs: trusted.* xattrs and POSIX ACLs
	// (system.posix_acl_*), which only a slave running as root holds.
	PolicyPrivXattrs

	policyKnown = PolicySetid | PolicyDevices | PolicyPrivXattrs
)

// PermissivePolicy allows everything the protocol carries.
var PermissivePolicy = Policy{Flags: policyKnown, MaxFileSize: 1<<63 - 1}

// Allows reports whether every flag of f is in p.
func (p Policy) Allows(f PolicyFlags) bool { return p.Flags&f == f }

// Meet returns the strictest policy allowing only what both p and q allow.
func (p Policy) Meet(q Policy) Policy {
	return Policy{Flags: p.Flags & q.Flags, MaxFileSize: min(p.MaxFileSize, q.MaxFileSize)}
}

func (p Policy) String() string {
	var s []string
	for _, f := range []struct {
		f    PolicyFlags
		name string
	}{{PolicySetid, "setid"}, {PolicyDevices, "devices"}, {PolicyPrivXattrs, "trusted-xattrs"}} {
		if p.Allows(f.f) {
			s = append(s, f.name)
		} else {
			s = append(s, "no-"+f.name)
		}
	}
	return fmt.Sprintf("%s max-file-size=%d", strings.Join(s, ","), p.MaxFileSize)
}

// appendPolicy encodes: flags, max file size.
func appendPolicy(b []byte, p *Policy) []byte {
	b = appendUvarint(b, uint64(p.Flags))
	return appendUvarint(b, p.MaxFileSize)
}

func (d *decoder) policy() Policy {
	f := d.uint32("policy flags")
	if d.err == nil && PolicyFlags(f)&^policyKnown != 0 {
		d.fail(fmt.Errorf("%w: unknown policy flags %#x", ErrMalformed, f))
	}
	return Policy{Flags: PolicyFlags(f), MaxFileSize: d.uvarint()}
}
