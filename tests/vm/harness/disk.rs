//! Disk images of the test VM and what the host can tell about a copy of one: whether the
//! ext4 in it is clean (`e2fsck -fn` finds nothing and no journal recovery is pending) and what
//! a file in it holds (read with debugfs, so no copy is ever mounted on the host).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::{Result, VmError};
use super::process::{run_tool, run_tool_ok};

/// Creates a sparse raw image of `size_mib` MiB.
pub fn create_image(path: &Path, size_mib: u64) -> Result<()> {
    let f = File::create(path).map_err(|e| VmError::io(format!("create {}", path.display()), e))?;
    f.set_len(size_mib << 20)
        .map_err(|e| VmError::io(format!("size {}", path.display()), e))
}

/// Copies an image as the snapshot flow does (`cp --sparse=always`); returns how long it took.
pub fn copy_image(src: &Path, dst: &Path) -> Result<Duration> {
    let t = Instant::now();
    run_tool_ok(
        "cp",
        &["--sparse=always".as_ref(), src.as_os_str(), dst.as_os_str()],
    )?;
    Ok(t.elapsed())
}

/// The state of the ext4 filesystem in an image.
#[derive(Debug, Clone)]
pub struct FsckReport {
    /// The image checked.
    pub image: PathBuf,
    /// Exit code of `e2fsck -fn` (0: no errors found).
    pub code: Option<i32>,
    /// What e2fsck printed.
    pub output: String,
    /// The superblock carries `needs_recovery`: the journal holds transactions that were never
    /// checkpointed, i.e. the image was copied from a live, unfrozen filesystem.
    pub needs_recovery: bool,
}

impl FsckReport {
    /// True for a filesystem that mounts without journal recovery and has no errors: what a
    /// point-in-time consistent snapshot must be.
    pub fn clean(&self) -> bool {
        self.code == Some(0) && !self.needs_recovery && !self.output.contains("journal recovery")
    }
}

impl std::fmt::Display for FsckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: e2fsck -fn exit {:?}, needs_recovery={}\n{}",
            self.image.display(),
            self.code,
            self.needs_recovery,
            self.output.trim_end()
        )
    }
}

/// Checks the ext4 in `image` read-only.
pub fn fsck(image: &Path) -> Result<FsckReport> {
    let fsck = run_tool("e2fsck", &["-f".as_ref(), "-n".as_ref(), image.as_os_str()])?;
    let header = run_tool_ok("dumpe2fs", &["-h".as_ref(), image.as_os_str()])?;
    Ok(FsckReport {
        image: image.to_path_buf(),
        code: fsck.code,
        output: fsck.text,
        needs_recovery: has_feature(&header, "needs_recovery"),
    })
}

/// Whether `dumpe2fs -h` output lists `feature` among the filesystem features.
fn has_feature(dumpe2fs: &str, feature: &str) -> bool {
    dumpe2fs
        .lines()
        .filter_map(|l| l.strip_prefix("Filesystem features:"))
        .any(|f| f.split_whitespace().any(|w| w == feature))
}

/// The contents of `path` inside the ext4 in `image` (through debugfs, without mounting).
pub fn read_file(image: &Path, path: &str, scratch: &Path) -> Result<Vec<u8>> {
    let out = scratch.join(format!(
        "{}.extracted",
        image.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&out);
    let request = format!("dump {path} {}", out.display());
    let text = run_tool_ok(
        "debugfs",
        &["-R".as_ref(), request.as_ref(), image.as_os_str()],
    )?;
    let data = std::fs::read(&out).map_err(|e| {
        VmError::io(
            format!("read {path} extracted from {}: {text}", image.display()),
            e,
        )
    })?;
    let _ = std::fs::remove_file(&out);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_read_from_the_features_line_only() {
        let h = "Filesystem volume name:   <none>\n\
                 Filesystem features:      has_journal ext_attr needs_recovery extent\n\
                 Journal features:         journal_64bit\n";
        assert!(has_feature(h, "needs_recovery"));
        assert!(!has_feature(h, "journal_64bit"));
        assert!(!has_feature(h, "needs"));
    }

    #[test]
    fn a_copy_of_a_fresh_filesystem_is_clean_and_readable() {
        let dir = std::env::temp_dir().join(format!("vm-disk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("a.img");
        create_image(&img, 8).unwrap();
        run_tool_ok(
            "mkfs.ext4",
            &["-q".as_ref(), "-F".as_ref(), img.as_os_str()],
        )
        .unwrap();
        let copy = dir.join("b.img");
        copy_image(&img, &copy).unwrap();
        let r = fsck(&copy).unwrap();
        assert!(r.clean(), "{r}");
        let e = read_file(&copy, "/no-such-file", &dir).unwrap_err();
        assert!(e.to_string().contains("/no-such-file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
