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

/// Why a posted form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A field is missing or does not parse (400).
    #[error("{0}")]
    Malformed(String),
    /// The signature, credential, expiry or a condition does not hold (403).
    #[error("{0}")]
    Denied(String),
}

/// What a verified form allows: one key, a size range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub key: String,
    pub min_bytes: u64,
    pub max_bytes: u64,
}

/// Form fields no condition needs to name (AWS's rule for POST policies).
fn exempt(name: &str) -> bool {
    matches!(name, "policy" | "x-amz-signature" | "file") || name.starts_with("x-ignore-")
}

impl PolicyKey {
    /// Checks a posted form as S3 does: the algorithm, the credential (this key's id and
    /// region, the date's day), the signature over the policy (in constant time), the
    /// expiry, then every condition of the (now trusted) policy against the fields, and
    /// that every field is named by one. `fields` holds the form's fields but the file,
    /// by lowercase name.
    pub fn verify(
        &self,
        fields: &std::collections::BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<Allowed, PolicyError> {
        let field = |name: &str| {
            fields
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| PolicyError::Malformed(format!("the form has no {name} field")))
        };
        let denied = |what: &str| PolicyError::Denied(what.to_owned());
        if field("x-amz-algorithm")? != ALGORITHM {
            return Err(PolicyError::Malformed(format!(
                "x-amz-algorithm must be {ALGORITHM}"
            )));
        }
        let date = field("x-amz-date")?;
        let credential = field("x-amz-credential")?;
        let parts: Vec<&str> = credential.split('/').collect();
        let [id, day, region, "s3", "aws4_request"] = parts.as_slice() else {
            return Err(PolicyError::Malformed(
                "x-amz-credential does not parse".into(),
            ));
        };
        if *id != self.access_key_id || *region != self.region || !date.starts_with(day) {
            return Err(denied("the credential is not this server's"));
        }
        let policy = field("policy")?;
        let expected = self.signature(day, policy);
        let given = field("x-amz-signature")?.to_ascii_lowercase();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            given.as_bytes(),
        )) {
            return Err(denied("the signature does not match the policy"));
        }
        let document: serde_json::Value = super::encoding::decode_base64("policy", policy)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| PolicyError::Malformed("the policy is not base64 JSON".into()))?;
        let expiration = document["expiration"]
            .as_str()
            .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
            .ok_or_else(|| PolicyError::Malformed("the policy has no expiration".into()))?;
        if now >= expiration {
            return Err(denied("the policy has expired"));
        }
        let conditions = document["conditions"]
            .as_array()
            .ok_or_else(|| PolicyError::Malformed("the policy has no conditions".into()))?;
        let mut named = std::collections::BTreeSet::new();
        let mut range = None;
        let value_of = |name: &str| -> Option<&str> {
            match name {
                "bucket" => Some(self.bucket.as_str()),
                other => fields.get(other).map(String::as_str),
            }
        };
        for condition in conditions {
            let (name, op, value) = match condition {
                serde_json::Value::Object(map) if map.len() == 1 => {
                    let (name, value) = map.iter().next().expect("one entry");
                    (name.to_ascii_lowercase(), "eq", value.as_str())
                }
                serde_json::Value::Array(items) if items.len() == 3 => {
                    let op = items[0].as_str().unwrap_or_default();
                    if op == "content-length-range" {
                        let (Some(min), Some(max)) = (items[1].as_u64(), items[2].as_u64()) else {
                            return Err(PolicyError::Malformed(
                                "a bad content-length-range".into(),
                            ));
                        };
                        range = Some((min, max));
                        continue;
                    }
                    let name = items[1].as_str().unwrap_or_default();
                    let name = name.strip_prefix('$').unwrap_or(name).to_ascii_lowercase();
                    (name, op, items[2].as_str())
                }
                _ => return Err(PolicyError::Malformed("a condition does not parse".into())),
            };
            let (Some(value), Some(actual)) = (value, value_of(&name)) else {
                return Err(denied("a condition of the policy does not hold"));
            };
            let holds = match op {
                "eq" => actual == value,
                "starts-with" => actual.starts_with(value),
                _ => false,
            };
            if !holds {
                return Err(denied("a condition of the policy does not hold"));
            }
            named.insert(name);
        }
        if let Some(stray) = fields.keys().find(|f| !exempt(f) && !named.contains(*f)) {
            return Err(denied(&format!("no condition of the policy names {stray}")));
        }
        let (min_bytes, max_bytes) =
            range.ok_or_else(|| denied("the policy has no content-length-range"))?;
        Ok(Allowed {
            key: field("key")?.to_owned(),
            min_bytes,
            max_bytes,
        })
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

    fn posted(form: &UploadForm) -> std::collections::BTreeMap<String, String> {
        [
            ("acl", form.acl.as_str()),
            ("key", form.key.as_str()),
            ("policy", form.policy.as_str()),
            ("content-type", "application/octet-stream"),
            ("x-amz-algorithm", form.algorithm.as_str()),
            ("x-amz-credential", form.credential.as_str()),
            ("x-amz-date", form.date.as_str()),
            ("x-amz-signature", form.signature.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn a_form_verifies_until_it_expires_and_only_as_issued() {
        let now = Utc::now();
        let form = key().form("profiles/abc", now, 100);
        let fields = posted(&form);
        assert_eq!(
            key().verify(&fields, now),
            Ok(Allowed {
                key: "profiles/abc".into(),
                min_bytes: 1,
                max_bytes: 100
            })
        );
        let later = now + Duration::minutes(VALIDITY_MINUTES);
        assert!(matches!(
            key().verify(&fields, later),
            Err(PolicyError::Denied(_))
        ));
        for (name, value) in [
            ("key", "profiles/other"),
            ("acl", "public-read"),
            ("x-amz-signature", "00"),
            (
                "x-amz-credential",
                "other/20260101/us-east-1/s3/aws4_request",
            ),
            ("x-extra", "x"),
        ] {
            let mut changed = fields.clone();
            changed.insert(name.into(), value.into());
            assert!(
                matches!(key().verify(&changed, now), Err(PolicyError::Denied(_))),
                "{name}"
            );
        }
        let mut missing = fields.clone();
        missing.remove("policy");
        assert!(matches!(
            key().verify(&missing, now),
            Err(PolicyError::Malformed(_))
        ));
        let other_secret = PolicyKey {
            secret_access_key: "another".into(),
            ..key()
        };
        assert!(matches!(
            other_secret.verify(&fields, now),
            Err(PolicyError::Denied(_))
        ));
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
