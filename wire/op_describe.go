package wire

import "fmt"

// What an op names, for the code that handles every op alike (error
// messages, handle bookkeeping) without a switch over op types. Every op
// has a String; an op has Paths and ViaHandle when it can name a path or
// act through a handle.

// PathOp is an op that names paths of the replicated tree.
type PathOp interface {
	Op
	// Paths returns the paths the op acts on, in the order the op names
	// them (source before destination); nil when it names none (a
	// Setattr through a handle, a CopyRange from a handle).
	Paths() []string
}

// HandleOp is an op that can act through a handle an earlier Create or
// Open kept open. The handle a Create or Open opens is not one it acts
// through: that is OpensHandle.
//
// The method is not named Handle: most ops carry their handle in a field
// of that name.
type HandleOp interface {
	Op
	// ViaHandle returns the handle the op writes through, changes or
	// releases (for CopyRange, the destination's); ok is false when it
	// names a path instead, or handle 0 (no handle).
	ViaHandle() (h uint64, ok bool)
}

// OpenerOp is an op that can open a handle: Create and Open.
type OpenerOp interface {
	Op
	// OpensHandle returns the handle the op keeps its file open under;
	// ok is false when it opens none (Handle 0).
	OpensHandle() (h uint64, ok bool)
}

// String names the op and what it acts on, for error messages.
func (o *Create) String() string      { return describePath(o, o.Path) }
func (o *Mkdir) String() string       { return describePath(o, o.Path) }
func (o *Mknod) String() string       { return describePath(o, o.Path) }
func (o *Symlink) String() string     { return describePath(o, o.Path) }
func (o *Link) String() string        { return describeMove(o, o.OldPath, o.NewPath) }
func (o *Unlink) String() string      { return describePath(o, o.Path) }
func (o *Rmdir) String() string       { return describePath(o, o.Path) }
func (o *Rename) String() string      { return describeMove(o, o.OldPath, o.NewPath) }
func (o *Open) String() string        { return describePath(o, o.Path) }
func (o *Release) String() string     { return describeHandle(o, o.Handle) }
func (o *Write) String() string       { return describeHandle(o, o.Handle) }
func (o *Setxattr) String() string    { return fmt.Sprintf("%v %q %q", o.Type(), o.Path, o.Name) }
func (o *Removexattr) String() string { return fmt.Sprintf("%v %q %q", o.Type(), o.Path, o.Name) }
func (o *Fallocate) String() string   { return describeHandle(o, o.Handle) }
func (o *Sync) String() string        { return o.Type().String() }
func (o *RunStart) String() string    { return o.Type().String() }
func (o *Unclean) String() string     { return o.Type().String() }

func (o *Setattr) String() string {
	if o.Handle != 0 {
		return describeHandle(o, o.Handle)
	}
	return describePath(o, o.Path)
}

func (o *CopyRange) String() string {
	if o.SrcHandle != 0 {
		return fmt.Sprintf("%v handle %d -> handle %d", o.Type(), o.SrcHandle, o.Handle)
	}
	return fmt.Sprintf("%v %q -> handle %d", o.Type(), o.SrcPath, o.Handle)
}

func describePath(op Op, p string) string { return fmt.Sprintf("%v %q", op.Type(), p) }
func describeMove(op Op, from, to string) string {
	return fmt.Sprintf("%v %q -> %q", op.Type(), from, to)
}
func describeHandle(op Op, h uint64) string { return fmt.Sprintf("%v handle %d", op.Type(), h) }

// Paths returns the paths the op names.
func (o *Create) Paths() []string      { return []string{o.Path} }
func (o *Mkdir) Paths() []string       { return []string{o.Path} }
func (o *Mknod) Paths() []string       { return []string{o.Path} }
func (o *Symlink) Paths() []string     { return []string{o.Path} } // the target is data, not a path
func (o *Link) Paths() []string        { return []string{o.OldPath, o.NewPath} }
func (o *Unlink) Paths() []string      { return []string{o.Path} }
func (o *Rmdir) Paths() []string       { return []string{o.Path} }
func (o *Rename) Paths() []string      { return []string{o.OldPath, o.NewPath} }
func (o *Open) Paths() []string        { return []string{o.Path} }
func (o *Setxattr) Paths() []string    { return []string{o.Path} }
func (o *Removexattr) Paths() []string { return []string{o.Path} }

// Paths returns the path of the file the Setattr changes, nil when it
// changes one through a handle (Path is then ignored).
func (o *Setattr) Paths() []string {
	if o.Handle != 0 {
		return nil
	}
	return []string{o.Path}
}

// Paths returns the source's path, nil when the source is a handle.
func (o *CopyRange) Paths() []string {
	if o.SrcHandle != 0 {
		return nil
	}
	return []string{o.SrcPath}
}

// ViaHandle returns the handle the op acts through.
func (o *Release) ViaHandle() (uint64, bool)   { return o.Handle, o.Handle != 0 }
func (o *Write) ViaHandle() (uint64, bool)     { return o.Handle, o.Handle != 0 }
func (o *Fallocate) ViaHandle() (uint64, bool) { return o.Handle, o.Handle != 0 }
func (o *CopyRange) ViaHandle() (uint64, bool) { return o.Handle, o.Handle != 0 } // the destination
func (o *Setattr) ViaHandle() (uint64, bool)   { return o.Handle, o.Handle != 0 }

// OpensHandle returns the handle the op opens.
func (o *Create) OpensHandle() (uint64, bool) { return o.Handle, o.Handle != 0 }
func (o *Open) OpensHandle() (uint64, bool)   { return o.Handle, o.Handle != 0 }
