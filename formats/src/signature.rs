//! Nix binary-cache signing keys: `name:base64(key)` files as `nix-store
//! --generate-binary-cache-key` writes them, and the ed25519 `Sig:` over a narinfo fingerprint.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// A key that is not `name:base64` of the right length, or not a valid ed25519 key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad signing key: {0}")]
pub struct KeyError(String);

/// Splits `name:base64` and decodes the key bytes, which must be `len` long.
fn decode_named(text: &str, len: usize, what: &str) -> Result<(String, Vec<u8>), KeyError> {
    let (name, encoded) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| KeyError(format!("{what} must look like 'name:base64'")))?;
    if name.is_empty() {
        return Err(KeyError(format!("{what} has an empty name")));
    }
    let bytes = BASE64
        .decode(encoded)
        .map_err(|e| KeyError(format!("{what} '{name}': {e}")))?;
    if bytes.len() != len {
        return Err(KeyError(format!(
            "{what} '{name}' has {} bytes, expected {len}",
            bytes.len()
        )));
    }
    Ok((name.to_string(), bytes))
}

/// A secret key: Nix stores the 32-byte seed followed by the 32-byte public key.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.name)
    }
}

impl SecretKey {
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        let (name, bytes) = decode_named(text, 64, "secret key")?;
        let mut keypair = [0u8; 64];
        keypair.copy_from_slice(&bytes);
        let key = SigningKey::from_keypair_bytes(&keypair).map_err(|_| {
            KeyError(format!(
                "secret key '{name}' does not match its public half"
            ))
        })?;
        Ok(SecretKey { name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The value of a `Sig:` line: `name:base64(signature of fingerprint)`.
    pub fn sign(&self, fingerprint: &str) -> String {
        let signature = self.key.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, BASE64.encode(signature.to_bytes()))
    }
}

/// A public key as in `trusted-public-keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let (name, bytes) = decode_named(text, 32, "public key")?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&bytes);
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| KeyError(format!("public key '{name}' is not a valid ed25519 point")))?;
        Ok(PublicKey { name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `sig` (a `Sig:` value) is this key's valid signature of `fingerprint`;
    /// signatures by other key names are simply not ours (false), as Nix treats them.
    pub fn verifies(&self, fingerprint: &str, sig: &str) -> bool {
        let Some((name, encoded)) = sig.split_once(':') else {
            return false;
        };
        let Ok(bytes) = BASE64.decode(encoded) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        name == self.name && self.key.verify(fingerprint.as_bytes(), &signature).is_ok()
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key pair from `nix-store --generate-binary-cache-key test-1 sk pk` (Nix 2.8).
    const SECRET: &str = "test-1:dAhpj/+6gPvG4AAoGDc5hMscklw2RV9HbW0enUGVFAvvYaxd+J1lbdtTVEoy5gYeytSX30/x7KU8sVHc5izJPA==";
    const PUBLIC: &str = "test-1:72GsXfidZW3bU1RKMuYGHsrUl99P8eylPLFR3OYsyTw=";

    #[test]
    fn secret_key_derives_the_public_key_nix_printed() {
        let secret = SecretKey::parse(SECRET).unwrap();
        assert_eq!(secret.public_key().to_string(), PUBLIC);
    }

    #[test]
    fn signatures_verify_only_for_the_signed_text_and_key() {
        let secret = SecretKey::parse(SECRET).unwrap();
        let public = PublicKey::parse(PUBLIC).unwrap();
        let sig = secret.sign("1;/nix/store/x;sha256:y;1;");
        assert!(sig.starts_with("test-1:"));
        assert!(public.verifies("1;/nix/store/x;sha256:y;1;", &sig));
        assert!(!public.verifies("1;/nix/store/x;sha256:y;2;", &sig));
        assert!(!public.verifies(
            "1;/nix/store/x;sha256:y;1;",
            &sig.replace("test-1", "other")
        ));
    }

    #[test]
    fn rejects_malformed_keys() {
        assert!(SecretKey::parse("no-colon").is_err());
        assert!(SecretKey::parse("n:AAAA").is_err());
        assert!(PublicKey::parse(":72GsXfidZW3bU1RKMuYGHsrUl99P8eylPLFR3OYsyTw=").is_err());
    }
}
