//! Base64 as the wire uses it: standard alphabet, accepted with or without padding,
//! emitted with padding.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::DomainError;

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes `value` (standard base64, padding optional); `field` names it in the error.
pub fn decode_base64(field: &str, value: &str) -> Result<Vec<u8>, DomainError> {
    LENIENT
        .decode(value.trim())
        .map_err(|_| DomainError::invalid(format!("{field} is not valid base64")))
}

const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes `value` as URL-safe base64, padding optional (Java's URL decoder, PROTOCOL.md
/// 10a's url-nopad): the standard alphabet's `+` and `/` are refused. The error is a 422,
/// as Signal's JSON mapping answers for the fields that use it.
pub fn decode_url_base64(field: &str, value: &str) -> Result<Vec<u8>, DomainError> {
    URL_LENIENT
        .decode(value)
        .map_err(|_| DomainError::unprocessable(format!("{field} is not valid URL-safe base64")))
}

/// Encodes with the URL-safe alphabet and no padding (url-nopad).
pub fn encode_url_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Encodes with the standard alphabet and padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_accepted_with_or_without_padding() {
        assert_eq!(decode_base64("x", "AQI=").unwrap(), vec![1, 2]);
        assert_eq!(decode_base64("x", "AQI").unwrap(), vec![1, 2]);
        assert_eq!(encode_base64(&[1, 2]), "AQI=");
    }

    #[test]
    fn url_base64_takes_either_padding_but_not_the_standard_alphabet() {
        assert_eq!(decode_url_base64("x", "-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_url_base64("x", "-_8=").unwrap(), vec![0xfb, 0xff]);
        assert!(decode_url_base64("x", "+/8").is_err());
        assert_eq!(encode_url_base64(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn bad_base64_names_the_field() {
        let err = decode_base64("identityKey", "not base64!").unwrap_err();
        assert_eq!(err, DomainError::invalid("identityKey is not valid base64"));
    }
}
