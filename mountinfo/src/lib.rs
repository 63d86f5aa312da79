//! The one parser of `/proc/<pid>/mountinfo` (format: proc(5)), shared by the agent's freeze
//! planner (`guest_agent::mounts`) and the eBPF freeze observer (`freeze_observer::mountinfo`),
//! with [`DevId`], the `major:minor` device number that ties a mount to its superblock.
//!
//! The format is small: six fixed fields, optional fields (`shared:N`, `master:N`, ...) up to
//! a lone `-`, then filesystem type, source and superblock options, separated by single
//! spaces; the kernel escapes space, tab, newline and backslash (and `,`/`=` inside options)
//! as `\ooo`. [`Mount::parse_line`] undoes the escapes, keeps paths as bytes, parses the
//! device number and keeps options in kernel order; [`parse_mountinfo`] refuses a table with
//! a malformed line, [`parse_mountinfo_lenient`] skips such lines.
//!
//! # Why not `procfs::process::MountInfo`
//!
//! The `procfs` crate (0.18, a dependency of the agent for its process metrics) has a
//! mountinfo parser, `procfs::process::MountInfos`. It does not serve, checked against
//! procfs-core 0.18.0:
//! - it leaves the octal escapes in place: the mount point `/mnt/my disk` comes out as
//!   `/mnt/my\040disk` (root, source and options too), so it matches no real path;
//! - it reads lines as UTF-8: one non-UTF-8 mount point (mount points are arbitrary bytes)
//!   fails the whole table with "stream did not contain valid UTF-8";
//! - the device number stays a `String` (`majmin`), to be parsed again by every user;
//! - options go into two `HashMap<String, Option<String>>` per line (kernel order lost,
//!   several allocations per option), and the source `none` becomes `None`;
//! - errors do not say which line was malformed, which the agent reports.
//!
//! It handles the optional fields correctly. Wrapping it would mean re-unescaping and
//! re-parsing its output, and would add procfs (and rustix) to the freeze observer, which
//! does not otherwise need it. This parser is about 100 lines, fuzzed (`fuzz/`, target
//! `mountinfo`) and unit tested.

mod devid;
mod mount;
mod table;

pub use devid::{DevId, DevIdParseError};
pub use mount::Mount;
pub use table::{
    parse_mountinfo, parse_mountinfo_lenient, read_mountinfo, read_mountinfo_from, MountsError,
    MOUNTINFO_PATH,
};
