//! Kernel struct offsets from BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya applies no CO-RE relocations to Rust programs and `struct super_block` is
//! `__randomize_layout`, so the offsets the programs need are read here at load time and handed
//! to them as the `OFFSETS` global. The parser also answers what the loader decides from BTF:
//! which tracepoints exist (`btf_trace_*` typedefs), how many parameters `freeze_super` and
//! `thaw_super` take, and the type id of `freeze_super` (for the fexit probe).
//!
//! # Lean by design (issue 13)
//!
//! The kernel's BTF is megabytes (5.3 MiB on 6.18, about 150,000 types) and the loader needs a
//! few dozen facts from it, so nothing is parsed that is not asked for:
//!
//! 1. Opening walks the type section once, streaming (64 KiB buffer), and keeps per type id
//!    only where its record starts and its kind (one `u32`) and its name offset (one `u32`):
//!    8 bytes a type, no member lists, no strings.
//! 2. Names are resolved in batches ([`Btf::prefetch`]): one streaming pass over the string
//!    section finds the offsets of the wanted names (suffixes included, as BTF may point into
//!    the middle of a longer string); a lookup by name then compares offsets.
//! 3. Everything else (members, array lengths, typedef chains, function prototypes) is read
//!    on demand from the file with `pread`, record by record.
//!
//! Memory and time, measured with `tests/btf_memory.rs` (each parser in a fresh process, a
//! counting allocator; release build) on 6.18 with a 5.3 MiB `/sys/kernel/btf/vmlinux`:
//!
//! | parser | heap peak | heap held after | time |
//! |---|---|---|---|
//! | this one, with [`Btf::kernel_offsets`] (126,412 types) | 1.1 MiB | 1.0 MiB | 10 ms |
//! | the previous version of this module (a `Vec` of every type with its members) | 19.0 MiB | 13.2 MiB | 24 ms |
//! | `aya::Btf::parse_file` | 18.0 MiB | 12.8 MiB | 15 ms |
//! | the whole `loader::load` where fexit is refused (this index, no aya parse) | 1.1 MiB | 0.1 MiB | 28 ms |
//!
//! # Why not aya's BTF parser (`aya_obj::btf::Btf`, issue 16)
//!
//! aya-obj 0.3 (aya 0.14) keeps type lookup by id, struct members and their offsets, type
//! sizes, array lengths, the typedef/qualifier chain and `FUNC_PROTO` parameters
//! `pub(crate)`; its public queries are parsing and `id_by_type_name_kind`, and it always
//! builds the whole type table (the 18 MiB above). aya still needs its own parse to load
//! fexit and tp_btf programs; the loader parses with aya only where it will use one of those
//! (see `loader.rs`), so on kernels that refuse BPF trampolines aya parses nothing.
//! `btf-rs` is no alternative: LGPL-2.1-or-later.

use std::{
    cell::RefCell,
    collections::HashMap,
    fs::File,
    io::{BufReader, Read, Seek, SeekFrom},
    os::unix::fs::FileExt,
    path::Path,
};

use agent_common::KernelOffsets;

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xEB9F;
/// Read buffer of the streaming passes.
const STREAM_BUFFER: usize = 64 << 10;
/// A type's record offset lives in the low bits of its index entry, its kind in the top 5.
const OFFSET_BITS: u32 = 27;
const OFFSET_MASK: u32 = (1 << OFFSET_BITS) - 1;

/// Every name [`Btf::kernel_offsets`] looks up, for one [`Btf::prefetch`].
pub const OFFSET_NAMES: &[&str] = &[
    "super_block",
    "sb_writers",
    "file_system_type",
    "dentry",
    "task_struct",
    "files_struct",
    "fdtable",
    "file",
    "inode",
    "xfs_mount",
    "btrfs_fs_info",
    "s_writers",
    "frozen",
    "rw_sem",
    "s_dev",
    "s_id",
    "s_type",
    "s_root",
    "name",
    "d_sb",
    "files",
    "fdt",
    "max_fds",
    "fd",
    "f_inode",
    "i_sb",
    "m_super",
    "sb",
];

/// Errors reading BTF or finding a type in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The kernel exposes no BTF (built without `CONFIG_DEBUG_INFO_BTF`).
    #[error("kernel BTF not found at {path} (kernel built without CONFIG_DEBUG_INFO_BTF=y)")]
    Missing {
        /// The path tried.
        path: String,
    },
    /// Reading the BTF file failed.
    #[error("reading BTF from {path}: {source}")]
    Io {
        /// The path read.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data is not BTF or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A type kind this parser does not know; newer than the parser.
    #[error("unknown BTF kind {kind} at type id {id}")]
    UnknownKind {
        /// The kind number.
        kind: u8,
        /// The type id.
        id: u32,
    },
    /// No type of that name and kind.
    #[error("BTF has no {kind} named `{name}`")]
    TypeNotFound {
        /// What was looked for (`struct`, `function`).
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The struct exists but has no such member.
    #[error("struct {strct} has no member `{member}` in this kernel")]
    MemberNotFound {
        /// The struct searched.
        strct: String,
        /// The member path.
        member: String,
    },
    /// A member or type does not have the shape the programs rely on.
    #[error("unexpected kernel type layout: {0}")]
    Unexpected(String),
}

/// BTF kinds (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            0 => Self::Void,
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    /// Bytes that follow the 12-byte common header of a record of this kind.
    fn extra_len(self, vlen: u16) -> usize {
        let vlen = usize::from(vlen);
        match self {
            Self::Int | Self::Var | Self::DeclTag => 4,
            Self::Array => 12,
            Self::Struct | Self::Union | Self::Datasec | Self::Enum64 => 12 * vlen,
            Self::Enum | Self::FuncProto => 8 * vlen,
            _ => 0,
        }
    }
}

/// The common header of one type record, read on demand.
#[derive(Clone, Copy, Debug)]
struct Header {
    kind: Kind,
    vlen: u16,
    kflag: bool,
    /// `size` for int/struct/union/enum, referenced type id for ptr/typedef/qualifiers/func.
    size_or_type: u32,
    /// Where the kind-specific data starts, in the source.
    extra_at: u64,
}

/// One struct/union member: name, type and offset in bits.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

/// A member located inside a struct: its byte offset from the struct start and its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// BTF type id of the member.
    pub type_id: u32,
}

/// Where the BTF bytes are: the file (read with `pread`) or a buffer.
enum Source {
    File { file: File, path: String },
    Bytes(Vec<u8>),
}

impl Source {
    fn read_at(&self, buf: &mut [u8], at: u64) -> Result<(), BtfError> {
        match self {
            Self::File { file, path } => file.read_exact_at(buf, at).map_err(|source| {
                if source.kind() == std::io::ErrorKind::UnexpectedEof {
                    BtfError::Malformed("truncated")
                } else {
                    BtfError::Io {
                        path: path.clone(),
                        source,
                    }
                }
            }),
            Self::Bytes(data) => {
                let start = usize::try_from(at).map_err(|_| BtfError::Malformed("truncated"))?;
                let src = data
                    .get(start..start + buf.len())
                    .ok_or(BtfError::Malformed("truncated"))?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// A buffered reader over `len` bytes from `at`, for a streaming pass.
    fn stream(&self, at: u64, len: u64) -> Result<Box<dyn Read + '_>, BtfError> {
        match self {
            Self::File { file, path } => {
                let mut reader = BufReader::with_capacity(STREAM_BUFFER, file);
                reader
                    .seek(SeekFrom::Start(at))
                    .map_err(|source| BtfError::Io {
                        path: path.clone(),
                        source,
                    })?;
                Ok(Box::new(reader.take(len)))
            }
            Self::Bytes(data) => {
                let start = usize::try_from(at).map_err(|_| BtfError::Malformed("truncated"))?;
                let end =
                    usize::try_from(at + len).map_err(|_| BtfError::Malformed("truncated"))?;
                Ok(Box::new(
                    data.get(start..end)
                        .ok_or(BtfError::Malformed("truncated"))?,
                ))
            }
        }
    }

    fn io_error(&self, source: std::io::Error) -> BtfError {
        match self {
            _ if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                BtfError::Malformed("type section ends inside a record")
            }
            Self::File { path, .. } => BtfError::Io {
                path: path.clone(),
                source,
            },
            Self::Bytes(_) => BtfError::Malformed("truncated"),
        }
    }
}

/// Indexed BTF: where each type's record is, its kind and name offset; the rest is read from
/// the source when asked (see the module documentation).
pub struct Btf {
    src: Source,
    /// Start of the type section in the source.
    types_at: u64,
    /// Start and length of the string section in the source.
    strings_at: u64,
    strings_len: u64,
    /// Per type id (0 = void): record offset in the type section | kind << 27.
    index: Vec<u32>,
    /// Per type id: name offset in the string section.
    names: Vec<u32>,
    /// Names resolved so far: every string offset at which the name is found.
    resolved: RefCell<HashMap<String, Vec<u32>>>,
}

fn u16_le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl Btf {
    /// Opens and indexes the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Opens and indexes a raw BTF file; the file stays open for later queries.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                BtfError::Missing {
                    path: shown.clone(),
                }
            } else {
                BtfError::Io {
                    path: shown.clone(),
                    source,
                }
            }
        })?;
        let len = file
            .metadata()
            .map_err(|source| BtfError::Io {
                path: shown.clone(),
                source,
            })?
            .len();
        Self::index(Source::File { file, path: shown }, len)
    }

    /// Indexes raw little-endian BTF (the format of `/sys/kernel/btf/vmlinux` and of a `.BTF`
    /// ELF section), copied.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        Self::index(Source::Bytes(data.to_vec()), data.len() as u64)
    }

    fn index(src: Source, len: u64) -> Result<Self, BtfError> {
        let mut hdr = [0u8; 24];
        if len < 24 {
            return Err(BtfError::Malformed("truncated"));
        }
        src.read_at(&mut hdr, 0)?;
        if u16_le(&hdr[0..]) != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u64::from(u32_le(&hdr[4..]));
        let type_off = u64::from(u32_le(&hdr[8..]));
        let type_len = u64::from(u32_le(&hdr[12..]));
        let str_off = u64::from(u32_le(&hdr[16..]));
        let str_len = u64::from(u32_le(&hdr[20..]));
        let types_at = hdr_len + type_off;
        let strings_at = hdr_len + str_off;
        if types_at + type_len > len {
            return Err(BtfError::Malformed("type section out of bounds"));
        }
        if strings_at + str_len > len {
            return Err(BtfError::Malformed("string section out of bounds"));
        }
        if type_len > u64::from(OFFSET_MASK) {
            return Err(BtfError::Malformed("type section too large"));
        }
        // Id 0 is void.
        let mut index = vec![0u32];
        let mut names = vec![0u32];
        {
            let mut reader = src.stream(types_at, type_len)?;
            let mut at = 0u64;
            let mut rec = [0u8; 12];
            while at < type_len {
                let id = index.len() as u32;
                reader.read_exact(&mut rec).map_err(|e| src.io_error(e))?;
                let name_off = u32_le(&rec[0..]);
                let info = u32_le(&rec[4..]);
                let raw_kind = ((info >> 24) & 0x1f) as u8;
                let kind = Kind::from_raw(raw_kind)
                    .filter(|k| *k != Kind::Void)
                    .ok_or(BtfError::UnknownKind { kind: raw_kind, id })?;
                let extra = kind.extra_len((info & 0xffff) as u16) as u64;
                let skipped = std::io::copy(&mut reader.by_ref().take(extra), &mut std::io::sink())
                    .map_err(|e| src.io_error(e))?;
                if skipped != extra {
                    return Err(BtfError::Malformed("type section ends inside a record"));
                }
                index.push(at as u32 | u32::from(raw_kind) << OFFSET_BITS);
                names.push(name_off);
                at += 12 + extra;
            }
            if at != type_len {
                return Err(BtfError::Malformed("type section ends inside a record"));
            }
        }
        index.shrink_to_fit();
        names.shrink_to_fit();
        Ok(Self {
            src,
            types_at,
            strings_at,
            strings_len: str_len,
            index,
            names,
            resolved: RefCell::new(HashMap::new()),
        })
    }

    /// Number of types, void included.
    pub fn type_count(&self) -> usize {
        self.index.len()
    }

    /// Resolves `names` in one pass over the string section, so later lookups by any of them
    /// read nothing more. Lookups of names not prefetched each cost a pass of their own.
    pub fn prefetch(&self, names: &[&str]) -> Result<(), BtfError> {
        let missing: Vec<&str> = {
            let resolved = self.resolved.borrow();
            names
                .iter()
                .copied()
                .filter(|n| !n.is_empty() && !resolved.contains_key(*n))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let found = self.scan_strings(&missing)?;
        let mut resolved = self.resolved.borrow_mut();
        for (name, offsets) in missing.iter().zip(found) {
            resolved.insert((*name).to_owned(), offsets);
        }
        Ok(())
    }

    /// Every string offset at which each of `wanted` is a NUL-terminated string (also as the
    /// tail of a longer one), in one streaming pass.
    fn scan_strings(&self, wanted: &[&str]) -> Result<Vec<Vec<u32>>, BtfError> {
        let mut found = vec![Vec::new(); wanted.len()];
        let mut reader = self.src.stream(self.strings_at, self.strings_len)?;
        let mut buf = vec![0u8; STREAM_BUFFER];
        let mut current: Vec<u8> = Vec::with_capacity(256);
        let mut pos = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.src.io_error(e)),
            };
            for &b in &buf[..n] {
                if b == 0 {
                    for (w, hits) in wanted.iter().zip(found.iter_mut()) {
                        if current.ends_with(w.as_bytes()) {
                            hits.push((pos - w.len() as u64) as u32);
                        }
                    }
                    current.clear();
                } else {
                    current.push(b);
                }
                pos += 1;
            }
        }
        Ok(found)
    }

    /// The string offsets of `name` (resolving it if not yet prefetched).
    fn offsets_of(&self, name: &str) -> Result<Vec<u32>, BtfError> {
        if let Some(v) = self.resolved.borrow().get(name) {
            return Ok(v.clone());
        }
        self.prefetch(&[name])?;
        Ok(self
            .resolved
            .borrow()
            .get(name)
            .cloned()
            .unwrap_or_default())
    }

    fn kind_of(&self, id: u32) -> Result<Kind, BtfError> {
        let entry = *self
            .index
            .get(id as usize)
            .ok_or(BtfError::Malformed("type id out of range"))?;
        Kind::from_raw((entry >> OFFSET_BITS) as u8).ok_or(BtfError::Malformed("bad index"))
    }

    /// The first type (lowest id) of one of `kinds` named `name`.
    fn find_named(&self, name: &str, kinds: &[Kind]) -> Result<Option<u32>, BtfError> {
        let offsets = self.offsets_of(name)?;
        if offsets.is_empty() {
            return Ok(None);
        }
        for (id, name_off) in self.names.iter().enumerate().skip(1) {
            if offsets.contains(name_off) && kinds.contains(&self.kind_of(id as u32)?) {
                return Ok(Some(id as u32));
            }
        }
        Ok(None)
    }

    fn header(&self, id: u32) -> Result<Header, BtfError> {
        let entry = *self
            .index
            .get(id as usize)
            .ok_or(BtfError::Malformed("type id out of range"))?;
        if id == 0 {
            return Ok(Header {
                kind: Kind::Void,
                vlen: 0,
                kflag: false,
                size_or_type: 0,
                extra_at: 0,
            });
        }
        let at = self.types_at + u64::from(entry & OFFSET_MASK);
        let mut rec = [0u8; 12];
        self.src.read_at(&mut rec, at)?;
        let info = u32_le(&rec[4..]);
        let raw_kind = ((info >> 24) & 0x1f) as u8;
        Ok(Header {
            kind: Kind::from_raw(raw_kind).ok_or(BtfError::UnknownKind { kind: raw_kind, id })?,
            vlen: (info & 0xffff) as u16,
            kflag: info >> 31 == 1,
            size_or_type: u32_le(&rec[8..]),
            extra_at: at + 12,
        })
    }

    fn members(&self, h: &Header) -> Result<Vec<Member>, BtfError> {
        let mut raw = vec![0u8; 12 * usize::from(h.vlen)];
        self.src.read_at(&mut raw, h.extra_at)?;
        Ok(raw
            .chunks_exact(12)
            .map(|m| {
                let offset = u32_le(&m[8..]);
                Member {
                    name_off: u32_le(&m[0..]),
                    type_id: u32_le(&m[4..]),
                    // With kind_flag set the top 8 bits are the bitfield size.
                    bit_offset: if h.kflag {
                        offset & 0x00ff_ffff
                    } else {
                        offset
                    },
                }
            })
            .collect())
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..32 {
            match self.kind_of(id)? {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = self.header(id)?.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed("typedef chain too long"))
    }

    /// Id of the struct (or union) called `name` (the first definition; forward declarations
    /// excluded).
    pub fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        self.find_named(name, &[Kind::Struct, Kind::Union])?
            .ok_or_else(|| BtfError::TypeNotFound {
                kind: "struct",
                name: name.to_owned(),
            })
    }

    /// Id of the function (`BTF_KIND_FUNC`) called `name`: what a fexit program's
    /// `attach_btf_id` names.
    pub fn func_id(&self, name: &str) -> Result<u32, BtfError> {
        self.find_named(name, &[Kind::Func])?
            .ok_or_else(|| BtfError::TypeNotFound {
                kind: "function",
                name: name.to_owned(),
            })
    }

    /// Size in bytes of a type (arrays multiply out; pointers are 8 bytes).
    pub fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let id = self.resolve(id)?;
        let h = self.header(id)?;
        match h.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float => {
                Ok(h.size_or_type)
            }
            Kind::Ptr => Ok(8),
            Kind::Array => {
                let (elem, n) = self.array_element(id)?;
                Ok(self.size_of(elem)? * n)
            }
            other => Err(BtfError::Unexpected(format!("no size for a {other:?}"))),
        }
    }

    /// Element type and length of an array type (after typedefs/qualifiers).
    pub fn array_element(&self, id: u32) -> Result<(u32, u32), BtfError> {
        let h = self.header(self.resolve(id)?)?;
        if h.kind != Kind::Array {
            return Err(BtfError::Unexpected(format!("type {id} is not an array")));
        }
        let mut raw = [0u8; 12];
        self.src.read_at(&mut raw, h.extra_at)?;
        Ok((u32_le(&raw[0..]), u32_le(&raw[8..])))
    }

    /// True if the type (after typedefs/qualifiers) is a pointer.
    pub fn is_pointer(&self, id: u32) -> Result<bool, BtfError> {
        Ok(self.kind_of(self.resolve(id)?)? == Kind::Ptr)
    }

    /// Finds `member` directly in struct/union `id`, or inside one of its anonymous members,
    /// returning its byte offset relative to `id`.
    fn find_member(&self, id: u32, member: &str) -> Result<Option<Field>, BtfError> {
        let h = self.header(self.resolve(id)?)?;
        if !matches!(h.kind, Kind::Struct | Kind::Union) {
            return Ok(None);
        }
        let offsets = self.offsets_of(member)?;
        for m in self.members(&h)? {
            if offsets.contains(&m.name_off) {
                return to_field(&m, 0);
            }
            if m.name_off == 0 {
                if let Some(inner) = self.find_member(m.type_id, member)? {
                    let base = to_field(&m, 0)?.map_or(0, |f| f.offset);
                    return Ok(Some(Field {
                        offset: base + inner.offset,
                        type_id: inner.type_id,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Byte offset and type of a dotted member path, e.g. `("super_block", "s_writers.frozen")`.
    pub fn member(&self, strct: &str, path: &str) -> Result<Field, BtfError> {
        let mut current = self.struct_id(strct)?;
        let mut offset = 0;
        let mut type_id = current;
        for part in path.split('.') {
            let field =
                self.find_member(current, part)?
                    .ok_or_else(|| BtfError::MemberNotFound {
                        strct: strct.to_owned(),
                        member: path.to_owned(),
                    })?;
            offset += field.offset;
            type_id = field.type_id;
            current = field.type_id;
        }
        Ok(Field { offset, type_id })
    }

    /// Number of parameters of the kernel function `name` (from its `FUNC_PROTO`).
    pub fn func_param_count(&self, name: &str) -> Result<usize, BtfError> {
        let func = self.header(self.func_id(name)?)?;
        let proto = self.header(func.size_or_type)?;
        if proto.kind != Kind::FuncProto {
            return Err(BtfError::Unexpected(format!("{name} has no prototype")));
        }
        Ok(usize::from(proto.vlen))
    }

    /// True if BTF knows a type or function named `name` (any kind), e.g. a tracepoint's
    /// `btf_trace_<name>` typedef. False also when the BTF cannot be read.
    pub fn has_named_type(&self, name: &str) -> bool {
        match self.offsets_of(name) {
            Ok(offsets) => self.names.iter().skip(1).any(|off| offsets.contains(off)),
            Err(_) => false,
        }
    }

    /// The offsets the programs need, all checked for the shape they rely on.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        self.prefetch(OFFSET_NAMES)?;
        let sb_writers = self.member("super_block", "s_writers")?;
        let frozen = self.member("sb_writers", "frozen")?;
        let frozen_size = self.size_of(frozen.type_id)?;
        if frozen_size != 2 && frozen_size != 4 {
            return Err(BtfError::Unexpected(format!(
                "sb_writers.frozen is {frozen_size} bytes"
            )));
        }
        let rw_sem = self.member("sb_writers", "rw_sem")?;
        let (sem_type, levels) = self.array_element(rw_sem.type_id)?;
        if levels != agent_common::SB_FREEZE_LEVELS {
            return Err(BtfError::Unexpected(format!(
                "sb_writers.rw_sem has {levels} levels"
            )));
        }
        let pointer = |strct: &str, path: &str| -> Result<u32, BtfError> {
            let field = self.member(strct, path)?;
            if !self.is_pointer(field.type_id)? {
                return Err(BtfError::Unexpected(format!(
                    "{strct}.{path} is not a pointer"
                )));
            }
            Ok(field.offset)
        };
        Ok(KernelOffsets {
            sb_s_dev: self.member("super_block", "s_dev")?.offset,
            sb_s_id: self.member("super_block", "s_id")?.offset,
            sb_s_type: pointer("super_block", "s_type")?,
            sb_s_root: pointer("super_block", "s_root")?,
            sb_s_writers: sb_writers.offset,
            sbw_frozen: frozen.offset,
            sbw_rw_sem: rw_sem.offset,
            rw_sem_size: self.size_of(sem_type)?,
            fst_name: pointer("file_system_type", "name")?,
            dentry_d_sb: pointer("dentry", "d_sb")?,
            task_files: pointer("task_struct", "files")?,
            files_fdt: pointer("files_struct", "fdt")?,
            fdt_max_fds: self.member("fdtable", "max_fds")?.offset,
            fdt_fd: pointer("fdtable", "fd")?,
            file_f_inode: pointer("file", "f_inode")?,
            inode_i_sb: pointer("inode", "i_sb")?,
            // Optional: a kernel without XFS or btrfs has no such struct (and no tracepoint).
            xfs_mount_m_super: pointer("xfs_mount", "m_super").unwrap_or(0),
            btrfs_fs_info_sb: pointer("btrfs_fs_info", "sb").unwrap_or(0),
            valid: 1,
        })
    }
}

fn to_field(m: &Member, base: u32) -> Result<Option<Field>, BtfError> {
    if !m.bit_offset.is_multiple_of(8) {
        return Err(BtfError::Unexpected("member is a bitfield".to_owned()));
    }
    Ok(Some(Field {
        offset: base + m.bit_offset / 8,
        type_id: m.type_id,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes BTF blobs by hand, to test the parser on layouts no running kernel has.
    #[derive(Default)]
    pub(crate) struct BtfWriter {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl BtfWriter {
        pub(crate) fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn record(
            &mut self,
            name: &str,
            kind: u32,
            kflag: bool,
            vlen: u32,
            size_or_type: u32,
        ) -> u32 {
            let name_off = self.string(name);
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
            for v in [name_off, info, size_or_type] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.record(name, 1, false, 0, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
            id
        }

        pub(crate) fn ptr(&mut self, to: u32) -> u32 {
            self.record("", 2, false, 0, to)
        }

        pub(crate) fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.record(name, 8, false, 0, to)
        }

        pub(crate) fn constant(&mut self, to: u32) -> u32 {
            self.record("", 10, false, 0, to)
        }

        pub(crate) fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
            let id = self.record("", 3, false, 0, 0);
            for v in [elem, index, n] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            id
        }

        /// A struct (or union) with `(name, type, bit offset, bitfield size)` members.
        pub(crate) fn composite(
            &mut self,
            union: bool,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kflag = members.iter().any(|m| m.3 != 0);
            let id = self.record(
                name,
                if union { 5 } else { 4 },
                kflag,
                members.len() as u32,
                size,
            );
            for &(mname, ty, bit_off, bits) in members {
                let name_off = self.string(mname);
                let offset = if kflag {
                    (bits << 24) | bit_off
                } else {
                    bit_off
                };
                for v in [name_off, ty, offset] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
            id
        }

        pub(crate) fn func(&mut self, name: &str, ret: u32, params: &[u32]) -> u32 {
            let proto = self.record("", 13, false, params.len() as u32, ret);
            for &p in params {
                self.types.extend_from_slice(&0u32.to_le_bytes());
                self.types.extend_from_slice(&p.to_le_bytes());
            }
            self.record(name, 12, false, 1, proto)
        }

        pub(crate) fn finish(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for v in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A miniature kernel in the 6.1 shape (`int frozen`, a wait queue before `rw_sem`), with
    /// `f_inode` inside an anonymous union as some kernels have it.
    fn mini_kernel(frozen_is_short: bool) -> Vec<u8> {
        let mut w = BtfWriter::new();
        let int = w.int("int", 4);
        let ushort = w.int("short unsigned int", 2);
        let uint = w.int("unsigned int", 4);
        let ch = w.int("char", 1);
        let dev_t = w.typedef("dev_t", uint);
        let sem = w.composite(false, "percpu_rw_semaphore", 48, &[("block", int, 0, 0)]);
        let sems = w.array(sem, int, 3);
        let frozen_ty = if frozen_is_short { ushort } else { int };
        let sbw = w.composite(
            false,
            "sb_writers",
            8 + 3 * 48,
            &[("frozen", frozen_ty, 0, 0), ("rw_sem", sems, 64, 0)],
        );
        let cchar = w.constant(ch);
        let name_ptr = w.ptr(cchar);
        let fst = w.composite(
            false,
            "file_system_type",
            16,
            &[("owner", int, 0, 0), ("name", name_ptr, 64, 0)],
        );
        let fst_ptr = w.ptr(fst);
        let sb_fwd_ptr = w.ptr(0);
        let dentry = w.composite(
            false,
            "dentry",
            200,
            &[("d_flags", uint, 0, 0), ("d_sb", sb_fwd_ptr, 832, 0)],
        );
        let dentry_ptr = w.ptr(dentry);
        let ids = w.array(ch, int, 32);
        w.composite(
            false,
            "super_block",
            1024,
            &[
                ("s_list", int, 0, 0),
                ("s_dev", dev_t, 128, 0),
                ("s_type", fst_ptr, 256, 0),
                ("s_root", dentry_ptr, 320, 0),
                ("s_writers", sbw, 1024, 0),
                ("s_id", ids, 4096, 0),
            ],
        );
        let flags = w.composite(false, "", 4, &[("lo", uint, 0, 3), ("hi", uint, 3, 5)]);
        let inode_ptr = w.ptr(0);
        let anon = w.composite(
            true,
            "",
            8,
            &[("f_inode", inode_ptr, 0, 0), ("f_other", int, 0, 0)],
        );
        w.composite(
            false,
            "file",
            64,
            &[("f_flags", flags, 0, 0), ("", anon, 128, 0)],
        );
        w.func("freeze_super", int, &[int, int]);
        w.finish()
    }

    #[test]
    fn finds_members_through_typedefs_arrays_and_anonymous_unions() {
        let btf = Btf::parse(&mini_kernel(false)).expect("parse");
        assert_eq!(btf.member("super_block", "s_writers").unwrap().offset, 128);
        assert_eq!(
            btf.member("super_block", "s_writers.rw_sem")
                .unwrap()
                .offset,
            136
        );
        assert_eq!(btf.member("super_block", "s_dev").unwrap().offset, 16);
        let dev = btf.member("super_block", "s_dev").unwrap();
        assert_eq!(btf.size_of(dev.type_id).unwrap(), 4);
        let rw = btf.member("sb_writers", "rw_sem").unwrap();
        assert_eq!(btf.size_of(rw.type_id).unwrap(), 144);
        assert_eq!(btf.array_element(rw.type_id).unwrap().1, 3);
        // f_inode sits in an anonymous union at byte 16.
        assert_eq!(btf.member("file", "f_inode").unwrap().offset, 16);
        assert!(btf
            .is_pointer(btf.member("file", "f_inode").unwrap().type_id)
            .unwrap());
        assert_eq!(btf.member("dentry", "d_sb").unwrap().offset, 104);
        assert_eq!(btf.func_param_count("freeze_super").unwrap(), 2);
    }

    #[test]
    fn missing_members_and_types_are_named_in_the_error() {
        let btf = Btf::parse(&mini_kernel(true)).expect("parse");
        let err = btf.member("super_block", "s_nope").unwrap_err();
        assert!(err.to_string().contains("s_nope"), "{err}");
        let err = btf.struct_id("no_such_struct").unwrap_err();
        assert!(err.to_string().contains("no_such_struct"), "{err}");
        assert!(btf.func_param_count("thaw_super").is_err());
        // The miniature kernel lacks task_struct, so the full extraction fails cleanly.
        assert!(matches!(
            btf.kernel_offsets(),
            Err(BtfError::TypeNotFound { .. })
        ));
    }

    #[test]
    fn bitfield_members_are_refused_not_misread() {
        let btf = Btf::parse(&mini_kernel(false)).expect("parse");
        let flags = btf.member("file", "f_flags").unwrap();
        // The anonymous bitfield struct is reachable, but its 3-bit `hi` member is not bytes.
        assert!(btf.find_member(flags.type_id, "hi").is_err());
        assert_eq!(
            btf.find_member(flags.type_id, "lo")
                .unwrap()
                .unwrap()
                .offset,
            0
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(Btf::parse(&[0u8; 4]), Err(BtfError::Malformed(_))));
        let mut blob = mini_kernel(false);
        blob.truncate(blob.len() - 40);
        assert!(Btf::parse(&blob).is_err());
        let missing = Btf::from_file(Path::new("/nonexistent/vmlinux"))
            .err()
            .unwrap();
        assert!(matches!(missing, BtfError::Missing { .. }));
    }

    /// A blob captured from a real encoder: the `.BTF` section LLVM and bpf-linker wrote into
    /// our own eBPF object. The layout it records for the shared types must be the one Rust
    /// gives them.
    #[test]
    fn object_btf_matches_rust_layout() {
        use agent_common::KernelOffsets;
        use core::mem::offset_of;
        use object::{Object as _, ObjectSection as _};

        let file = object::File::parse(crate::loader::EBPF_OBJECT).expect("embedded object is ELF");
        let section = file.section_by_name(".BTF").expect(".BTF section");
        let btf = Btf::parse(section.data().expect("section data")).expect("parse object BTF");
        let off = |s: &str, m: &str| btf.member(s, m).expect("member").offset as usize;
        assert_eq!(
            off("KernelOffsets", "sb_s_dev"),
            offset_of!(KernelOffsets, sb_s_dev)
        );
        assert_eq!(
            off("KernelOffsets", "sb_s_writers"),
            offset_of!(KernelOffsets, sb_s_writers)
        );
        assert_eq!(
            off("KernelOffsets", "rw_sem_size"),
            offset_of!(KernelOffsets, rw_sem_size)
        );
        assert_eq!(
            off("KernelOffsets", "inode_i_sb"),
            offset_of!(KernelOffsets, inode_i_sb)
        );
        assert_eq!(
            off("KernelOffsets", "valid"),
            offset_of!(KernelOffsets, valid)
        );
        let id = btf.struct_id("KernelOffsets").unwrap();
        assert_eq!(
            btf.size_of(id).unwrap() as usize,
            size_of::<KernelOffsets>()
        );
        // The legacy map definition follows the kernel's `struct bpf_map_def` ABI.
        assert_eq!(off("bpf_map_def", "max_entries"), 12);
        assert_eq!(off("bpf_map_def", "map_flags"), 16);
    }

    /// The running kernel's BTF (when the machine has it) yields offsets that are consistent
    /// with the struct sizes the same BTF reports.
    #[test]
    fn running_kernel_offsets_are_consistent() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no {VMLINUX_BTF}: skipped");
            return;
        };
        let off = btf.kernel_offsets().expect("offsets");
        let sb_size = btf.size_of(btf.struct_id("super_block").unwrap()).unwrap();
        let sbw_size = btf.size_of(btf.struct_id("sb_writers").unwrap()).unwrap();
        assert!(off.sb_s_writers + sbw_size <= sb_size);
        assert!(off.sbw_rw_sem + 3 * off.rw_sem_size <= sbw_size);
        assert!(off.sb_s_id + 32 <= sb_size);
        assert_eq!(off.valid, 1);
        let n = btf.func_param_count("freeze_super").unwrap();
        assert!((1..=3).contains(&n), "freeze_super has {n} params");
    }
}
