//! Sealed-sender key material on disk: `sealpost certificates generate --out DIR` writes it,
//! `SEALPOST_CERTIFICATE_DIR` loads it, and without a folder the server makes ephemeral keys
//! at start. Files hold base64, one line each: `trust_root.pub` (33-byte public key),
//! `trust_root.key` and `server.key` (32-byte private keys), `server.cert` (the serialized
//! `ServerCertificate`). Private keys are never logged.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use prost::Message as _;

use crate::domain::certificates::{ServerSigner, generate, public_of, verify_server_certificate};
use crate::domain::encoding::{decode_base64, encode_base64};
use crate::domain::keys::EcPublicKey;
use crate::domain::xeddsa::PrivateKey;
use crate::proto::sealed_sender::ServerCertificate;

pub const TRUST_ROOT_PUB: &str = "trust_root.pub";
pub const TRUST_ROOT_KEY: &str = "trust_root.key";
pub const SERVER_CERT: &str = "server.cert";
pub const SERVER_KEY: &str = "server.key";

/// Writes a new trust root and server certificate into `dir` (created if needed); refuses to
/// overwrite any of the four files. Returns the trust root's public key.
pub fn generate_into(dir: &Path, key_id: u32) -> anyhow::Result<EcPublicKey> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in [TRUST_ROOT_PUB, TRUST_ROOT_KEY, SERVER_CERT, SERVER_KEY] {
        let path = dir.join(name);
        anyhow::ensure!(
            !path.exists(),
            "{} exists already: refusing to overwrite certificates",
            path.display()
        );
    }
    let (trust_root, signer) = generate(key_id);
    let trust_root_public = public_of(&trust_root);
    let files = [
        (
            TRUST_ROOT_PUB,
            encode_base64(trust_root_public.as_bytes()),
            false,
        ),
        (TRUST_ROOT_KEY, encode_base64(&trust_root.to_bytes()), true),
        (
            SERVER_CERT,
            encode_base64(&signer.certificate.encode_to_vec()),
            false,
        ),
        (SERVER_KEY, encode_base64(&signer.key.to_bytes()), true),
    ];
    for (name, contents, secret) in files {
        let path = dir.join(name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = secret;
        let mut file = options
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        writeln!(file, "{contents}").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(trust_root_public)
}

fn read_base64(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    decode_base64(name, &text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Loads the server certificate and key from `dir`, checking that the key is the
/// certificate's and, when `trust_root.pub` is there, that the trust root signed it.
pub fn load(dir: &Path) -> anyhow::Result<ServerSigner> {
    let certificate = ServerCertificate::decode(Bytes::from(read_base64(dir, SERVER_CERT)?))
        .with_context(|| format!("{SERVER_CERT} is not a ServerCertificate"))?;
    let key_bytes: [u8; 32] = read_base64(dir, SERVER_KEY)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("{SERVER_KEY} must hold 32 bytes"))?;
    let key = PrivateKey::from_bytes(key_bytes);
    let inner = crate::proto::sealed_sender::server_certificate::Certificate::decode(
        certificate.certificate.clone().unwrap_or_default(),
    )
    .with_context(|| format!("{SERVER_CERT} holds no certificate"))?;
    anyhow::ensure!(
        inner.key.as_deref() == Some(public_of(&key).as_bytes()),
        "{SERVER_KEY} is not the key of {SERVER_CERT}"
    );
    if dir.join(TRUST_ROOT_PUB).exists() {
        let root = EcPublicKey::parse(TRUST_ROOT_PUB, &read_base64(dir, TRUST_ROOT_PUB)?)?;
        verify_server_certificate(&root, &certificate)
            .map_err(|e| anyhow::anyhow!("{SERVER_CERT}: {e}"))?;
    }
    Ok(ServerSigner {
        key_id: inner.id.unwrap_or(0),
        certificate,
        key,
    })
}

/// Keys for a server started without a certificate folder; logs the trust root's public key
/// so that test clients can trust it.
pub fn ephemeral() -> ServerSigner {
    let (trust_root, signer) = generate(1);
    tracing::warn!(
        trust_root = %encode_base64(public_of(&trust_root).as_bytes()),
        "no SEALPOST_CERTIFICATE_DIR: sender certificates are signed by an ephemeral trust \
         root that changes at every start"
    );
    signer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_load_back_and_are_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("sealpost-certs-{}", uuid::Uuid::new_v4()));
        let root = generate_into(&dir.join("nested"), 42).unwrap();
        let signer = load(&dir.join("nested")).unwrap();
        assert_eq!(signer.key_id, 42);
        let (id, _) = verify_server_certificate(&root, &signer.certificate).unwrap();
        assert_eq!(id, 42);
        let err = generate_into(&dir.join("nested"), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("nested").join(SERVER_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("sealpost-certs-{}", uuid::Uuid::new_v4()));
        generate_into(&dir, 1).unwrap();
        std::fs::write(
            dir.join(SERVER_KEY),
            encode_base64(&PrivateKey::generate().to_bytes()),
        )
        .unwrap();
        let err = load(&dir).err().unwrap().to_string();
        assert!(err.contains("is not the key of"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
