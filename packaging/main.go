// Command packaging builds the tdfs Debian package from a tree staged by
// "make install DESTDIR=STAGE PREFIX=/usr" (make deb does both):
//
//	cd packaging && go run . -root STAGE -version 0.5.0 -out ../dist
//
// Every file under STAGE goes in the package at its path below STAGE, with
// its mode, owned by root; those under /etc are conffiles (dpkg keeps an
// administrator's changes to them). It prints the path of the .deb,
// OUT/tdfs_VERSION_ARCH.deb.
//
// This is a module of its own so that the packaging library stays out of
// tdfs's dependencies.
package main

import (
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// required are the files a staged tree must hold: a tree that lacks one
// was not made by make install.
var required = []string{
	"/usr/bin/tdfs-master", "/usr/bin/tdfs-slave", "/usr/bin/tdfs-certs",
	"/lib/systemd/system/tdfs-master.service", "/lib/systemd/system/tdfs-slave.service",
	"/etc/tdfs/master.yaml", "/etc/tdfs/slave.yaml",
	"/usr/share/doc/tdfs/copyright",
}

const description = `replicating filesystem: a FUSE mount whose changes stream to replicas
tdfs-master mounts a view of a backing directory and streams every change
made through it, in order, over QUIC with mutual TLS, to tdfs-slave
daemons, which apply it to their own directories. tdfs-certs makes the
private CA and the certificates both need.
.
The systemd units tdfs-master.service and tdfs-slave.service are installed
but neither enabled nor started: write /etc/tdfs/master.yaml or
/etc/tdfs/slave.yaml and the certificates first.`

func main() {
	root := flag.String("root", "", "staged tree to package (make install DESTDIR=...)")
	version := flag.String("version", "", "package `VERSION`, as Debian orders them (0.5.0, 0.5.0+git20261206.68aa327)")
	arch := flag.String("arch", runtime.GOARCH, "Go `ARCH` the binaries were built for")
	out := flag.String("out", ".", "`DIR` to write the package to")
	maintainer := flag.String("maintainer", "tdfs authors <tdfs@localhost>", "the package's Maintainer field")
	scripts := flag.String("scripts", "debian", "`DIR` holding postinst, prerm and postrm")
	flag.Parse()
	if flag.NArg() > 0 || *root == "" || *version == "" {
		fmt.Fprintln(os.Stderr, "usage: go run . -root STAGE -version VERSION [-arch ARCH] [-out DIR]")
		os.Exit(2)
	}
	path, err := build(*root, *version, *arch, *out, *maintainer, *scripts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "packaging:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

func build(root, version, arch, outDir, maintainer, scripts string) (string, error) {
	mtime, err := sourceDate()
	if err != nil {
		return "", err
	}
	contents, err := stagedContents(root, mtime)
	if err != nil {
		return "", err
	}
	var bins []string
	for _, c := range contents {
		if strings.HasPrefix(c.Destination, "/usr/bin/") {
			bins = append(bins, c.Source)
		}
	}
	depends, err := libcDepends(bins)
	if err != nil {
		return "", err
	}
	info := &nfpm.Info{
		Name:     "tdfs",
		Arch:     arch,
		Platform: "linux",
		Version:  version,
		// The version as given: nfpm would otherwise split it as a
		// semantic version and put it together again.
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    maintainer,
		Description:   description,
		Homepage:      "https://github.com/tdfs/tdfs",
		License:       "BSD-2-Clause",
		MTime:         mtime,
		Overridables: nfpm.Overridables{
			// Nothing but the C library, and only for binaries built with
			// cgo: the master mounts with mount(2) itself, as root,
			// without fusermount, so it needs the kernel's fuse module and
			// no fuse package.
			Depends:  depends,
			Contents: contents,
			Umask:    0o022,
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(scripts, "postinst"),
				PreRemove:   filepath.Join(scripts, "prerm"),
				PostRemove:  filepath.Join(scripts, "postrm"),
			},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return "", err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(outDir, deb.Default.ConventionalFileName(info))
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	err = deb.Default.Package(info, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return path, nil
}

// sourceDate is the time given to every file of the package:
// SOURCE_DATE_EPOCH (make deb sets it to the commit's time), else now.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Now().UTC().Truncate(time.Second), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %v", s, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// stagedContents lists the regular files below root as package contents.
func stagedContents(root string, mtime time.Time) (files.Contents, error) {
	var contents files.Contents
	have := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		dst := "/" + filepath.ToSlash(rel)
		if d.IsDir() {
			// The package's own directories below /etc (/etc/tdfs, 0700),
			// with their modes; the others are made as dpkg does.
			if strings.HasPrefix(dst, "/etc/") {
				contents = append(contents, &files.Content{Destination: dst, Type: files.TypeDir,
					FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: fi.Mode().Perm(), MTime: mtime}})
			}
			return nil
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file or directory", p)
		}
		c := &files.Content{
			Source:      p,
			Destination: dst,
			FileInfo: &files.ContentFileInfo{
				Owner: "root", Group: "root",
				Mode:  fi.Mode().Perm(),
				MTime: mtime,
			},
		}
		if strings.HasPrefix(dst, "/etc/") {
			c.Type = files.TypeConfig
		}
		contents = append(contents, c)
		have[dst] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, r := range required {
		if !have[r] {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		return nil, errors.New(root + " lacks " + strings.Join(missing, ", ") + " (not staged by make install PREFIX=/usr?)")
	}
	sort.Slice(contents, func(i, j int) bool { return contents[i].Destination < contents[j].Destination })
	return contents, nil
}

// libcLibs are the shared libraries of Debian's libc6 package that a Go
// binary built with cgo may load.
var libcLibs = map[string]bool{
	"libc.so.6": true, "libpthread.so.0": true, "libdl.so.2": true, "libresolv.so.2": true, "libm.so.6": true,
}

// libcDepends returns what the binaries need installed: nothing when they
// are static (CGO_ENABLED=0), else libc6 of at least the newest GLIBC_
// symbol version they use. Another shared library is an error: the
// package would not say it needs it.
func libcDepends(bins []string) ([]string, error) {
	newest := ""
	for _, p := range bins {
		f, err := elf.Open(p)
		if err != nil {
			return nil, err
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %v", p, err)
		}
		for _, l := range libs {
			if !libcLibs[l] {
				f.Close()
				return nil, fmt.Errorf("%s needs %s, which the package does not depend on (build with CGO_ENABLED=0)", p, l)
			}
		}
		syms, err := f.DynamicSymbols()
		f.Close()
		if errors.Is(err, elf.ErrNoSymbols) {
			continue // static
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", p, err)
		}
		for _, s := range syms {
			v, ok := strings.CutPrefix(s.Version, "GLIBC_")
			if ok && v != "" && v[0] >= '0' && v[0] <= '9' && olderVersion(newest, v) {
				newest = v
			}
		}
	}
	if newest == "" {
		return nil, nil
	}
	return []string{"libc6 (>= " + newest + ")"}, nil
}

// olderVersion reports whether glibc version a (2.3.4) is older than b
// (2.34); "" is older than any.
func olderVersion(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	if a == "" {
		return b != ""
	}
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}
