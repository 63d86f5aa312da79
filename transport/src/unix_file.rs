//! Lifecycle of a listening unix socket file: refuse to clobber non-sockets, remove only
//! stale sockets, create the socket with mode 0600 without a window in which it is
//! reachable with looser permissions, and remove it again when the listener goes away.
//!
//! Race-free creation: the socket is bound inside a fresh private directory (mkdtemp,
//! mode 0700) next to the target, chmod'ed to 0600 there, then hard-linked to the final
//! name (`link` fails instead of replacing an existing file) and the private name removed.
//! Nobody can connect before the final name exists, and by then the mode is 0600. No
//! process-wide umask change is needed, so other threads are unaffected.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::error::TransportError;

/// Mode of the socket file: only the owner (root, for the agent) may connect.
pub const SOCKET_MODE: u32 = 0o600;

/// How long the liveness probe of an existing socket may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Owns the socket file's name; removes it on drop if it still refers to our socket
/// (same device and inode), so a successor's socket is never deleted.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove socket file");
                }
            }
            _ => {}
        }
    }
}

/// Binds a unix listener at `path` with mode 0600, replacing a stale socket file.
///
/// `uri` is only used in error messages.
pub(crate) async fn bind_unix(
    path: &Path,
    uri: &str,
) -> Result<(StdUnixListener, SocketFile), TransportError> {
    let bind_err = |source: io::Error| TransportError::Bind {
        uri: uri.to_string(),
        source,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            bind_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path has no parent directory",
            ))
        })?
        .to_path_buf();
    match std::fs::metadata(&parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bind_err(io::Error::from_raw_os_error(libc::ENOTDIR))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TransportError::ParentMissing {
                uri: uri.to_string(),
                parent,
            })
        }
        Err(e) => return Err(bind_err(e)),
    }

    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => remove_if_stale(path, uri).await?,
        Ok(_) => {
            return Err(TransportError::NotASocket {
                uri: uri.to_string(),
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }

    let (path, uri2) = (path.to_path_buf(), uri.to_string());
    tokio::task::spawn_blocking(move || create_private(&parent, &path, &uri2))
        .await
        .map_err(|e| bind_err(io::Error::other(e)))?
}

/// Removes an existing socket file if nobody accepts on it any more.
async fn remove_if_stale(path: &Path, uri: &str) -> Result<(), TransportError> {
    let in_use = |detail: String| TransportError::AddressInUse {
        uri: uri.to_string(),
        detail,
    };
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Ok(_)) => Err(in_use(format!(
            "another process is accepting connections on {}",
            path.display()
        ))),
        Err(_) => Err(in_use(format!(
            "{} belongs to a process that does not accept connections (probe timed out)",
            path.display()
        ))),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale socket file");
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(TransportError::Bind {
                    uri: uri.to_string(),
                    source: e,
                }),
            }
        }
        Ok(Err(e)) => Err(TransportError::Bind {
            uri: uri.to_string(),
            source: e,
        }),
    }
}

/// Blocking part: bind in a private directory, chmod, link into place.
fn create_private(
    parent: &Path,
    path: &Path,
    uri: &str,
) -> Result<(StdUnixListener, SocketFile), TransportError> {
    let bind_err = |source: io::Error| TransportError::Bind {
        uri: uri.to_string(),
        source,
    };
    let template = parent.join(".gt-XXXXXX");
    let dir = nix::unistd::mkdtemp(&template).map_err(|e| bind_err(e.into()))?;
    let private = dir.join("s");
    let result = (|| {
        let listener = StdUnixListener::bind(&private)?;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        std::fs::hard_link(&private, path)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })();
    // The private name and directory go away whatever happened.
    let _ = std::fs::remove_file(&private);
    let _ = std::fs::remove_dir(&dir);
    let listener = result.map_err(|e: io::Error| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            TransportError::AddressInUse {
                uri: uri.to_string(),
                detail: format!(
                    "{} was created by someone else while binding",
                    path.display()
                ),
            }
        } else {
            bind_err(e)
        }
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_is_created_0600_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let (listener, file) = bind_unix(&path, "unix://test").await.unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Only the socket remains in the directory: no private leftovers.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.sock")]);
        // The listener is reachable through the final name.
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
        drop(file);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_but_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        // Stale: bound then closed, the file stays.
        drop(StdUnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (_live, _file) = bind_unix(&path, "unix://test").await.unwrap();
        // Live: a second bind must refuse and leave the first one working.
        let err = bind_unix(&path, "unix://test").await.unwrap_err();
        assert!(matches!(err, TransportError::AddressInUse { .. }), "{err}");
        std::os::unix::net::UnixStream::connect(&path).unwrap();
    }

    #[tokio::test]
    async fn regular_file_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"precious").unwrap();
        let err = bind_unix(&path, "unix://test").await.unwrap_err();
        assert!(matches!(err, TransportError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[tokio::test]
    async fn missing_parent_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/a.sock");
        let err = bind_unix(&path, "unix://test").await.unwrap_err();
        assert!(matches!(err, TransportError::ParentMissing { .. }), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[tokio::test]
    async fn drop_spares_a_successors_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let (l1, f1) = bind_unix(&path, "unix://test").await.unwrap();
        drop(l1);
        // A successor replaced the (now stale) name before we cleaned up.
        std::fs::remove_file(&path).unwrap();
        let _l2 = StdUnixListener::bind(&path).unwrap();
        drop(f1);
        assert!(path.exists(), "the successor's socket must survive");
    }
}
