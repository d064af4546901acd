package wire

// Ops on files opened for writing: Create, Open, Release.

// Append encodes: path, handle, flags, mode, uid, gid, mtime, dir mtime.
func (o *Create) Append(b []byte) []byte {
	b = appendString(b, o.Path)
	b = appendUvarint(b, o.Handle)
	b = appendUvarint(b, uint64(o.Flags))
	b = appendUvarint(b, uint64(o.Mode))
	b = appendUvarint(b, uint64(o.Uid))
	b = appendUvarint(b, uint64(o.Gid))
	b = appendTime(b, o.Mtime)
	return appendTime(b, o.DirMtime)
}

func parseCreate(d *decoder) (*Create, error) {
	o := &Create{
		Path:   d.path("create path", false),
		Handle: d.uvarint(),
		Flags:  d.uint32("flags"),
		Mode:   d.uint32("mode"),
		Uid:    d.uint32("uid"),
		Gid:    d.uint32("gid"),
		Mtime:  d.time("mtime"),
	}
	o.DirMtime = d.time("dir mtime")
	return o, d.end()
}

// Append encodes: path, handle, flags, mtime.
func (o *Open) Append(b []byte) []byte {
	b = appendString(b, o.Path)
	b = appendUvarint(b, o.Handle)
	b = appendUvarint(b, uint64(o.Flags))
	return appendTime(b, o.Mtime)
}

func parseOpen(d *decoder) (*Open, error) {
	o := &Open{
		Path:   d.path("open path", false),
		Handle: d.uvarint(),
		Flags:  d.uint32("flags"),
	}
	o.Mtime = d.time("mtime")
	return o, d.end()
}

// Append encodes: handle.
func (o *Release) Append(b []byte) []byte { return appendUvarint(b, o.Handle) }

func parseRelease(d *decoder) (*Release, error) {
	o := &Release{Handle: d.uvarint()}
	return o, d.end()
}
