package main

import "syscall"

func lazyUnmount(mnt string) {
	_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
}
