//! Base64 and key encodings: the lenient base64 decoder, Curve25519 / Kyber1024 public keys
//! and signatures, XEdDSA verification with arbitrary keys, messages and signatures, and the
//! certificate protobufs. Must never panic; a random signature must not verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sealpost::domain::certificates::verify_server_certificate;
use sealpost::domain::encoding::{decode_base64, encode_base64};
use sealpost::domain::keys::{EcPublicKey, KemPublicKey, Signature};
use sealpost::domain::xeddsa;
use sealpost::proto::sealed_sender::{SenderCertificate, ServerCertificate, sender_certificate};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(bytes) = decode_base64("field", &text) {
                // Emitted with padding, which decodes back to the same bytes.
                assert_eq!(
                    decode_base64("field", &encode_base64(&bytes)).unwrap(),
                    bytes
                );
                let _ = EcPublicKey::parse("field", &bytes);
                let _ = Signature::parse("field", &bytes);
                let _ = KemPublicKey::parse("field", bytes);
            }
        }
        1 => {
            let _ = EcPublicKey::parse("field", rest);
            let _ = Signature::parse("field", rest);
            let _ = KemPublicKey::parse("field", rest.to_vec());
        }
        // XEdDSA with an arbitrary 32-byte key, 64-byte signature and message.
        2 => {
            if rest.len() >= 96 {
                let public: [u8; 32] = rest[..32].try_into().unwrap();
                let signature: [u8; 64] = rest[32..96].try_into().unwrap();
                let message = &rest[96..];
                let _ = xeddsa::verify(&public, message, &signature);
                let mut key = [0u8; 33];
                key[0] = 0x05;
                key[1..].copy_from_slice(&public);
                if let (Ok(key), Ok(signature)) = (
                    EcPublicKey::parse("key", &key),
                    Signature::parse("sig", &signature),
                ) {
                    let _ = key.verify(message, &signature);
                }
            }
        }
        _ => {
            if let Ok(certificate) = ServerCertificate::decode(rest) {
                let root = EcPublicKey::parse("root", &[5u8; 33]).unwrap();
                assert!(verify_server_certificate(&root, &certificate).is_err());
            }
            if let Ok(certificate) = SenderCertificate::decode(rest)
                && let Some(inner) = certificate.certificate
            {
                let _ = sender_certificate::Certificate::decode(inner);
            }
        }
    }
});
