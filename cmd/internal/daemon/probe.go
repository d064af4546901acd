package daemon

import (
	"fmt"
	"net"
	"os"
	"os/exec"
)

// ProbeListen checks, while configuring, that a daemon will be able to
// listen on addr (a TCP or UDP address): a port in use or an address that
// is not this host's is a configuration error, found before anything is
// started or recorded (a master would otherwise mint its epoch first).
// The socket is closed again; the daemon listens for real later.
func ProbeListen(flag, network, addr string) error {
	var err error
	switch network {
	case "udp":
		var c net.PacketConn
		if c, err = net.ListenPacket("udp", addr); err == nil {
			c.Close()
		}
	default:
		var l net.Listener
		if l, err = net.Listen(network, addr); err == nil {
			l.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return nil
}

// CanMount reports, for a daemon that mounts FUSE, whether it can: as root
// it mounts itself; otherwise it needs a fusermount3 (or fusermount)
// binary.
func CanMount() error {
	if os.Geteuid() == 0 {
		return nil
	}
	for _, b := range []string{"fusermount3", "fusermount"} {
		if _, err := exec.LookPath(b); err == nil {
			return nil
		}
	}
	return fmt.Errorf("not running as root, and no fusermount3 or fusermount on PATH to mount with: run tdfs-master as root (the systemd unit does)")
}
