//! Signed configurations: an operator signs a graft file with an ed25519
//! key (`graft-agent sign`, `put --key`, `rollout start --key`), the
//! signature goes beside it in etcd (`P/config.sig`, `P/rollout.sig`),
//! and an agent run with `--verify-key` applies only a configuration
//! whose signature one of its keys verifies. Whoever can write to etcd
//! but holds no operator key can then not make a server serve anything
//! no operator signed.
//!
//! What is signed is the configuration's text and the fleet's prefix (a
//! file signed for `/graft/staging` is not one for `/graft/prod`), after
//! a fixed tag; the signature is kept as 128 hex digits. Key files are
//! PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes them.
use std::io::Write;
use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// What precedes the prefix and the text in what is signed.
const TAG: &[u8] = b"graft-agent signed configuration v1\n";

/// The bytes signed for `text` under the fleet's `prefix`.
fn message(prefix: &str, text: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TAG.len() + prefix.len() + 1 + text.len());
    m.extend_from_slice(TAG);
    m.extend_from_slice(prefix.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(text);
    m
}

/// Signs `text` for the fleet under `prefix`: the value of its `.sig` key.
pub fn sign(key: &SigningKey, prefix: &str, text: &[u8]) -> String {
    hex(&key.sign(&message(prefix, text)).to_bytes())
}

/// Checks `signature` (the `.sig` key's value, `None` when there is
/// none) of `text` under `prefix` against every key held: Ok when one
/// verifies it, or why none does.
pub fn verify(
    keys: &[VerifyingKey],
    prefix: &str,
    text: &[u8],
    signature: Option<&[u8]>,
) -> Result<(), String> {
    let Some(signature) = signature else {
        return Err("it is not signed (no signature beside it)".into());
    };
    let bytes = std::str::from_utf8(signature)
        .ok()
        .and_then(|s| unhex(s.trim()))
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or("its signature is not 128 hex digits")?;
    let signature = Signature::from_bytes(&bytes);
    let message = message(prefix, text);
    if keys
        .iter()
        .any(|k| k.verify_strict(&message, &signature).is_ok())
    {
        return Ok(());
    }
    Err(format!(
        "its signature verifies with none of the {} operator keys this agent holds",
        keys.len()
    ))
}

/// A key's short name for the log: the first 16 hex digits of its bytes.
pub fn fingerprint(key: &VerifyingKey) -> String {
    hex(&key.to_bytes()[..8])
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| format!("{}: not an ed25519 private key in PEM: {e}", path.display()))
}

pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    VerifyingKey::from_public_key_pem(&pem)
        .map_err(|e| format!("{}: not an ed25519 public key in PEM: {e}", path.display()))
}

/// Makes a key pair: `private` (mode 0600, never over an existing file)
/// and `public`; returns the public key's fingerprint.
pub fn keygen(private: &Path, public: &Path) -> Result<String, String> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| e.to_string())?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| e.to_string())?;
    let create = |path: &Path, mode: u32, text: &[u8]| -> Result<(), String> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.write_all(text)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    create(private, 0o600, pem.as_bytes())?;
    create(public, 0o644, public_pem.as_bytes())?;
    Ok(fingerprint(&key.verifying_key()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn only_a_held_key_over_the_same_text_and_prefix_verifies() {
        let (a, b) = (key(1), key(2));
        let held = [b.verifying_key(), a.verifying_key()];
        let text = br#"{"zones":{}}"#;
        let sig = sign(&a, "/graft/prod", text);
        assert_eq!(sig.len(), 128);
        assert!(verify(&held, "/graft/prod", text, Some(sig.as_bytes())).is_ok());
        assert!(
            verify(
                &held,
                "/graft/prod",
                text,
                Some(format!("{sig}\n").as_bytes())
            )
            .is_ok(),
            "etcdctl's newline"
        );
        let refused = |keys: &[VerifyingKey], prefix: &str, text: &[u8], sig: Option<&[u8]>| {
            verify(keys, prefix, text, sig).unwrap_err()
        };
        assert!(refused(&held, "/graft/prod", text, None).contains("not signed"));
        assert!(
            refused(&held, "/graft/prod", b"{}", Some(sig.as_bytes())).contains("none of the 2")
        );
        assert!(refused(&held, "/graft/staging", text, Some(sig.as_bytes())).contains("none"));
        assert!(refused(
            &[b.verifying_key()],
            "/graft/prod",
            text,
            Some(sig.as_bytes())
        )
        .contains("none of the 1"));
        assert!(refused(&held, "/graft/prod", text, Some(b"zz")).contains("128 hex"));
        assert!(
            refused(&held, "/graft/prod", text, Some(&sig.as_bytes()[2..])).contains("128 hex")
        );
    }

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("graft-keygen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (private, public) = (dir.join("op.key"), dir.join("op.pub"));
        let fp = keygen(&private, &public).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let signing = load_signing_key(&private).unwrap();
        let verifying = load_verifying_key(&public).unwrap();
        assert_eq!(fingerprint(&verifying), fp);
        let sig = sign(&signing, "/p", b"x");
        assert!(verify(&[verifying], "/p", b"x", Some(sig.as_bytes())).is_ok());
        assert!(
            keygen(&private, &dir.join("other.pub")).is_err(),
            "never over a key"
        );
        assert!(load_verifying_key(&private).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
