//! The compiled-component cache: a directory only this host writes, holding `.cwasm` files
//! keyed on (component SHA-256, wasmtime version, engine configuration).
//!
//! Loading a `.cwasm` is `unsafe` in wasmtime because the bytes are executable code. The
//! safety argument is that this directory is created 0700, refused if anyone else can write
//! to it, and only ever written by [`ComponentCache::store`] with bytes wasmtime itself
//! produced; wasmtime additionally rejects artifacts from another version or configuration.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::Error;

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
    /// Our effective uid: cached files must be ours.
    uid: u32,
}

impl ComponentCache {
    /// Opens (creating, mode 0700) the cache directory for `engine`. Refuses a directory that
    /// is a symlink, belongs to another user, or that others can write or read: its files are
    /// loaded as native code.
    pub fn open(dir: &Path, engine: &Engine) -> Result<ComponentCache, Error> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let io = |what: &str| {
            let what = format!("{what} {}", dir.display());
            move |e: std::io::Error| Error::Cache(format!("{what}: {e}"))
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io("cannot create component cache"))?;
        }
        let meta = std::fs::symlink_metadata(dir).map_err(io("cannot inspect component cache"))?;
        let refuse = || {
            Error::Cache(format!(
                "{} must be a directory owned by this user with mode 0700 (it holds native code); \
                 fix it or choose another cache directory",
                dir.display()
            ))
        };
        // Nothing is written into a symlink or a directory others may touch.
        if !meta.is_dir() || meta.permissions().mode() & 0o077 != 0 {
            return Err(refuse());
        }
        // Who we are, without libc: a file we create (never through a symlink: create_new) is
        // owned by our effective uid. Reading /proc/self instead fails in a mount namespace
        // whose /proc belongs to another PID namespace (an agent inside a container).
        let probe = dir.join(format!(".owner-probe-{}", std::process::id()));
        let _ = std::fs::remove_file(&probe);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(io("cannot write in"))?;
        let uid = std::fs::symlink_metadata(&probe).map(|m| m.uid());
        let _ = std::fs::remove_file(&probe);
        let uid = uid.map_err(io("cannot tell who owns"))?;
        if meta.uid() != uid {
            return Err(refuse());
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{:016x}", h.finish());
        Ok(ComponentCache {
            dir: dir.to_path_buf(),
            engine_key,
            uid,
        })
    }

    fn path_for(&self, wasm: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(wasm));
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// A cached compilation of `wasm`, if there is one.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Option<Component> {
        use std::os::unix::fs::MetadataExt;
        let path = self.path_for(wasm);
        // Only a regular file (not a symlink) of ours that nobody else can write.
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.uid() != self.uid || meta.permissions().mode() & 0o022 != 0 {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let bytes = std::fs::read(&path).ok()?;
        // SAFETY: the bytes come from a regular file owned by this user, not writable by others,
        // in a 0700 directory owned by this user that only this host writes (checked in
        // `open`), written by `store` from `Component::serialize` output of an engine with the
        // same compatibility hash (part of the file name). wasmtime still checks the version
        // and configuration recorded in the artifact and returns an error on any mismatch.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, &bytes) };
        match loaded {
            Ok(c) => Some(c),
            Err(_) => {
                // A stale or damaged artifact: drop it and compile again.
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes the compiled form of `wasm` atomically (temporary file, then rename), mode 0600.
    pub fn store(&self, wasm: &[u8], component: &Component) -> Result<(), Error> {
        let bytes = component
            .serialize()
            .map_err(|e| Error::Cache(format!("cannot serialize a component: {e:#}")))?;
        let path = self.path_for(wasm);
        // Unique per writer: two loads of the same component may race to store it.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::Cache(format!("cannot write {}: {e}", path.display()))
        })
    }
}
