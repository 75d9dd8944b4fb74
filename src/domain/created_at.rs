//! A device's creation time sealed to its account's identity key (PROTOCOL.md 16.2,
//! `createdAtCiphertext`): the bytes libsignal's `PublicKey::seal` makes, so that only the
//! account's own devices can read when a device was linked. HPKE (RFC 9180) base mode,
//! DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM through the `hpke` crate; the
//! framing is libsignal's (`rust/crypto/src/hpke.rs`): one suite byte, the 32-byte
//! encapsulated key, then the ciphertext with its tag. No IO; the randomness is the OS's.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};

use super::ids::{DeviceId, RegistrationId};
use super::keys::IdentityKey;

/// libsignal's type byte for Base mode, X25519 + HKDF-SHA256 + AES-256-GCM.
pub const SUITE_BASE_X25519_HKDF_SHA256_AES256GCM: u8 = 0x01;
/// HPKE `info` of the sealed creation time (Signal's `EncryptDeviceCreationTimestampUtil`).
pub const INFO: &[u8] = b"deviceCreatedAt";
/// 1 suite byte + 32 encapsulated key + 8 plaintext + 16 tag.
pub const SEALED_LEN: usize = 1 + 32 + 8 + 16;

/// The associated data: the device id (1 byte) then the registration id (big-endian u32).
pub fn associated_data(device: DeviceId, registration_id: RegistrationId) -> [u8; 5] {
    let mut aad = [0u8; 5];
    aad[0] = device.get();
    aad[1..].copy_from_slice(&u32::from(registration_id.get()).to_be_bytes());
    aad
}

/// Seals `created_ms` (big-endian i64) to `identity` for `device` with `registration_id`.
pub fn seal(
    identity: &IdentityKey,
    device: DeviceId,
    registration_id: RegistrationId,
    created_ms: i64,
) -> Vec<u8> {
    // An identity key is 0x05 then 32 Montgomery bytes; X25519 takes every 32-byte string.
    let recipient = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&identity.as_bytes()[1..])
        .expect("every 32-byte string is an X25519 public key");
    let aad = associated_data(device, registration_id);
    let (encapped, ciphertext) =
        hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256, _>(
            &OpModeS::Base,
            &recipient,
            INFO,
            &created_ms.to_be_bytes(),
            &aad,
            &mut rand::rngs::OsRng,
        )
        .expect("sealing to an X25519 key in base mode cannot fail");
    let mut sealed = Vec::with_capacity(SEALED_LEN);
    sealed.push(SUITE_BASE_X25519_HKDF_SHA256_AES256GCM);
    sealed.extend_from_slice(&encapped.to_bytes());
    sealed.extend_from_slice(&ciphertext);
    sealed
}

/// Why sealed bytes could not be opened.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a sealed creation time of a known suite")]
    Malformed,
    #[error("the key or the associated data do not match")]
    Rejected,
}

/// Opens what [`seal`] made with the identity private key (32 bytes, X25519): what a client
/// does; the server never holds the key. Used by tests and the typed client.
pub fn open(
    private_key: &[u8; 32],
    sealed: &[u8],
    device: DeviceId,
    registration_id: RegistrationId,
) -> Result<i64, OpenError> {
    if sealed.len() != SEALED_LEN || sealed[0] != SUITE_BASE_X25519_HKDF_SHA256_AES256GCM {
        return Err(OpenError::Malformed);
    }
    let key = <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(private_key)
        .map_err(|_| OpenError::Malformed)?;
    let encapped = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&sealed[1..33])
        .map_err(|_| OpenError::Malformed)?;
    let plaintext = hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &key,
        &encapped,
        INFO,
        &sealed[33..],
        &associated_data(device, registration_id),
    )
    .map_err(|_| OpenError::Rejected)?;
    let bytes: [u8; 8] = plaintext.try_into().map_err(|_| OpenError::Malformed)?;
    Ok(i64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::xeddsa::PrivateKey;

    fn identity(private: &PrivateKey) -> IdentityKey {
        let mut bytes = vec![0x05];
        bytes.extend_from_slice(&private.public_key());
        IdentityKey::parse("identity", &bytes).unwrap()
    }

    fn ids() -> (DeviceId, RegistrationId) {
        (
            DeviceId::new(3).unwrap(),
            RegistrationId::new(4242).unwrap(),
        )
    }

    #[test]
    fn the_identity_private_key_opens_the_creation_time() {
        let private = PrivateKey::generate();
        let (device, registration) = ids();
        let sealed = seal(&identity(&private), device, registration, 1_733_000_123_456);
        assert_eq!(sealed.len(), SEALED_LEN);
        assert_eq!(sealed[0], 0x01);
        assert_eq!(
            open(&private.to_bytes(), &sealed, device, registration),
            Ok(1_733_000_123_456)
        );
    }

    #[test]
    fn a_wrong_key_or_associated_data_is_rejected() {
        let private = PrivateKey::generate();
        let (device, registration) = ids();
        let sealed = seal(&identity(&private), device, registration, 7);
        let other = PrivateKey::generate();
        assert_eq!(
            open(&other.to_bytes(), &sealed, device, registration),
            Err(OpenError::Rejected)
        );
        assert_eq!(
            open(
                &private.to_bytes(),
                &sealed,
                DeviceId::new(4).unwrap(),
                registration
            ),
            Err(OpenError::Rejected)
        );
        assert_eq!(
            open(
                &private.to_bytes(),
                &sealed,
                device,
                RegistrationId::new(4243).unwrap()
            ),
            Err(OpenError::Rejected)
        );
        let mut wrong_suite = sealed.clone();
        wrong_suite[0] = 0x02;
        assert_eq!(
            open(&private.to_bytes(), &wrong_suite, device, registration),
            Err(OpenError::Malformed)
        );
    }

    #[test]
    fn each_seal_is_fresh() {
        let private = PrivateKey::generate();
        let (device, registration) = ids();
        let key = identity(&private);
        assert_ne!(
            seal(&key, device, registration, 1),
            seal(&key, device, registration, 1)
        );
    }

    #[test]
    fn the_associated_data_is_the_device_then_the_big_endian_registration_id() {
        let (device, registration) = ids();
        assert_eq!(associated_data(device, registration), [3, 0, 0, 0x10, 0x92]);
    }
}
