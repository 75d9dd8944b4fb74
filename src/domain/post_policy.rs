//! S3 POST-policy upload forms for avatars (PROTOCOL.md 13.1, Signal's PostPolicyGenerator
//! and PolicySigner): a policy naming one key, a 30-minute expiry and Signal's
//! `content-length-range`, signed with the SigV4 key chain (HMAC-SHA256 of the date,
//! region, `s3`, `aws4_request`) over the base64 policy, so any S3-compatible bucket
//! holding the same credentials checks it. No IO.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::encoding::encode_base64;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The ACL Signal's form names.
pub const ACL: &str = "private";
/// How long a form is valid.
pub const VALIDITY_MINUTES: i64 = 30;

/// What signs the forms: a bucket's credentials, or sealpost's own for its cdn-0.
#[derive(Clone)]
pub struct PolicyKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    pub bucket: String,
}

impl std::fmt::Debug for PolicyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .finish()
    }
}

/// The fields a client posts with its avatar (`ProfileAvatarUploadAttributes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadForm {
    pub key: String,
    pub credential: String,
    pub acl: String,
    pub algorithm: String,
    pub date: String,
    pub policy: String,
    pub signature: String,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl PolicyKey {
    /// The form for `key`, made at `now`, allowing 1..=`max_bytes` bytes.
    pub fn form(&self, key: &str, now: DateTime<Utc>, max_bytes: u64) -> UploadForm {
        let expiration = (now + Duration::minutes(VALIDITY_MINUTES))
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        let day = now.format("%Y%m%d").to_string();
        let date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let credential = format!(
            "{}/{day}/{}/s3/aws4_request",
            self.access_key_id, self.region
        );
        let policy = serde_json::json!({
            "expiration": expiration,
            "conditions": [
                {"bucket": self.bucket},
                {"key": key},
                {"acl": ACL},
                ["starts-with", "$Content-Type", ""],
                ["content-length-range", 1, max_bytes],
                {"x-amz-credential": credential},
                {"x-amz-algorithm": ALGORITHM},
                {"x-amz-date": date},
            ],
        });
        let policy = encode_base64(policy.to_string().as_bytes());
        let signature = self.signature(&day, &policy);
        UploadForm {
            key: key.to_owned(),
            credential,
            acl: ACL.to_owned(),
            algorithm: ALGORITHM.to_owned(),
            date,
            policy,
            signature,
        }
    }

    /// Hex SigV4 signature of the base64 `policy` for the day `day` (`yyyyMMdd`).
    pub fn signature(&self, day: &str, policy: &str) -> String {
        let secret = format!("AWS4{}", self.secret_access_key);
        let key = hmac(secret.as_bytes(), day.as_bytes());
        let key = hmac(&key, self.region.as_bytes());
        let key = hmac(&key, b"s3");
        let key = hmac(&key, b"aws4_request");
        hex(&hmac(&key, policy.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn key() -> PolicyKey {
        PolicyKey {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            bucket: "sigv4examplebucket".into(),
        }
    }

    /// AWS's published POST example ("Example: Browser-Based Upload using HTTP POST (Using
    /// AWS Signature Version 4)"): its policy and signature.
    #[test]
    fn the_signature_matches_aws_published_example() {
        let policy = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
        assert_eq!(
            key().signature("20151229", policy),
            "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
        );
    }

    #[test]
    fn a_form_names_one_key_the_size_range_and_its_credential() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T19:30:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let form = key().form("profiles/abc", now, 10 * 1024 * 1024);
        assert_eq!(
            form.credential,
            "AKIAIOSFODNN7EXAMPLE/20261204/us-east-1/s3/aws4_request"
        );
        assert_eq!(form.date, "20261204T193005Z");
        let policy: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(&form.policy)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(policy["expiration"], "2026-12-04T20:00:05.000Z");
        let conditions = policy["conditions"].as_array().unwrap();
        assert!(conditions.contains(&serde_json::json!({"key": "profiles/abc"})));
        assert!(conditions.contains(&serde_json::json!(["content-length-range", 1, 10485760])));
        assert_eq!(form.signature, key().signature("20261204", &form.policy));
    }
}
