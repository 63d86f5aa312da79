//! A loop block device backed by a sparse image file the test created. It is what the
//! guest's virtio disk is in the real system: Init formats and mounts it, the freezer
//! freezes filesystems on it. Dropping it detaches the device (after unmounting anything
//! still mounted from it) and deletes the image.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::{run, run_ok};
use crate::error::{FixtureError, Result};
use crate::mountinfo;

/// An attached loop device and its image file.
#[derive(Debug)]
pub struct LoopDev {
    device: PathBuf,
    image: PathBuf,
}

/// Creates a sparse file of `size_mib` MiB.
fn sparse_image(image: &Path, size_mib: u64) -> Result<()> {
    let f = std::fs::File::create(image)
        .map_err(|e| FixtureError::io(format!("create {}", image.display()), e))?;
    f.set_len(size_mib << 20)
        .map_err(|e| FixtureError::io(format!("truncate {}", image.display()), e))
}

impl LoopDev {
    /// Creates a sparse image of `size_mib` MiB at `image` and attaches it to a free loop
    /// device.
    pub fn create(image: &Path, size_mib: u64) -> Result<Self> {
        sparse_image(image, size_mib)?;
        Self::attach(image)
    }

    /// Attaches an existing image file to a free loop device.
    pub fn attach(image: &Path) -> Result<Self> {
        Self::attach_with(image, false)
    }

    /// Attaches an existing image file read-only (for inspecting a copy, e.g. a snapshot).
    pub fn attach_read_only(image: &Path) -> Result<Self> {
        Self::attach_with(image, true)
    }

    fn attach_with(image: &Path, read_only: bool) -> Result<Self> {
        let mut args = vec![OsStr::new("-f"), OsStr::new("--show")];
        if read_only {
            args.push(OsStr::new("-r"));
        }
        args.push(image.as_os_str());
        // Another test may grab the same free device between the kernel's answer and the
        // attach; losetup reports that as a failure, so try again a few times.
        let mut last = None;
        for _ in 0..5 {
            match run_ok("losetup", &args) {
                Ok(out) => {
                    let device = PathBuf::from(out.trim());
                    return Ok(Self {
                        device,
                        image: image.to_path_buf(),
                    });
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// The backing image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// `major:minor` of the device (what mountinfo shows for a filesystem on it).
    pub fn dev_id(&self) -> Result<String> {
        let st = nix::sys::stat::stat(&self.device)
            .map_err(|e| FixtureError::io(format!("stat {}", self.device.display()), e.into()))?;
        Ok(format!(
            "{}:{}",
            libc::major(st.st_rdev),
            libc::minor(st.st_rdev)
        ))
    }

    /// Grows the image to `size_mib` MiB and tells the loop driver (`losetup -c`), as a
    /// hypervisor does when a disk is resized.
    pub fn grow(&self, size_mib: u64) -> Result<()> {
        sparse_image_grow(&self.image, size_mib)?;
        run_ok("losetup", &[OsStr::new("-c"), self.device.as_os_str()])?;
        Ok(())
    }

    /// Size of the block device in bytes.
    pub fn size_bytes(&self) -> Result<u64> {
        let out = run_ok(
            "blockdev",
            &[OsStr::new("--getsize64"), self.device.as_os_str()],
        )?;
        out.trim().parse().map_err(|e| FixtureError::Parse {
            what: "blockdev --getsize64".into(),
            reason: format!("{e}: {out:?}"),
        })
    }
}

impl LoopDev {
    /// Waits (at most 5 s) until the kernel has let go of the image. `losetup -d` on a
    /// device someone still holds open (udev's blkid probe after the `losetup -c` change
    /// event, say) only sets autoclear: the detach happens at the last close, a moment
    /// later. Callers that check for leftovers right after the drop must not see it.
    fn wait_detached(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while backing_file(&self.device).as_deref() == Some(self.image.as_path()) {
            if std::time::Instant::now() >= deadline {
                eprintln!(
                    "loopdev: {} still backed by {} 5 s after losetup -d (held open elsewhere)",
                    self.device.display(),
                    self.image.display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn sparse_image_grow(image: &Path, size_mib: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(|e| FixtureError::io(format!("open {}", image.display()), e))?;
    f.set_len(size_mib << 20)
        .map_err(|e| FixtureError::io(format!("grow {}", image.display()), e))
}

/// The image file behind a loop device, if it is attached.
pub fn backing_file(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end_matches('\n')))
}

/// Loop devices whose image lives below `root`.
pub fn devices_backed_under(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("loop"))
        .map(|n| PathBuf::from("/dev").join(n))
        .filter(|dev| backing_file(dev).is_some_and(|b| b.starts_with(root)))
        .collect()
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        // A filesystem the agent mounted from this device (Init) is ours to remove too.
        if let Ok(mounts) = mountinfo::read() {
            for m in mounts
                .iter()
                .rev()
                .filter(|m| Path::new(&m.source) == self.device)
            {
                let _ = run("fsfreeze", &[OsStr::new("-u"), m.mount_point.as_os_str()]);
                crate::mount::unmount(&m.mount_point);
            }
        }
        if backing_file(&self.device).as_deref() == Some(self.image.as_path()) {
            if let Err(e) = run_ok("losetup", &[OsStr::new("-d"), self.device.as_os_str()]) {
                eprintln!("loopdev: {e}");
            } else {
                self.wait_detached();
            }
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    #[test]
    fn attaches_grows_and_detaches() {
        let s = Scratch::new().unwrap();
        let d = LoopDev::create(&s.join("d.img"), 16).unwrap();
        assert!(
            d.device().to_str().unwrap().starts_with("/dev/loop"),
            "{}",
            d.device().display()
        );
        assert_eq!(backing_file(d.device()).unwrap(), s.join("d.img"));
        assert_eq!(d.size_bytes().unwrap(), 16 << 20);
        assert_eq!(
            devices_backed_under(s.path()),
            vec![d.device().to_path_buf()]
        );
        d.grow(32).unwrap();
        assert_eq!(d.size_bytes().unwrap(), 32 << 20);
        assert!(d.dev_id().unwrap().starts_with("7:"));
        drop(d);
        assert!(devices_backed_under(s.path()).is_empty());
        assert!(!s.join("d.img").exists());
    }
}
