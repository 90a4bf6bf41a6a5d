//! The certificate cache directory (`tls_letsencrypt_cache_dir`), in the layout of
//! golang.org/x/crypto/acme/autocert's `DirCache`, which headscale uses: so a headscale user's
//! cache is picked up (no new order on the switch) and ours works if they go back.
//! - `<hostname>`: the private key PEM, then the certificate chain PEM, leaf first (autocert
//!   names an RSA pair `<hostname>+rsa`; we read it, and write ECDSA P-256 keys as PKCS#8).
//! - `acme_account+key`: the ACME account key PEM (P-256; autocert writes SEC1, we PKCS#8).
//!
//! The directory is 0700 and every file 0600, written whole or not at all (temp file, fsync,
//! rename). Parsing (`parse_certificate`) is pure and unit-tested.

use super::schedule::Validity;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// autocert's name for the account key.
pub const ACCOUNT_KEY_FILE: &str = "acme_account+key";
/// A cache file larger than this is not a certificate chain or a key (a chain is ~5 KiB).
pub const MAX_CACHE_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("ACME cache {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("ACME cache {path}: {message}")]
    Invalid { path: String, message: String },
}

/// A certificate ready to serve, with its validity.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub certified: Arc<CertifiedKey>,
    pub validity: Validity,
}

/// The cache directory, created (0700) and checked writable when opened.
#[derive(Debug, Clone)]
pub struct CacheDir {
    dir: PathBuf,
}

impl CacheDir {
    /// Creates the directory if needed and proves it writable, so a cache that cannot keep
    /// what we order stops the start instead of costing an order on every start.
    pub fn open(dir: &Path) -> Result<CacheDir, CacheError> {
        let io = |source| CacheError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "the ACME cache holds private keys but others can access it; chmod 700 it");
        }
        let cache = CacheDir {
            dir: dir.to_path_buf(),
        };
        let probe = dir.join(format!(".write-probe-{:016x}", rand::random::<u64>()));
        std::fs::write(&probe, b"").map_err(io)?;
        std::fs::remove_file(&probe).map_err(io)?;
        Ok(cache)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The cached certificate for `hostname`, if one is there and parses. A damaged file is
    /// an error (the caller logs it and orders a new one).
    pub fn read_certificate(&self, hostname: &str) -> Result<Option<Certificate>, CacheError> {
        for name in [hostname.to_string(), format!("{hostname}+rsa")] {
            let path = self.dir.join(&name);
            let Some(bytes) = read_limited(&path)? else {
                continue;
            };
            crate::keyfile::warn_if_readable_by_others(&path);
            return parse_certificate(&bytes, hostname)
                .map(Some)
                .map_err(|message| CacheError::Invalid {
                    path: path.display().to_string(),
                    message,
                });
        }
        Ok(None)
    }

    /// Stores a new certificate for `hostname` (key PEM, then the chain PEM).
    pub fn write_certificate(
        &self,
        hostname: &str,
        key_pem: &str,
        chain_pem: &str,
    ) -> Result<(), CacheError> {
        let mut contents = String::with_capacity(key_pem.len() + chain_pem.len() + 1);
        contents.push_str(key_pem.trim_end());
        contents.push('\n');
        contents.push_str(chain_pem.trim_start());
        self.replace(hostname, contents.as_bytes())
    }

    /// The account key, if cached: PKCS#8 as we write it, or autocert's SEC1 `EC PRIVATE KEY`
    /// (converted to PKCS#8 for the ACME client).
    pub fn read_account_key(&self) -> Result<Option<PrivatePkcs8KeyDer<'static>>, CacheError> {
        let path = self.dir.join(ACCOUNT_KEY_FILE);
        let Some(bytes) = read_limited(&path)? else {
            return Ok(None);
        };
        crate::keyfile::warn_if_readable_by_others(&path);
        parse_account_key(&bytes)
            .map(Some)
            .map_err(|message| CacheError::Invalid {
                path: path.display().to_string(),
                message,
            })
    }

    pub fn write_account_key(&self, key: &PrivatePkcs8KeyDer<'_>) -> Result<(), CacheError> {
        let pem = pem_block("PRIVATE KEY", key.secret_pkcs8_der());
        self.replace(ACCOUNT_KEY_FILE, pem.as_bytes())
    }

    /// Writes `name` whole or not at all, mode 0600.
    fn replace(&self, name: &str, contents: &[u8]) -> Result<(), CacheError> {
        let path = self.dir.join(name);
        let io = |source| CacheError::Io {
            path: path.display().to_string(),
            source,
        };
        let temporary = self
            .dir
            .join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(contents)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(io)
    }
}

fn read_limited(path: &Path) -> Result<Option<Vec<u8>>, CacheError> {
    let io = |source| CacheError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::new();
    use std::io::Read as _;
    file.take(MAX_CACHE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_CACHE_FILE_BYTES {
        return Err(CacheError::Invalid {
            path: path.display().to_string(),
            message: format!("larger than {MAX_CACHE_FILE_BYTES} bytes"),
        });
    }
    Ok(Some(bytes))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A cache file's private key and chain, checked: the key matches the leaf and the leaf
/// names `hostname`. Expiry is not judged here (the caller compares with its clock).
pub fn parse_certificate(pem: &[u8], hostname: &str) -> Result<Certificate, String> {
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate PEM: {e}"))?;
    let leaf = chain.first().ok_or("no CERTIFICATE block")?;
    let (validity, names) = leaf_facts(leaf)?;
    if !names.iter().any(|name| name.eq_ignore_ascii_case(hostname)) {
        return Err(format!(
            "the certificate is for {names:?}, not {hostname:?}"
        ));
    }
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok(Certificate {
        certified: Arc::new(certified),
        validity,
    })
}

/// The leaf certificate's validity and DNS names.
pub fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Validity, Vec<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let time = |t: i64| {
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(u64::try_from(t).unwrap_or(0)))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    let validity = Validity {
        not_before: time(cert.validity().not_before.timestamp()),
        not_after: time(cert.validity().not_after.timestamp()),
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    Ok((validity, names))
}

/// The account key as PKCS#8 DER, from a PKCS#8 `PRIVATE KEY` or a SEC1 `EC PRIVATE KEY` PEM.
pub fn parse_account_key(pem: &[u8]) -> Result<PrivatePkcs8KeyDer<'static>, String> {
    match PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key: {e}"))? {
        PrivateKeyDer::Pkcs8(key) => Ok(key.clone_key()),
        PrivateKeyDer::Sec1(key) => sec1_p256_to_pkcs8(key.secret_sec1_der()),
        _ => Err("not an ECDSA P-256 key (expected PRIVATE KEY or EC PRIVATE KEY)".into()),
    }
}

/// Wraps a SEC1 P-256 key (autocert's account key) into PKCS#8, the form the ACME client
/// loads, with the `pkcs8` crate.
fn sec1_p256_to_pkcs8(sec1: &[u8]) -> Result<PrivatePkcs8KeyDer<'static>, String> {
    use pkcs8::der::Encode as _;
    const EC_PUBLIC_KEY: pkcs8::ObjectIdentifier =
        pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const PRIME256V1: pkcs8::ObjectIdentifier =
        pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    let curve = pkcs8::der::asn1::AnyRef::from(&PRIME256V1);
    let info = pkcs8::PrivateKeyInfo {
        algorithm: pkcs8::AlgorithmIdentifierRef {
            oid: EC_PUBLIC_KEY,
            parameters: Some(curve),
        },
        private_key: sec1,
        public_key: None,
    };
    let der = info
        .to_der()
        .map_err(|e| format!("cannot convert the EC key: {e}"))?;
    Ok(PrivatePkcs8KeyDer::from(der))
}

/// One PEM block (64-column base64), as autocert and openssl write them.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names` and its PKCS#8 key PEM.
    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        (certified.signing_key.serialize_pem(), certified.cert.pem())
    }

    #[test]
    fn a_cache_file_is_key_then_chain_and_must_name_the_host() {
        let (key, cert) = self_signed(&["hs.example.com"]);
        let file = format!("{key}{cert}");
        let parsed = parse_certificate(file.as_bytes(), "HS.example.com").unwrap();
        assert!(parsed.validity.not_before < parsed.validity.not_after);
        let error = parse_certificate(file.as_bytes(), "other.example.com").unwrap_err();
        assert!(error.contains("not \"other.example.com\""), "{error}");
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let (_, cert) = self_signed(&["hs.example.com"]);
        let (other_key, _) = self_signed(&["hs.example.com"]);
        let error = parse_certificate(format!("{other_key}{cert}").as_bytes(), "hs.example.com")
            .unwrap_err();
        assert!(error.contains("does not match"), "{error}");
        let error = parse_certificate(cert.as_bytes(), "hs.example.com").unwrap_err();
        assert!(error.contains("no private key"), "{error}");
    }

    #[test]
    fn files_are_private_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(&dir.path().join("cache")).unwrap();
        let mode = std::fs::metadata(cache.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(cache.read_certificate("hs.example.com").unwrap().is_none());
        assert!(cache.read_account_key().unwrap().is_none());

        let (key, cert) = self_signed(&["hs.example.com"]);
        cache
            .write_certificate("hs.example.com", &key, &cert)
            .unwrap();
        let read = cache.read_certificate("hs.example.com").unwrap().unwrap();
        assert_eq!(read.certified.cert.len(), 1);

        let account = rcgen::KeyPair::generate().unwrap();
        let der = PrivatePkcs8KeyDer::from(account.serialize_der());
        cache.write_account_key(&der).unwrap();
        assert_eq!(
            cache
                .read_account_key()
                .unwrap()
                .unwrap()
                .secret_pkcs8_der(),
            der.secret_pkcs8_der()
        );
        for name in ["hs.example.com", ACCOUNT_KEY_FILE] {
            let mode = std::fs::metadata(cache.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        // Nothing but the two files is left behind.
        let mut names: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec![ACCOUNT_KEY_FILE, "hs.example.com"]);
    }

    #[test]
    fn an_autocert_sec1_account_key_is_converted_to_pkcs8() {
        // The P-256 key autocert would write, as SEC1 "EC PRIVATE KEY" (with the public key).
        let key = rcgen::KeyPair::generate().unwrap();
        let pkcs8 = key.serialize_der();
        let sec1 = sec1_from_pkcs8(&pkcs8);
        let pem = pem_block("EC PRIVATE KEY", &sec1);
        let converted = parse_account_key(pem.as_bytes()).unwrap();
        // ring accepts it as the same P-256 key.
        let rng = ring::rand::SystemRandom::new();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            converted.secret_pkcs8_der(),
            &rng,
        )
        .unwrap();
        use ring::signature::KeyPair as _;
        assert_eq!(pair.public_key().as_ref(), key.public_key_raw());
    }

    #[test]
    fn an_autocert_certificate_file_with_a_sec1_key_is_served() {
        // autocert writes `<host>` as an "EC PRIVATE KEY" (SEC1) block, then the chain.
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["hs.example.com".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let sec1 = sec1_from_pkcs8(&key.serialize_der());
        let file = format!("{}{}", pem_block("EC PRIVATE KEY", &sec1), cert.pem());
        let parsed = parse_certificate(file.as_bytes(), "hs.example.com").unwrap();
        assert_eq!(parsed.certified.cert[0].as_ref(), cert.der().as_ref());

        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(dir.path()).unwrap();
        // autocert's name for an RSA pair is read too when the ECDSA one is absent.
        std::fs::write(dir.path().join("hs.example.com+rsa"), &file).unwrap();
        assert!(cache.read_certificate("hs.example.com").unwrap().is_some());
    }

    /// The SEC1 `ECPrivateKey` inside a PKCS#8 key (what autocert's files hold).
    fn sec1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
        use pkcs8::der::Decode as _;
        pkcs8::PrivateKeyInfo::from_der(pkcs8)
            .unwrap()
            .private_key
            .to_vec()
    }

    #[test]
    fn oversized_or_damaged_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("hs.example.com"), b"garbage").unwrap();
        assert!(cache.read_certificate("hs.example.com").is_err());
        std::fs::write(
            dir.path().join(ACCOUNT_KEY_FILE),
            vec![b'a'; MAX_CACHE_FILE_BYTES as usize + 1],
        )
        .unwrap();
        let error = cache.read_account_key().unwrap_err().to_string();
        assert!(error.contains("larger than"), "{error}");
    }
}
