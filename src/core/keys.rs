//! Public keys a Tailscale client presents, with the text forms the client and headscale use
//! (`mkey:`, `nodekey:`, `discokey:` followed by 64 hex digits). Binary in events, text in
//! JSON, so the readable twin of the log shows the same strings an admin sees.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Why a key's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("expected prefix {expected:?}")]
    WrongPrefix { expected: &'static str },
    #[error("expected 64 hex digits after the prefix")]
    BadHex,
}

macro_rules! public_key {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// Parses the prefixed form; with `allow_bare`, 64 hex digits alone are accepted too.
            pub fn parse(text: &str, allow_bare: bool) -> Result<Self, KeyParseError> {
                let text = text.trim();
                let hex_part = match text.strip_prefix($prefix) {
                    Some(rest) => rest,
                    None if allow_bare => text,
                    None => return Err(KeyParseError::WrongPrefix { expected: $prefix }),
                };
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| KeyParseError::BadHex)?;
                Ok($name(bytes))
            }

            /// The short form headscale prints in tables: prefix and the first 8 hex digits.
            pub fn short(&self) -> String {
                format!("{}{}", $prefix, &hex::encode(&self.0[..4]))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    self.0.serialize(serializer)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    let text = String::deserialize(deserializer)?;
                    $name::parse(&text, false).map_err(serde::de::Error::custom)
                } else {
                    <[u8; 32]>::deserialize(deserializer).map($name)
                }
            }
        }
    };
}

public_key!(
    /// Identifies the machine (device) for its whole life; the Noise static key.
    MachineKey,
    "mkey:"
);
public_key!(
    /// Identifies the node's WireGuard identity; rotated by the client, expires.
    NodeKey,
    "nodekey:"
);
public_key!(
    /// The discovery key used for NAT traversal; volatile, never stored in events.
    DiscoKey,
    "discokey:"
);

/// A SHA-256 digest. Used for the hash chain and for hashed secrets.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(&text, &mut bytes).map_err(serde::de::Error::custom)?;
            Ok(Digest(bytes))
        } else {
            <[u8; 32]>::deserialize(deserializer).map(Digest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms() {
        let key = NodeKey([0xab; 32]);
        let text = key.to_string();
        assert!(text.starts_with("nodekey:abab"));
        assert_eq!(NodeKey::parse(&text, false), Ok(key));
        assert_eq!(NodeKey::parse(&text["nodekey:".len()..], true), Ok(key));
        assert!(NodeKey::parse(&text["nodekey:".len()..], false).is_err());
        assert_eq!(
            MachineKey::parse("mkey:zz", false),
            Err(KeyParseError::BadHex)
        );
        assert_eq!(key.short(), "nodekey:abababab");
    }

    #[test]
    fn json_is_text_and_bincode_is_bytes() {
        let key = MachineKey([1; 32]);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{key}\""));
        assert_eq!(serde_json::from_str::<MachineKey>(&json).unwrap(), key);
        let bytes = bincode::serde::encode_to_vec(key, bincode::config::standard()).unwrap();
        assert_eq!(bytes.len(), 32);
    }
}
