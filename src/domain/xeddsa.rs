//! XEdDSA over Curve25519 in libsignal's convention: a Montgomery public key, and a
//! 64-byte signature whose last byte's top bit carries the Edwards sign bit of the signer's
//! key. Verification rebuilds the Edwards key with that sign bit, clears it in the
//! signature, and checks the Ed25519 equation. Signing is here for the server's own
//! certificates and for tests.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{Scalar, clamp_integer};
use rand::RngCore;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

pub const SIGNATURE_LENGTH: usize = 64;

/// Verifies `signature` over `message` with the 32-byte Montgomery public key `public`.
pub fn verify(public: &[u8; 32], message: &[u8], signature: &[u8; SIGNATURE_LENGTH]) -> bool {
    let sign_bit = (signature[63] & 0x80) >> 7;
    let Some(a_point) = MontgomeryPoint(*public).to_edwards(sign_bit) else {
        return false;
    };
    let a_compressed = a_point.compress();

    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&signature[..32]);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&signature[32..]);
    s_bytes[31] &= 0x7f;
    // s must be reduced: reject the high bits an honest signer never sets.
    if s_bytes[31] & 0xe0 != 0 {
        return false;
    }

    let mut hash = Sha512::new();
    hash.update(r_bytes);
    hash.update(a_compressed.as_bytes());
    hash.update(message);
    let h = Scalar::from_hash(hash);

    let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(
        &h,
        &-a_point,
        &Scalar::from_bytes_mod_order(s_bytes),
    )
    .compress();
    bool::from(r_check.as_bytes().ct_eq(&r_bytes))
}

/// A Curve25519 private key (clamped scalar bytes, as libsignal stores them).
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(clamp_integer(bytes))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    fn edwards_public(&self) -> EdwardsPoint {
        &Scalar::from_bytes_mod_order(self.0) * ED25519_BASEPOINT_TABLE
    }

    /// The 32-byte Montgomery public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.edwards_public().to_montgomery().to_bytes()
    }

    /// The Edwards sign bit of this key's public point (what signatures carry).
    pub fn edwards_sign_bit(&self) -> u8 {
        self.edwards_public().compress().as_bytes()[31] >> 7
    }

    /// Signs `message` as libsignal does (random nonce input, sign bit in the last byte).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LENGTH] {
        let mut random = [0u8; 64];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let a = Scalar::from_bytes_mod_order(self.0);
        let a_compressed: CompressedEdwardsY = (&a * ED25519_BASEPOINT_TABLE).compress();
        let sign_bit = a_compressed.as_bytes()[31] & 0x80;

        let mut hash1 = Sha512::new();
        let mut prefix = [0xffu8; 32];
        prefix[0] = 0xfe;
        hash1.update(prefix);
        hash1.update(self.0);
        hash1.update(message);
        hash1.update(random);
        let r = Scalar::from_hash(hash1);
        let r_compressed = (&r * ED25519_BASEPOINT_TABLE).compress();

        let mut hash = Sha512::new();
        hash.update(r_compressed.as_bytes());
        hash.update(a_compressed.as_bytes());
        hash.update(message);
        let h = Scalar::from_hash(hash);
        let s = h * a + r;

        let mut signature = [0u8; SIGNATURE_LENGTH];
        signature[..32].copy_from_slice(r_compressed.as_bytes());
        signature[32..].copy_from_slice(s.as_bytes());
        signature[63] &= 0x7f;
        signature[63] |= sign_bit;
        signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys whose Edwards point has the given sign bit (about half of all keys do).
    fn key_with_sign_bit(bit: u8) -> PrivateKey {
        loop {
            let key = PrivateKey::generate();
            if key.edwards_sign_bit() == bit {
                return key;
            }
        }
    }

    #[test]
    fn signatures_verify_with_either_edwards_sign_bit() {
        for bit in [0, 1] {
            let key = key_with_sign_bit(bit);
            let signature = key.sign(b"signed prekey bytes");
            assert_eq!(signature[63] >> 7, bit);
            assert!(verify(
                &key.public_key(),
                b"signed prekey bytes",
                &signature
            ));
        }
    }

    #[test]
    fn a_signature_over_other_bytes_is_rejected() {
        let key = PrivateKey::generate();
        let signature = key.sign(b"the real message");
        assert!(!verify(&key.public_key(), b"another message", &signature));
    }

    #[test]
    fn a_flipped_sign_bit_is_rejected() {
        for bit in [0, 1] {
            let key = key_with_sign_bit(bit);
            let mut signature = key.sign(b"message");
            signature[63] ^= 0x80;
            assert!(!verify(&key.public_key(), b"message", &signature));
        }
    }

    #[test]
    fn another_key_or_a_mangled_signature_is_rejected() {
        let key = PrivateKey::generate();
        let other = PrivateKey::generate();
        let signature = key.sign(b"message");
        assert!(!verify(&other.public_key(), b"message", &signature));
        for i in [0, 31, 32, 62] {
            let mut bad = signature;
            bad[i] ^= 0x01;
            assert!(!verify(&key.public_key(), b"message", &bad));
        }
        let mut high = signature;
        high[63] |= 0x60;
        assert!(!verify(&key.public_key(), b"message", &high));
    }

    /// A vector produced by libsignal's `PrivateKey::calculate_signature` (libsignal
    /// rust/core/src/curve/curve25519.rs tests): the private key, public key, message and
    /// signature of the "testSignature" case.
    #[test]
    fn libsignals_own_test_vector_verifies() {
        let alice_identity_public: [u8; 32] = [
            0xab, 0x7e, 0x71, 0x7d, 0x4a, 0x16, 0x3b, 0x7d, 0x9a, 0x1d, 0x80, 0x71, 0xdf, 0xe9,
            0xdc, 0xf8, 0xcd, 0xcd, 0x1c, 0xea, 0x33, 0x39, 0xb6, 0x35, 0x6b, 0xe8, 0x4d, 0x88,
            0x7e, 0x32, 0x2c, 0x64,
        ];
        let alice_ephemeral_public: [u8; 33] = [
            0x05, 0xed, 0xce, 0x9d, 0x9c, 0x41, 0x5c, 0xa7, 0x8c, 0xb7, 0x25, 0x2e, 0x72, 0xc2,
            0xc4, 0xa5, 0x54, 0xd3, 0xeb, 0x29, 0x48, 0x5a, 0x0e, 0x1d, 0x50, 0x31, 0x18, 0xd1,
            0xa8, 0x2d, 0x99, 0xfb, 0x4a,
        ];
        let alice_signature: [u8; 64] = [
            0x5d, 0xe8, 0x8c, 0xa9, 0xa8, 0x9b, 0x4a, 0x11, 0x5d, 0xa7, 0x91, 0x09, 0xc6, 0x7c,
            0x9c, 0x74, 0x64, 0xa3, 0xe4, 0x18, 0x02, 0x74, 0xf1, 0xcb, 0x8c, 0x63, 0xc2, 0x98,
            0x4e, 0x28, 0x6d, 0xfb, 0xed, 0xe8, 0x2d, 0xeb, 0x9d, 0xcd, 0x9f, 0xae, 0x0b, 0xfb,
            0xb8, 0x21, 0x56, 0x9b, 0x3d, 0x90, 0x01, 0xbd, 0x81, 0x30, 0xcd, 0x11, 0xd4, 0x86,
            0xce, 0xf0, 0x47, 0xbd, 0x60, 0xb8, 0x6e, 0x88,
        ];
        let alice_identity_private: [u8; 32] = [
            0xc0, 0x97, 0x24, 0x84, 0x12, 0xe5, 0x8b, 0xf0, 0x5d, 0xf4, 0x87, 0x96, 0x82, 0x05,
            0x13, 0x27, 0x94, 0x17, 0x8e, 0x36, 0x76, 0x37, 0xf5, 0x81, 0x8f, 0x81, 0xe0, 0xe6,
            0xce, 0x73, 0xe8, 0x65,
        ];
        assert_eq!(
            PrivateKey::from_bytes(alice_identity_private).public_key(),
            alice_identity_public
        );
        assert!(verify(
            &alice_identity_public,
            &alice_ephemeral_public,
            &alice_signature
        ));
        for i in 0..64 {
            let mut modified = alice_signature;
            modified[i] ^= 0x01;
            assert!(!verify(
                &alice_identity_public,
                &alice_ephemeral_public,
                &modified
            ));
        }
        let mut flipped = alice_signature;
        flipped[63] ^= 0x80;
        assert!(!verify(
            &alice_identity_public,
            &alice_ephemeral_public,
            &flipped
        ));
    }
}
