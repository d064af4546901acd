package wire

import "fmt"

// InPass and String of every resync item and reply, so that code treating
// them alike (which pass? what to name in an error?) needs no type switch.

func (x *ResyncBegin) InPass() uint64   { return x.Pass }
func (x *ResyncHandles) InPass() uint64 { return x.Pass }
func (x *ResyncDir) InPass() uint64     { return x.Pass }
func (x *ResyncData) InPass() uint64    { return x.Pass }
func (x *ResyncClose) InPass() uint64   { return x.Pass }
func (x *ResyncEnd) InPass() uint64     { return x.Pass }
func (x *ResyncHashes) InPass() uint64  { return x.Pass }
func (x *ResyncDirDone) InPass() uint64 { return x.Pass }

func (x *ResyncBegin) String() string   { return fmt.Sprintf("begin pass %d", x.Pass) }
func (x *ResyncHandles) String() string { return fmt.Sprintf("handles (%d)", len(x.Handles)) }
func (x *ResyncDir) String() string     { return fmt.Sprintf("dir %q (id %d)", x.Path, x.DirID) }
func (x *ResyncData) String() string    { return fmt.Sprintf("data file %d at %d", x.FileID, x.Off) }
func (x *ResyncClose) String() string   { return fmt.Sprintf("close file %d", x.FileID) }
func (x *ResyncEnd) String() string     { return fmt.Sprintf("end pass %d", x.Pass) }
func (x *ResyncHashes) String() string  { return fmt.Sprintf("hashes of file %d", x.FileID) }
func (x *ResyncDirDone) String() string { return fmt.Sprintf("dir %d done", x.DirID) }
