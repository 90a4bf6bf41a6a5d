//! Private keys on disk: created on first start with mode 0600 (never world-readable, even
//! for an instant), read back on later starts. Text form `<kind>:<64 hex>`.

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
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %shown, mode = format!("{:o}", mode & 0o777), "key file is readable by others; chmod 600 it");
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
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    writeln!(file, "{kind}:{}", hex::encode(key)).map_err(io)?;
    file.sync_all().map_err(io)?;
    tracing::info!(path = %shown, "generated a new {kind} key");
    Ok(key)
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
}
