//! Header parsing the extractors (`api::extract`) and the fuzz targets share: the
//! sealed-sender header and the forwarded client address.

use crate::domain::accounts::AccessKey;
use crate::domain::encoding::decode_base64;
use crate::error::AppError;
pub use crate::identity::last_forwarded_hop;

/// The sealed-sender header.
pub const UNIDENTIFIED_ACCESS_KEY: &str = "unidentified-access-key";

/// Parses `Unidentified-Access-Key`: anything but 16 bytes of base64 is a 401, like a wrong
/// key.
pub fn access_key_header(value: &str) -> Result<AccessKey, AppError> {
    decode_base64("Unidentified-Access-Key", value)
        .ok()
        .and_then(|bytes| AccessKey::parse("Unidentified-Access-Key", &bytes).ok())
        .ok_or(AppError::Unauthorized)
}
