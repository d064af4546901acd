package wire

// Namespace ops: Mkdir, Mknod, Symlink, Link, Unlink, Rmdir, Rename.

// Append encodes: path, mode, uid, gid, mtime, dir mtime.
func (o *Mkdir) Append(b []byte) []byte {
	b = appendString(b, o.Path)
	b = appendUvarint(b, uint64(o.Mode))
	b = appendUvarint(b, uint64(o.Uid))
	b = appendUvarint(b, uint64(o.Gid))
	b = appendTime(b, o.Mtime)
	return appendTime(b, o.DirMtime)
}

func parseMkdir(d *decoder) (*Mkdir, error) {
	o := &Mkdir{
		Path: d.path("mkdir path", false),
		Mode: d.uint32("mode"),
		Uid:  d.uint32("uid"),
		Gid:  d.uint32("gid"),
	}
	o.Mtime = d.time("mtime")
	o.DirMtime = d.time("dir mtime")
	return o, d.end()
}

// Append encodes: path, mode, rdev, uid, gid, mtime, dir mtime.
func (o *Mknod) Append(b []byte) []byte {
	b = appendString(b, o.Path)
	b = appendUvarint(b, uint64(o.Mode))
	b = appendUvarint(b, o.Rdev)
	b = appendUvarint(b, uint64(o.Uid))
	b = appendUvarint(b, uint64(o.Gid))
	b = appendTime(b, o.Mtime)
	return appendTime(b, o.DirMtime)
}

func parseMknod(d *decoder) (*Mknod, error) {
	o := &Mknod{
		Path: d.path("mknod path", false),
		Mode: d.uint32("mode"),
		Rdev: d.uvarint(),
		Uid:  d.uint32("uid"),
		Gid:  d.uint32("gid"),
	}
	o.Mtime = d.time("mtime")
	o.DirMtime = d.time("dir mtime")
	return o, d.end()
}

// Append encodes: path, target, uid, gid, mtime, dir mtime.
func (o *Symlink) Append(b []byte) []byte {
	b = appendString(b, o.Path)
	b = appendString(b, o.Target)
	b = appendUvarint(b, uint64(o.Uid))
	b = appendUvarint(b, uint64(o.Gid))
	b = appendTime(b, o.Mtime)
	return appendTime(b, o.DirMtime)
}

func parseSymlink(d *decoder) (*Symlink, error) {
	o := &Symlink{
		Path:   d.path("symlink path", false),
		Target: d.string("symlink target", MaxPathLen),
		Uid:    d.uint32("uid"),
		Gid:    d.uint32("gid"),
	}
	o.Mtime = d.time("mtime")
	o.DirMtime = d.time("dir mtime")
	return o, d.end()
}

// Append encodes: old path, new path, dir mtime.
func (o *Link) Append(b []byte) []byte {
	b = appendString(b, o.OldPath)
	b = appendString(b, o.NewPath)
	return appendTime(b, o.DirMtime)
}

func parseLink(d *decoder) (*Link, error) {
	o := &Link{
		OldPath: d.path("link old path", false),
		NewPath: d.path("link new path", false),
	}
	o.DirMtime = d.time("dir mtime")
	return o, d.end()
}

// Append encodes: path, dir mtime.
func (o *Unlink) Append(b []byte) []byte {
	b = appendString(b, o.Path)
	return appendTime(b, o.DirMtime)
}

func parseUnlink(d *decoder) (*Unlink, error) {
	o := &Unlink{Path: d.path("unlink path", false)}
	o.DirMtime = d.time("dir mtime")
	return o, d.end()
}

// Append encodes: path, dir mtime.
func (o *Rmdir) Append(b []byte) []byte {
	b = appendString(b, o.Path)
	return appendTime(b, o.DirMtime)
}

func parseRmdir(d *decoder) (*Rmdir, error) {
	o := &Rmdir{Path: d.path("rmdir path", false)}
	o.DirMtime = d.time("dir mtime")
	return o, d.end()
}

// Append encodes: old path, new path, flags, old dir mtime, new dir mtime.
func (o *Rename) Append(b []byte) []byte {
	b = appendString(b, o.OldPath)
	b = appendString(b, o.NewPath)
	b = appendUvarint(b, uint64(o.Flags))
	b = appendTime(b, o.OldDirMtime)
	return appendTime(b, o.NewDirMtime)
}

func parseRename(d *decoder) (*Rename, error) {
	o := &Rename{
		OldPath: d.path("rename old path", false),
		NewPath: d.path("rename new path", false),
		Flags:   d.uint32("rename flags"),
	}
	o.OldDirMtime = d.time("old dir mtime")
	o.NewDirMtime = d.time("new dir mtime")
	return o, d.end()
}
