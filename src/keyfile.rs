//! Private keys on disk: created on first start with mode 0600 (never world-readable, even
//! for an instant), read back on later starts. Text form `<kind>:<64 hex>`. Creation is
//! atomic (a temporary file, fsynced, linked into place, then the directory fsynced), so a
//! crash leaves either no key or a whole one, never an empty file that refuses the next start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Reads the 32-byte key at `path`; `Ok(None)` when there is no such file.
pub fn read(path: &Path, kind: &str) -> Result<Option<[u8; 32]>, KeyFileError> {
    let shown = path.display().to_string();
    let io = |source| KeyFileError::Io {
        path: shown.clone(),
        source,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    warn_if_readable_by_others(path);
    if text.trim().is_empty() {
        return Err(KeyFileError::Invalid {
            path: shown.clone(),
            reason: "the file is empty (an interrupted creation by an older version?); \
                     if no client has used this key yet, delete the file to create a new one"
                .into(),
        });
    }
    parse(text.trim(), kind)
        .map(Some)
        .map_err(|reason| KeyFileError::Invalid {
            path: shown.clone(),
            reason,
        })
}

/// Loads the 32-byte key at `path`, creating it from `generate` if it does not exist yet.
pub fn load_or_create(
    path: &Path,
    kind: &str,
    generate: impl FnOnce() -> [u8; 32],
) -> Result<[u8; 32], KeyFileError> {
    if let Some(key) = read(path, kind)? {
        return Ok(key);
    }
    let shown = path.display().to_string();
    let io = |source| KeyFileError::Io {
        path: shown.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let key = generate();
    write_atomically(path, format!("{kind}:{}\n", hex::encode(key)).as_bytes()).map_err(io)?;
    tracing::info!(path = %shown, "generated a new {kind} key");
    Ok(key)
}

/// Warns when a secret file (a key file, the TLS key) can be read by group or others.
pub fn warn_if_readable_by_others(path: &Path) {
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "secret file is readable by others; chmod 600 it");
        }
    }
}

/// Creates `path` with `contents` (mode 0600) so that it appears whole or not at all: the bytes
/// go to a temporary file beside it, are fsynced, and are hard-linked into place (which,
/// unlike a rename, never replaces a file another process created meanwhile); then the
/// directory is fsynced so the new name survives a power loss.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => std::path::PathBuf::from("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = dir.join(format!(".{name}.tmp"));
    // A leftover from a crash mid-creation holds nothing anyone has used.
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    let written = file
        .write_all(contents)
        .and_then(|_| file.sync_all())
        .and_then(|_| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    written?;
    std::fs::File::open(&dir)?.sync_all()
}

fn parse(text: &str, kind: &str) -> Result<[u8; 32], String> {
    let hex_part = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(|| format!("expected \"{kind}:<64 hex digits>\""))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut key)
        .map_err(|_| format!("expected \"{kind}:<64 hex digits>\""))?;
    Ok(key)
}

/// Fresh random key bytes.
pub fn random_key() -> [u8; 32] {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.key");
        let key = load_or_create(&path, "privkey", || [9; 32]).unwrap();
        assert_eq!(key, [9; 32]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path, "privkey", || [1; 32]).unwrap();
        assert_eq!(again, [9; 32]);
        std::fs::write(&path, "garbage").unwrap();
        let err = load_or_create(&path, "privkey", || [1; 32]).unwrap_err();
        assert!(err.to_string().contains("expected \"privkey:"), "{err}");
    }

    #[test]
    fn a_crash_mid_creation_leaves_no_key_or_a_precise_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        // A temporary file left by a crash before the link: ignored, a key is created.
        std::fs::write(dir.path().join(".k.key.tmp"), "privkey:00").unwrap();
        assert_eq!(
            load_or_create(&path, "privkey", || [7; 32]).unwrap(),
            [7; 32]
        );
        assert!(!dir.path().join(".k.key.tmp").exists());
        // An empty key file (what the old non-atomic creation could leave) is named as such.
        std::fs::write(&path, "").unwrap();
        let err = load_or_create(&path, "privkey", || [1; 32]).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }
}
