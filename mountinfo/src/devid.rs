//! `DevId`: a device number as the kernel prints it in mountinfo (`major:minor`).
//!
//! A superblock is identified by its device number, so this is the key for deduplicating
//! bind mounts and for matching a loop image's filesystem to the mount that holds it.

use std::fmt;
use std::str::FromStr;

/// A device number split into major and minor, as in `/proc/self/mountinfo`'s third field.
///
/// Major 0 means an anonymous device (virtual filesystems, but also btrfs and network
/// filesystems), so `major == 0` alone never decides that a filesystem has no storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevId {
    /// Major number (driver class: 7 = loop, 8 = sd, 253/254 = dm/virtio, 0 = anonymous).
    pub major: u32,
    /// Minor number (instance within the driver).
    pub minor: u32,
}

impl DevId {
    /// Builds a `DevId` from major and minor.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Splits a raw `dev_t` (`st_dev` / `st_rdev` of stat(2)) with the libc encoding.
    pub fn from_dev_t(dev: libc::dev_t) -> Self {
        Self {
            major: libc::major(dev),
            minor: libc::minor(dev),
        }
    }

    /// Encodes back to a raw `dev_t`, e.g. to compare with a stat(2) result.
    pub fn to_dev_t(self) -> libc::dev_t {
        libc::makedev(self.major, self.minor)
    }

    /// True for anonymous devices (major 0): the superblock has no block device of its own
    /// in its device number.
    pub fn is_anonymous(self) -> bool {
        self.major == 0
    }
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// Why a `major:minor` string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device number {0:?}: expected MAJOR:MINOR with decimal numbers")]
pub struct DevIdParseError(pub String);

impl FromStr for DevId {
    type Err = DevIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DevIdParseError(s.to_owned());
        let (maj, min) = s.split_once(':').ok_or_else(err)?;
        let parse = |part: &str| {
            // u32::from_str accepts a leading '+'; the kernel never prints one.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            part.parse::<u32>().map_err(|_| err())
        };
        Ok(Self::new(parse(maj)?, parse(min)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let d: DevId = "254:16".parse().unwrap();
        assert_eq!(d, DevId::new(254, 16));
        assert_eq!(d.to_string(), "254:16");
        assert_eq!("0:39".parse::<DevId>().unwrap(), DevId::new(0, 39));
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in [
            "",
            "8",
            "8:",
            ":1",
            "8:1:2",
            "a:1",
            "+8:1",
            "8:-1",
            " 8:1",
            "99999999999:0",
        ] {
            assert!(bad.parse::<DevId>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn dev_t_round_trip_including_large_minors() {
        // Minors above 255 use the split encoding (loop devices beyond loop255, NVMe, ...).
        for d in [
            DevId::new(7, 0),
            DevId::new(259, 1048575),
            DevId::new(4095, 300),
        ] {
            assert_eq!(DevId::from_dev_t(d.to_dev_t()), d);
        }
    }

    #[test]
    fn matches_stat_of_a_real_file() {
        use std::os::unix::fs::MetadataExt;
        let st_dev = std::fs::metadata("/proc/self/mountinfo").unwrap().dev();
        let d = DevId::from_dev_t(st_dev);
        assert_eq!(d.to_dev_t(), st_dev);
        assert!(d.is_anonymous(), "procfs has an anonymous device, got {d}");
    }
}
