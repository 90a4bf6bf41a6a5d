//! Webhook signing secrets on disk, kept like the server's private keys: one 0600 file per
//! endpoint, created atomically, never in the log or an event. Managed endpoints keep theirs
//! at `<data dir>/webhooks/<id>.secret` (made by the server when the endpoint is created,
//! shown once); configured endpoints name their own file (`secret_path`).

use rand::distributions::Alphanumeric;
use rand::Rng;
use std::path::{Path, PathBuf};

/// The most a secret file may hold (secrets are tens of bytes).
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;
/// Random characters in a generated secret (after `hskey-webhook-`).
const SECRET_LEN: usize = 48;

/// Where a managed endpoint's secret lives.
pub fn managed_path(data_dir: &Path, id: u64) -> PathBuf {
    data_dir.join("webhooks").join(format!("{id}.secret"))
}

/// A fresh secret.
pub fn generate() -> String {
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(SECRET_LEN)
        .map(char::from)
        .collect();
    format!("hskey-webhook-{random}")
}

/// Writes `secret` to `path` (mode 0600, whole or not at all), replacing a leftover.
pub fn write(path: &Path, secret: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    crate::keyfile::write_atomically(path, format!("{secret}\n").as_bytes())
}

/// Reads a secret file: its content, trimmed; refused when empty or too large.
pub fn read(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("secret file {shown}: {e}"))?;
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "secret file {shown} holds {} bytes; at most {MAX_SECRET_FILE_BYTES} are read",
            meta.len()
        ));
    }
    crate::keyfile::warn_if_readable_by_others(path);
    let text = std::fs::read_to_string(path).map_err(|e| format!("secret file {shown}: {e}"))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("secret file {shown} is empty"));
    }
    Ok(secret.to_string())
}

/// Removes a managed endpoint's secret (after its deletion is recorded).
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a webhook secret");
        }
    }
}
