//! Public keys and signed prekeys as the wire carries them: type byte, length and key-id
//! range checked at parse time; signatures checked against the identity key.

use super::DomainError;
use super::xeddsa;

/// Curve25519 public key, serialized: `0x05` then 32 bytes.
pub const EC_KEY_TYPE: u8 = 0x05;
pub const EC_KEY_LENGTH: usize = 33;
/// Kyber1024 public key, serialized: `0x08` then 1568 bytes.
pub const KEM_KEY_TYPE: u8 = 0x08;
pub const KEM_KEY_LENGTH: usize = 1569;
/// Key ids are 0..2^31-1 (they are Java ints on the clients).
pub const MAX_KEY_ID: u32 = i32::MAX as u32;

/// A serialized Curve25519 public key (type byte included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcPublicKey([u8; EC_KEY_LENGTH]);

impl EcPublicKey {
    pub fn parse(field: &str, bytes: &[u8]) -> Result<Self, DomainError> {
        if bytes.len() != EC_KEY_LENGTH {
            return Err(DomainError::invalid(format!(
                "{field} must be {EC_KEY_LENGTH} bytes (0x05 then 32), got {}",
                bytes.len()
            )));
        }
        if bytes[0] != EC_KEY_TYPE {
            return Err(DomainError::invalid(format!(
                "{field} has key type 0x{:02x}; expected 0x05 (Curve25519)",
                bytes[0]
            )));
        }
        let mut key = [0u8; EC_KEY_LENGTH];
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `signature` is this key's XEdDSA signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let mut montgomery = [0u8; 32];
        montgomery.copy_from_slice(&self.0[1..]);
        xeddsa::verify(&montgomery, message, &signature.0)
    }
}

/// An identity key is a Curve25519 public key.
pub type IdentityKey = EcPublicKey;

/// A serialized Kyber1024 public key (type byte included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KemPublicKey(Vec<u8>);

impl KemPublicKey {
    pub fn parse(field: &str, bytes: Vec<u8>) -> Result<Self, DomainError> {
        if bytes.len() != KEM_KEY_LENGTH {
            return Err(DomainError::invalid(format!(
                "{field} must be {KEM_KEY_LENGTH} bytes (0x08 then 1568), got {}",
                bytes.len()
            )));
        }
        if bytes[0] != KEM_KEY_TYPE {
            return Err(DomainError::invalid(format!(
                "{field} has key type 0x{:02x}; expected 0x08 (Kyber1024)",
                bytes[0]
            )));
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A 64-byte XEdDSA signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    pub fn parse(field: &str, bytes: &[u8]) -> Result<Self, DomainError> {
        let sig: [u8; 64] = bytes.try_into().map_err(|_| {
            DomainError::invalid(format!("{field} must be 64 bytes, got {}", bytes.len()))
        })?;
        Ok(Self(sig))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

pub fn parse_key_id(field: &str, id: i64) -> Result<u32, DomainError> {
    if (0..=i64::from(MAX_KEY_ID)).contains(&id) {
        Ok(id as u32)
    } else {
        Err(DomainError::invalid(format!(
            "{field} {id} is out of range (0..=2147483647)"
        )))
    }
}

/// A key signed by the account's identity key: the signed EC prekey or a Kyber key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPreKey<K> {
    pub key_id: u32,
    pub public_key: K,
    pub signature: Signature,
}

pub type SignedEcPreKey = SignedPreKey<EcPublicKey>;
pub type KemSignedPreKey = SignedPreKey<KemPublicKey>;

/// An EC one-time prekey (unsigned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKey {
    pub key_id: u32,
    pub public_key: EcPublicKey,
}

/// At most this many keys in one uploaded list.
pub const MAX_KEYS_PER_LIST: usize = 100;

/// What `PUT /v2/keys` asks to store; `None` keeps what is stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyUpload {
    /// Replaces every stored EC one-time key when given (never empty).
    pub pre_keys: Option<Vec<PreKey>>,
    pub signed_pre_key: Option<SignedEcPreKey>,
    /// Replaces every stored Kyber one-time key when given (never empty).
    pub pq_pre_keys: Option<Vec<KemSignedPreKey>>,
    pub pq_last_resort_pre_key: Option<KemSignedPreKey>,
}

/// Checks the two signed keys every new device brings (registration, linking) against the
/// account's identity key.
pub fn verify_device_keys(
    identity: &IdentityKey,
    signed_pre_key: &SignedEcPreKey,
    pq_last_resort_pre_key: &KemSignedPreKey,
) -> Result<(), DomainError> {
    signed_pre_key.verify(identity, "aciSignedPreKey")?;
    pq_last_resort_pre_key.verify(identity, "aciPqLastResortPreKey")
}

impl KeyUpload {
    /// Checks every signed key against `identity`; nothing may be stored unless all verify.
    pub fn verify(&self, identity: &IdentityKey) -> Result<(), DomainError> {
        if let Some(key) = &self.signed_pre_key {
            key.verify(identity, "signedPreKey")?;
        }
        for (i, key) in self.pq_pre_keys.iter().flatten().enumerate() {
            key.verify(identity, &format!("pqPreKeys[{i}]"))?;
        }
        if let Some(key) = &self.pq_last_resort_pre_key {
            key.verify(identity, "pqLastResortPreKey")?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Checks a list's length and that its key ids are distinct.
pub fn check_key_list(
    field: &str,
    ids: impl ExactSizeIterator<Item = u32>,
) -> Result<(), DomainError> {
    if ids.len() > MAX_KEYS_PER_LIST {
        return Err(DomainError::invalid(format!(
            "{field} holds {} keys; at most {MAX_KEYS_PER_LIST} are allowed",
            ids.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(DomainError::invalid(format!("{field} repeats key id {id}")));
        }
    }
    Ok(())
}

/// Everything one fetch hands out for one device: its signed keys, and the one-time keys
/// the fetch consumed (`None` when that kind had run out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKeys {
    pub signed_pre_key: SignedEcPreKey,
    pub pre_key: Option<PreKey>,
    pub pq_pre_key: Option<KemSignedPreKey>,
    pub pq_last_resort_pre_key: Option<KemSignedPreKey>,
}

/// How many one-time keys a device has left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyCounts {
    pub ec: u32,
    pub kem: u32,
}

/// SHA-256 over identityKey || be64(signed.keyId) || signed.publicKey ||
/// be64(lastResort.keyId) || lastResort.publicKey: what `POST /v2/keys/check` compares.
pub fn key_digest(
    identity: &IdentityKey,
    signed: &SignedEcPreKey,
    last_resort: &KemSignedPreKey,
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(identity.as_bytes());
    hash.update(u64::from(signed.key_id).to_be_bytes());
    hash.update(signed.public_key.as_bytes());
    hash.update(u64::from(last_resort.key_id).to_be_bytes());
    hash.update(last_resort.public_key.as_bytes());
    hash.finalize().into()
}

/// A public key whose serialized bytes are what a signature covers.
pub trait SerializedKey {
    fn serialized(&self) -> &[u8];
}

impl SerializedKey for EcPublicKey {
    fn serialized(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl SerializedKey for KemPublicKey {
    fn serialized(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl<K: SerializedKey> SignedPreKey<K> {
    /// Checks the signature over the serialized public key; `field` names it in the error.
    pub fn verify(&self, identity: &IdentityKey, field: &str) -> Result<(), DomainError> {
        if identity.verify(self.public_key.serialized(), &self.signature) {
            Ok(())
        } else {
            Err(DomainError::BadSignature(format!(
                "{field}: signature does not verify against the identity key"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::xeddsa::PrivateKey;

    fn ec_key(private: &PrivateKey) -> EcPublicKey {
        let mut bytes = vec![EC_KEY_TYPE];
        bytes.extend_from_slice(&private.public_key());
        EcPublicKey::parse("key", &bytes).unwrap()
    }

    #[test]
    fn keys_of_the_wrong_type_or_length_are_refused() {
        assert!(EcPublicKey::parse("k", &[0x05; 32]).is_err());
        let mut wrong_type = [0u8; 33];
        wrong_type[0] = 0x08;
        let err = EcPublicKey::parse("k", &wrong_type).unwrap_err();
        assert!(err.to_string().contains("0x08"));
        assert!(KemPublicKey::parse("k", vec![0x08; 1568]).is_err());
        assert!(KemPublicKey::parse("k", vec![0x05; 1569]).is_err());
        assert!(KemPublicKey::parse("k", vec![0x08; 1569]).is_ok());
        assert!(Signature::parse("s", &[0; 63]).is_err());
    }

    #[test]
    fn key_lists_are_bounded_and_free_of_repeats() {
        assert!(check_key_list("preKeys", 0..100).is_ok());
        let err = check_key_list("preKeys", 0..101).unwrap_err();
        assert!(err.to_string().contains("at most 100"));
        let err = check_key_list("preKeys", [1, 2, 1].into_iter()).unwrap_err();
        assert!(err.to_string().contains("repeats key id 1"));
    }

    #[test]
    fn an_upload_with_one_bad_kyber_signature_is_refused_whole() {
        let identity_private = PrivateKey::generate();
        let identity = ec_key(&identity_private);
        let kem = |valid: bool| {
            let key = KemPublicKey::parse("k", vec![KEM_KEY_TYPE; KEM_KEY_LENGTH]).unwrap();
            let mut sig = identity_private.sign(key.as_bytes());
            if !valid {
                sig[0] ^= 1;
            }
            KemSignedPreKey {
                key_id: 1,
                public_key: key,
                signature: Signature::parse("s", &sig).unwrap(),
            }
        };
        let good = KeyUpload {
            pq_pre_keys: Some(vec![kem(true), kem(true)]),
            ..Default::default()
        };
        assert!(good.verify(&identity).is_ok());
        let bad = KeyUpload {
            pq_pre_keys: Some(vec![kem(true), kem(false)]),
            ..Default::default()
        };
        let err = bad.verify(&identity).unwrap_err();
        assert!(matches!(&err, DomainError::BadSignature(m) if m.contains("pqPreKeys[1]")));
    }

    #[test]
    fn key_ids_are_bounded_to_a_java_int() {
        assert_eq!(parse_key_id("keyId", 0).unwrap(), 0);
        assert_eq!(parse_key_id("keyId", 2_147_483_647).unwrap(), MAX_KEY_ID);
        assert!(parse_key_id("keyId", 2_147_483_648).is_err());
        assert!(parse_key_id("keyId", -1).is_err());
    }

    #[test]
    fn signed_prekeys_verify_over_their_serialized_bytes() {
        let identity_private = PrivateKey::generate();
        let identity = ec_key(&identity_private);
        let prekey = ec_key(&PrivateKey::generate());
        let good = SignedEcPreKey {
            key_id: 7,
            signature: Signature::parse("s", &identity_private.sign(prekey.as_bytes())).unwrap(),
            public_key: prekey.clone(),
        };
        assert!(good.verify(&identity, "aciSignedPreKey").is_ok());

        let over_raw_key = SignedEcPreKey {
            key_id: 7,
            signature: Signature::parse("s", &identity_private.sign(&prekey.as_bytes()[1..]))
                .unwrap(),
            public_key: prekey,
        };
        assert!(matches!(
            over_raw_key.verify(&identity, "aciSignedPreKey"),
            Err(DomainError::BadSignature(_))
        ));
    }
}
