//! The compiled-code cache: native code for each plugin, kept on disk so a restart does not
//! compile every plugin again.
//!
//! An entry is named after wasmtime's compatibility hash of the engine (its version and every
//! setting that changes the generated code) and the SHA-256 of the component's bytes, so a new
//! hookd or a new plugin version never reads a stale entry. Each file ends with the SHA-256 of
//! what precedes it, checked before the code is loaded: a torn or damaged file is a miss (it is
//! deleted and compiled again), never a crash.
//!
//! **Trust:** loading an entry maps native code without validating it, so the folder must be
//! writable only by hookd. It lives in the state directory, created with mode 0700, and
//! [`CodeCache::open`] refuses a folder owned by another user or writable by group or others
//! ([`CacheError::Insecure`]): whoever can write there can run code as hookd. An entry that is
//! not hookd's own (another owner, writable by others) is a miss, never loaded.

use std::collections::HashSet;
use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const EXTENSION: &str = "cwasm";
const DIGEST_LEN: usize = 32;
/// Entries not used by a loaded plugin are kept this long (for a quick rollback), then
/// removed by [`CodeCache::prune`].
const KEEP_UNUSED: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why the cache cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create the compiled-code cache `{path}`: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The folder is not hookd's alone: loading from it could run someone else's code.
    #[error(
        "refusing the compiled-code cache `{path}`: {problem}. Its entries are loaded as native \
         code, so it must belong to the user hookd runs as and be writable by no one else; fix \
         it with `{fix}`"
    )]
    Insecure {
        path: PathBuf,
        problem: String,
        fix: String,
    },
}

impl CacheError {
    /// Whether the folder is refused as unsafe (hookd must not start), rather than unusable.
    pub fn is_insecure(&self) -> bool {
        matches!(self, CacheError::Insecure { .. })
    }
}

/// Whether `meta` is hookd's own and writable by no one else: `Err((problem, fix))` if not.
fn private(path: &Path, meta: &std::fs::Metadata) -> Result<(), (String, String)> {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err((
            format!(
                "it is owned by uid {}, not by uid {euid} that hookd runs as",
                meta.uid()
            ),
            format!("chown {euid} {}", path.display()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err((
            format!(
                "it is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ),
            format!("chmod go-w {}", path.display()),
        ));
    }
    Ok(())
}

/// Compiled plugins on disk.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash: the first part of every entry's name.
    engine_key: String,
}

impl CodeCache {
    /// Opens (creating it 0700 if needed) the cache folder for `engine`; refuses one that is
    /// not hookd's alone.
    pub fn open(dir: &Path, engine: &Engine) -> Result<CodeCache, CacheError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let create = |source| CacheError::Create {
            path: dir.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(create)?;
        let meta = std::fs::metadata(dir).map_err(create)?;
        private(dir, &meta).map_err(|(problem, fix)| CacheError::Insecure {
            path: dir.to_owned(),
            problem,
            fix,
        })?;
        // Stable for a given hookd build: DefaultHasher's keys are fixed, and the hash it
        // digests includes wasmtime's version.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CodeCache {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, content_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{}-{content_hash}.{EXTENSION}", self.engine_key))
    }

    /// The compiled component for `content_hash`, if a sound entry exists.
    pub fn get(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let path = self.entry(content_hash);
        let mut file = std::fs::File::open(&path).ok()?;
        if let Err((problem, _)) = file.metadata().map(|m| private(&path, &m)).ok()? {
            tracing::warn!(
                entry = %path.display(),
                problem,
                "compiled-code cache entry not written by hookd; not loaded, compiling again"
            );
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).ok()?;
        let sound = bytes.len() > DIGEST_LEN && {
            let (code, digest) = bytes.split_at(bytes.len() - DIGEST_LEN);
            Sha256::digest(code).as_slice() == digest
        };
        let component = if sound {
            let code = &bytes[..bytes.len() - DIGEST_LEN];
            // SAFETY: the entry was written by `put` from `Component::serialize` for an engine
            // with the same compatibility hash, and its digest matches, so these are the bytes
            // wasmtime produced. The folder is private to hookd (see the module's doc).
            unsafe { Component::deserialize(engine, code) }.ok()
        } else {
            None
        };
        if component.is_none() {
            tracing::warn!(entry = %path.display(), "damaged compiled-code cache entry; compiling again");
            let _ = std::fs::remove_file(&path);
        }
        component
    }

    /// Stores `component`, compiled from content `content_hash`. Written to a temporary file,
    /// synced, then renamed into place, so a reader sees a whole entry or none.
    pub fn put(&self, content_hash: &str, component: &Component) -> std::io::Result<()> {
        let code = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let path = self.entry(content_hash);
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&code)?;
        tmp.write_all(&Sha256::digest(&code))?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Removes entries made by another engine (an older hookd) and entries for content not in
    /// `in_use` that were written more than a week ago.
    pub fn prune(&self, in_use: &HashSet<String>) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stem) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|_| path.extension().is_some_and(|e| e == EXTENSION))
            else {
                continue;
            };
            let (engine_key, content_hash) = stem.split_once('-').unwrap_or((stem, ""));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > KEEP_UNUSED);
            let stale = engine_key != self.engine_key || (!in_use.contains(content_hash) && old);
            if stale && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}
