//! Sealed-sender certificates: the trust root signs the server certificate, the server key
//! signs each sender certificate (XEdDSA over the serialized inner certificate, libsignal's
//! convention). Pure: building, signing and checking; reading and writing files is
//! `crate::certificates`'s.

use bytes::Bytes;
use prost::Message as _;

use super::DomainError;
use super::ids::{Aci, DeviceId};
use super::keys::{EC_KEY_TYPE, EcPublicKey, IdentityKey, Signature};
use super::xeddsa::PrivateKey;
use crate::proto::sealed_sender::{
    SenderCertificate, ServerCertificate, sender_certificate, server_certificate,
};

/// The serialized (type byte + 32) public key of a private key.
pub fn public_of(key: &PrivateKey) -> EcPublicKey {
    let mut bytes = vec![EC_KEY_TYPE];
    bytes.extend_from_slice(&key.public_key());
    EcPublicKey::parse("public key", &bytes).expect("a generated key is well formed")
}

/// What the server signs sender certificates with.
#[derive(Clone)]
pub struct ServerSigner {
    /// The serialized `ServerCertificate`, embedded in every sender certificate.
    pub certificate: ServerCertificate,
    pub key: PrivateKey,
    pub key_id: u32,
}

/// A new trust root and a server certificate signed by it.
pub fn generate(key_id: u32) -> (PrivateKey, ServerSigner) {
    let trust_root = PrivateKey::generate();
    let server_key = PrivateKey::generate();
    let certificate = sign_server_certificate(&trust_root, key_id, &public_of(&server_key));
    (
        trust_root,
        ServerSigner {
            certificate,
            key: server_key,
            key_id,
        },
    )
}

pub fn sign_server_certificate(
    trust_root: &PrivateKey,
    key_id: u32,
    server_public: &EcPublicKey,
) -> ServerCertificate {
    let inner = server_certificate::Certificate {
        id: Some(key_id),
        key: Some(Bytes::copy_from_slice(server_public.as_bytes())),
    }
    .encode_to_vec();
    let signature = trust_root.sign(&inner);
    ServerCertificate {
        certificate: Some(Bytes::from(inner)),
        signature: Some(Bytes::copy_from_slice(&signature)),
    }
}

/// Checks a server certificate against the trust root; returns its key id and key.
pub fn verify_server_certificate(
    trust_root: &EcPublicKey,
    certificate: &ServerCertificate,
) -> Result<(u32, EcPublicKey), DomainError> {
    let (Some(inner), Some(signature)) = (&certificate.certificate, &certificate.signature) else {
        return Err(DomainError::invalid("the server certificate is incomplete"));
    };
    let signature = Signature::parse("server certificate signature", signature)?;
    if !trust_root.verify(inner, &signature) {
        return Err(DomainError::BadSignature(
            "the server certificate is not signed by the trust root".into(),
        ));
    }
    let inner = server_certificate::Certificate::decode(inner.clone())
        .map_err(|_| DomainError::invalid("the server certificate does not parse"))?;
    let key = EcPublicKey::parse(
        "server certificate key",
        inner.key.as_deref().unwrap_or_default(),
    )?;
    Ok((inner.id.unwrap_or(0), key))
}

impl ServerSigner {
    /// A sender certificate for `aci.device`, expiring at `expires_ms`.
    pub fn sender_certificate(
        &self,
        aci: Aci,
        device: DeviceId,
        identity_key: &IdentityKey,
        expires_ms: u64,
    ) -> SenderCertificate {
        let inner = sender_certificate::Certificate {
            sender_e164: None,
            sender_device: Some(u32::from(device.get())),
            expires: Some(expires_ms),
            identity_key: Some(Bytes::copy_from_slice(identity_key.as_bytes())),
            signer_certificate: Some(self.certificate.clone()),
            sender_uuid: Some(Bytes::copy_from_slice(aci.as_bytes())),
        }
        .encode_to_vec();
        let signature = self.key.sign(&inner);
        SenderCertificate {
            certificate: Some(Bytes::from(inner)),
            signature: Some(Bytes::copy_from_slice(&signature)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_certificate_verifies_along_its_chain() {
        let (trust_root, signer) = generate(7);
        let identity = public_of(&PrivateKey::generate());
        let aci = Aci::random();
        let certificate =
            signer.sender_certificate(aci, DeviceId::new(2).unwrap(), &identity, 1234);

        let inner =
            sender_certificate::Certificate::decode(certificate.certificate.clone().unwrap())
                .unwrap();
        let server = inner.signer_certificate.clone().unwrap();
        let (id, server_key) = verify_server_certificate(&public_of(&trust_root), &server).unwrap();
        assert_eq!(id, 7);
        let signature = Signature::parse("s", certificate.signature.as_ref().unwrap()).unwrap();
        assert!(server_key.verify(certificate.certificate.as_ref().unwrap(), &signature));
        assert_eq!(inner.sender_uuid.as_deref(), Some(&aci.as_bytes()[..]));
        assert_eq!(inner.sender_device, Some(2));
        assert_eq!(inner.expires, Some(1234));
        assert_eq!(inner.identity_key.as_deref(), Some(identity.as_bytes()));
        assert_eq!(inner.sender_e164, None);
    }

    #[test]
    fn another_trust_root_does_not_verify_the_server_certificate() {
        let (_, signer) = generate(1);
        let stranger = public_of(&PrivateKey::generate());
        assert!(matches!(
            verify_server_certificate(&stranger, &signer.certificate),
            Err(DomainError::BadSignature(_))
        ));
    }
}
