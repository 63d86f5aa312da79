//! Kernel struct offsets from BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya applies no CO-RE relocations to Rust programs and `struct super_block` is
//! `__randomize_layout`, so the offsets the programs need are read here at load time and handed
//! to them as the `OFFSETS` global. Only the parts of BTF this needs are parsed: type records,
//! struct/union members (with anonymous members and bitfield encoding), arrays, the qualifier
//! and typedef chain, and function prototypes.
//!
//! # Why not aya's BTF parser (`aya_obj::btf::Btf`, issue 16)
//!
//! The loader parses the kernel's BTF with aya as well: `FExit` and `BtfTracePoint` programs
//! need an `aya::Btf` to find their target. Using that one parse for the offsets too would
//! save the second parse (issue 16 asks for it), but aya-obj 0.3 (aya 0.14) does not give
//! what is needed: type lookup by id, struct members and their offsets, type sizes, array
//! lengths, the typedef/qualifier chain and `FUNC_PROTO` parameters are all `pub(crate)`.
//! Its public queries are parsing and `id_by_type_name_kind` (name to id). So this parser
//! keeps member offsets ([`Btf::member`]), sizes ([`Btf::size_of`], [`Btf::array_element`],
//! [`Btf::is_pointer`]) and function arity ([`Btf::func_param_count`]), which aya cannot
//! give, and [`Btf::has_named_type`], which aya could: the loader decides from this parse
//! (kernel too old, which sync_fs tracepoints exist, the fexit variant) and drops it before
//! aya's parse starts, so the two never coexist and a too-old kernel is refused before aya
//! parses anything. `btf-rs` is no alternative: LGPL-2.1-or-later.
//!
//! Memory and time, measured with `tests/btf_memory.rs` (each parser in a fresh process, a
//! counting allocator; release build, the debug build allocates the same) on a 6.18 kernel
//! whose `/sys/kernel/btf/vmlinux` is 5.3 MiB:
//!
//! | parser | heap peak | heap held after | VmHWM growth | time |
//! |---|---|---|---|---|
//! | this one, with [`Btf::kernel_offsets`] | 19.0 MiB | 13.2 MiB | 19.5 MiB | 24 ms |
//! | `aya::Btf::parse_file` | 18.0 MiB | 12.8 MiB | 18.2 MiB | 16 ms |
//!
//! Both build the whole type table, so they cost about the same: this parser is not the
//! cheaper one, and keeping it is no memory saving. Start-up pays one of them at a time (the
//! loader drops ours before aya parses), so BTF's share of the agent's peak is one parse,
//! 18-19 MiB of heap; issue 13's 16 MiB peak target cannot be met on this kernel while aya
//! parses the whole vmlinux BTF to load the fexit and tp_btf programs. Were aya to expose
//! members and sizes, this module should shrink to [`Btf::kernel_offsets`] over aya's `Btf`,
//! and the loader parse once.

use std::{collections::HashMap, path::Path};

use agent_common::KernelOffsets;

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xEB9F;

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
}

/// One struct/union member: name, type and offset in bits.
#[derive(Clone, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

/// One parsed type record.
#[derive(Clone, Debug)]
struct Type {
    kind: Kind,
    name_off: u32,
    vlen: u16,
    /// `size` for int/struct/union/enum, referenced type id for ptr/typedef/qualifiers/func.
    size_or_type: u32,
    /// Array element type and count.
    array: Option<(u32, u32)>,
    /// Struct/union members.
    members: Vec<Member>,
}

/// A member located inside a struct: its byte offset from the struct start and its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// BTF type id of the member.
    pub type_id: u32,
}

/// Parsed BTF: the type table (index = type id, 0 = void) and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Struct and union ids by name (first definition wins; forward declarations excluded).
    structs: HashMap<String, u32>,
    /// Function ids by name.
    funcs: HashMap<String, u32>,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, BtfError> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads and parses the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads and parses a raw BTF file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                BtfError::Missing {
                    path: path.display().to_string(),
                }
            } else {
                BtfError::Io {
                    path: path.display().to_string(),
                    source,
                }
            }
        })?;
        Self::parse(&data)
    }

    /// Parses raw little-endian BTF (the format of `/sys/kernel/btf/vmlinux` and of a `.BTF`
    /// ELF section).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type {
            kind: Kind::Void,
            name_off: 0,
            vlen: 0,
            size_or_type: 0,
            array: None,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < types_data.len() {
            let id = types.len() as u32;
            let name_off = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let raw_kind = ((info >> 24) & 0x1f) as u8;
            let kind =
                Kind::from_raw(raw_kind).ok_or(BtfError::UnknownKind { kind: raw_kind, id })?;
            let vlen = (info & 0xffff) as u16;
            let kflag = info >> 31 == 1;
            let mut ty = Type {
                kind,
                name_off,
                vlen,
                size_or_type,
                array: None,
                members: Vec::new(),
            };
            match kind {
                Kind::Int | Kind::Var | Kind::DeclTag => at += 4,
                Kind::Array => {
                    ty.array = Some((u32_at(types_data, at)?, u32_at(types_data, at + 8)?));
                    at += 12;
                }
                Kind::Struct | Kind::Union => {
                    for _ in 0..vlen {
                        let offset = u32_at(types_data, at + 8)?;
                        ty.members.push(Member {
                            name_off: u32_at(types_data, at)?,
                            type_id: u32_at(types_data, at + 4)?,
                            // With kind_flag set the top 8 bits are the bitfield size.
                            bit_offset: if kflag { offset & 0x00ff_ffff } else { offset },
                        });
                        at += 12;
                    }
                }
                Kind::Enum => at += 8 * vlen as usize,
                Kind::FuncProto => at += 8 * vlen as usize,
                Kind::Datasec | Kind::Enum64 => at += 12 * vlen as usize,
                _ => {}
            }
            types.push(ty);
        }
        if at != types_data.len() {
            return Err(BtfError::Malformed("type section ends inside a record"));
        }

        let mut btf = Self {
            types,
            strings,
            structs: HashMap::new(),
            funcs: HashMap::new(),
        };
        for id in 1..btf.types.len() as u32 {
            let ty = &btf.types[id as usize];
            let map = match ty.kind {
                Kind::Struct | Kind::Union => &mut btf.structs,
                Kind::Func => &mut btf.funcs,
                _ => continue,
            };
            let name = str_at(&btf.strings, ty.name_off);
            if !name.is_empty() {
                map.entry(name.to_owned()).or_insert(id);
            }
        }
        Ok(btf)
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or(BtfError::Malformed("type id out of range"))
    }

    fn name(&self, ty: &Type) -> &str {
        str_at(&self.strings, ty.name_off)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..32 {
            let ty = self.ty(id)?;
            match ty.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = ty.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed("typedef chain too long"))
    }

    /// Id of the struct (or union) called `name`.
    pub fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        self.structs
            .get(name)
            .copied()
            .ok_or_else(|| BtfError::TypeNotFound {
                kind: "struct",
                name: name.to_owned(),
            })
    }

    /// Size in bytes of a type (arrays multiply out; pointers are 8 bytes).
    pub fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let id = self.resolve(id)?;
        let ty = self.ty(id)?;
        match ty.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float => {
                Ok(ty.size_or_type)
            }
            Kind::Ptr => Ok(8),
            Kind::Array => {
                let (elem, n) = ty.array.ok_or(BtfError::Malformed("array without data"))?;
                Ok(self.size_of(elem)? * n)
            }
            other => Err(BtfError::Unexpected(format!("no size for a {other:?}"))),
        }
    }

    /// Element type of an array type (after typedefs/qualifiers).
    pub fn array_element(&self, id: u32) -> Result<(u32, u32), BtfError> {
        let ty = self.ty(self.resolve(id)?)?;
        ty.array
            .ok_or_else(|| BtfError::Unexpected(format!("type {id} is not an array")))
    }

    /// True if the type (after typedefs/qualifiers) is a pointer.
    pub fn is_pointer(&self, id: u32) -> Result<bool, BtfError> {
        Ok(self.ty(self.resolve(id)?)?.kind == Kind::Ptr)
    }

    /// Finds `member` directly in struct/union `id`, or inside one of its anonymous members,
    /// returning its byte offset relative to `id`.
    fn find_member(&self, id: u32, member: &str) -> Result<Option<Field>, BtfError> {
        let ty = self.ty(self.resolve(id)?)?;
        if !matches!(ty.kind, Kind::Struct | Kind::Union) {
            return Ok(None);
        }
        for m in &ty.members {
            let name = str_at(&self.strings, m.name_off);
            if name == member {
                return to_field(m, 0);
            }
            if name.is_empty() {
                if let Some(inner) = self.find_member(m.type_id, member)? {
                    let base = to_field(m, 0)?.map_or(0, |f| f.offset);
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
        let id = self
            .funcs
            .get(name)
            .copied()
            .ok_or_else(|| BtfError::TypeNotFound {
                kind: "function",
                name: name.to_owned(),
            })?;
        let proto = self.ty(self.ty(id)?.size_or_type)?;
        if proto.kind != Kind::FuncProto {
            return Err(BtfError::Unexpected(format!("{name} has no prototype")));
        }
        Ok(usize::from(proto.vlen))
    }

    /// True if BTF knows a type or function named `name` (any kind), e.g. a tracepoint's
    /// `btf_trace_<name>` typedef.
    pub fn has_named_type(&self, name: &str) -> bool {
        self.types.iter().skip(1).any(|t| self.name(t) == name)
    }

    /// The offsets the programs need, all checked for the shape they rely on.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
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

fn str_at(strings: &[u8], off: u32) -> &str {
    let Some(tail) = strings.get(off as usize..) else {
        return "";
    };
    let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
    std::str::from_utf8(&tail[..end]).unwrap_or("")
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
