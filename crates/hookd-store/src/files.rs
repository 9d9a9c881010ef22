//! The store's files are hookd's alone: the folder must belong to the user hookd runs as and
//! be writable by no one else (it holds the events and, in `code-cache/`, native code hookd
//! runs), and the database is created 0600, whatever the umask of whoever starts hookd.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use crate::{DB_FILE, StoreError};

/// Creates `dir` (and missing parents) 0700 if it does not exist; refuses an existing one that
/// is owned by another user or writable by group or others.
pub(crate) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    let create = |source| StoreError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    if !dir.is_dir() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(create)?;
    }
    let meta = std::fs::metadata(dir).map_err(create)?;
    // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let insecure = |problem: String, fix: String| StoreError::Insecure {
        path: dir.to_owned(),
        problem,
        fix,
    };
    if meta.uid() != euid {
        return Err(insecure(
            format!(
                "it is owned by uid {}, not by uid {euid} that hookd runs as",
                meta.uid()
            ),
            format!("chown -R {euid} {}", dir.display()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(insecure(
            format!(
                "it is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ),
            format!("chmod go-w {}", dir.display()),
        ));
    }
    Ok(())
}

/// Creates the database file 0600 before SQLite opens it (SQLite gives the `-wal` and `-shm`
/// files it creates the database's mode), and takes group and other access away from
/// existing ones, which an older hookd or a manual start with a loose umask may have left.
pub(crate) fn private_db_files(dir: &Path) -> Result<(), StoreError> {
    let db = dir.join(DB_FILE);
    let failed = |path: &Path, source| StoreError::Permissions {
        path: path.to_owned(),
        source,
    };
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&db)
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(failed(&db, e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.join(format!("{DB_FILE}{suffix}"));
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(&path, e)),
        };
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| failed(&path, e))?;
            tracing::warn!(file = %path.display(), was = format!("{:o}", meta.mode() & 0o777),
                "the store file was readable by others; made it 0600");
        }
    }
    Ok(())
}
