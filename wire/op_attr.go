package wire

// Attribute ops: Setattr, Setxattr, Removexattr.

// Append encodes: handle, path, valid, mode, uid, gid, size, atime, mtime.
func (o *Setattr) Append(b []byte) []byte {
	b = appendUvarint(b, o.Handle)
	b = appendString(b, o.Path)
	b = appendUvarint(b, uint64(o.Valid))
	b = appendUvarint(b, uint64(o.Mode))
	b = appendUvarint(b, uint64(o.Uid))
	b = appendUvarint(b, uint64(o.Gid))
	b = appendUvarint(b, o.Size)
	b = appendTime(b, o.Atime)
	return appendTime(b, o.Mtime)
}

func parseSetattr(d *decoder) (*Setattr, error) {
	o := &Setattr{
		Handle: d.uvarint(),
		Path:   d.path("setattr path", true),
		Valid:  d.uint32("setattr valid"),
		Mode:   d.uint32("mode"),
		Uid:    d.uint32("uid"),
		Gid:    d.uint32("gid"),
		Size:   d.uvarint(),
	}
	o.Atime = d.time("atime")
	o.Mtime = d.time("mtime")
	return o, d.end()
}

// Append encodes: path, name, value, flags.
func (o *Setxattr) Append(b []byte) []byte {
	b = appendString(b, o.Path)
	b = appendString(b, o.Name)
	b = appendBytes(b, o.Value)
	return appendUvarint(b, uint64(o.Flags))
}

// parseSetxattr returns a Setxattr whose Value aliases the input.
func parseSetxattr(d *decoder) (*Setxattr, error) {
	o := &Setxattr{
		Path:  d.path("setxattr path", true),
		Name:  d.xattrName(),
		Value: d.bytes("xattr value", MaxXattrValueLen),
		Flags: d.uint32("setxattr flags"),
	}
	return o, d.end()
}

// Append encodes: path, name.
func (o *Removexattr) Append(b []byte) []byte {
	b = appendString(b, o.Path)
	return appendString(b, o.Name)
}

func parseRemovexattr(d *decoder) (*Removexattr, error) {
	o := &Removexattr{
		Path: d.path("removexattr path", true),
		Name: d.xattrName(),
	}
	return o, d.end()
}
