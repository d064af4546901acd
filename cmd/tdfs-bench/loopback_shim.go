package main

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// TEMPORARY until mirrorfs exports its bare options and counter.
type bareServer struct{ *fuse.Server }

func (b bareServer) Requests() map[string]uint64 { return nil }

func mountBare(backing, mnt string) (bareServer, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return bareServer{}, err
	}
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return bareServer{}, err
	}
	timeout := time.Second
	srv, err := fs.Mount(mnt, root, &fs.Options{EntryTimeout: &timeout, AttrTimeout: &timeout, NullPermissions: true,
		MountOptions: fuse.MountOptions{DisabledCapabilities: fuse.CAP_PASSTHROUGH | fuse.CAP_WRITEBACK_CACHE,
			MaxWrite: 1 << 20, DirectMount: true, Options: []string{"default_permissions"}}})
	return bareServer{srv}, err
}
