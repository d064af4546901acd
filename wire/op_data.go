package wire

// Data ops: Write, Fallocate, Sync.

// Append encodes: handle, offset, data, mtime.
func (o *Write) Append(b []byte) []byte {
	b = appendUvarint(b, o.Handle)
	b = appendUvarint(b, uint64(o.Off))
	b = appendBytes(b, o.Data)
	return appendTime(b, o.Mtime)
}

// parseWrite returns a Write whose Data aliases the input.
func parseWrite(d *decoder) (*Write, error) {
	o := &Write{
		Handle: d.uvarint(),
		Off:    d.int63("write offset"),
		Data:   d.bytes("write data", MaxWriteLen),
	}
	o.Mtime = d.time("mtime")
	return o, d.end()
}

// Append encodes: handle, mode, offset, length, mtime.
func (o *Fallocate) Append(b []byte) []byte {
	b = appendUvarint(b, o.Handle)
	b = appendUvarint(b, uint64(o.Mode))
	b = appendUvarint(b, uint64(o.Off))
	b = appendUvarint(b, uint64(o.Len))
	return appendTime(b, o.Mtime)
}

func parseFallocate(d *decoder) (*Fallocate, error) {
	o := &Fallocate{
		Handle: d.uvarint(),
		Mode:   d.uint32("fallocate mode"),
		Off:    d.int63("fallocate offset"),
		Len:    d.int63("fallocate length"),
	}
	o.Mtime = d.time("mtime")
	return o, d.end()
}

// Append encodes nothing: Sync has no fields.
func (o *Sync) Append(b []byte) []byte { return b }

func parseSync(d *decoder) (*Sync, error) { return &Sync{}, d.end() }

// Append encodes: run.
func (o *RunStart) Append(b []byte) []byte { return append(b, o.Run[:]...) }

// Append encodes nothing: Unclean has no fields.
func (o *Unclean) Append(b []byte) []byte { return b }

func parseUnclean(d *decoder) (*Unclean, error) { return &Unclean{}, d.end() }

func parseRunStart(d *decoder) (*RunStart, error) {
	o := &RunStart{Run: d.run()}
	return o, d.end()
}
