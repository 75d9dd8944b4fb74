//! What a wake-up carries, per provider (PROTOCOL.md 11.3, 11.8), and nothing more: no
//! sender, no recipient, no message id, no timestamp. The app only learns that it should
//! open its socket and drain its queue.

use serde_json::{Value, json};

/// The data key of a new-message wake-up, on every provider (also the WebPush `Topic`).
pub const NEW_MESSAGE_KEY: &str = "newMessageAlert";
/// What APNs collapses urgent new-message pushes under.
pub const APNS_COLLAPSE_ID: &str = "incoming-message";
/// FCM keeps a message this long for an offline phone (PN `MAX_TTL`: 28 days).
pub const FCM_TTL_SECONDS: u64 = 28 * 24 * 3600;
/// APNs: an expiry this far ahead.
pub const APNS_EXPIRY_SECONDS: u64 = 30 * 24 * 3600;
/// WebPush: the push service keeps a wake-up this long.
pub const WEBPUSH_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// WebPush: the activation push's TTL.
pub const WEBPUSH_ACTIVATION_TTL_SECONDS: u64 = 3600;

/// The FCM HTTP v1 request body (`POST .../messages:send`) of a new-message wake-up: a
/// data-only message with one empty key, high priority when urgent.
pub fn fcm_new_message(token: &str, urgent: bool) -> Value {
    json!({
        "message": {
            "token": token,
            "data": { NEW_MESSAGE_KEY: "" },
            "android": {
                "priority": if urgent { "HIGH" } else { "NORMAL" },
                "ttl": format!("{FCM_TTL_SECONDS}s"),
            },
        }
    })
}

/// An APNs request's headers and body (the topic, the configured bundle id, is the
/// sender's).
#[derive(Clone, Debug, PartialEq)]
pub struct ApnsPush {
    /// `apns-push-type`.
    pub push_type: &'static str,
    /// `apns-priority`: 10 immediately, 5 when convenient for the phone's power.
    pub priority: u8,
    /// `apns-collapse-id`, urgent new-message pushes only.
    pub collapse_id: Option<&'static str>,
    pub payload: Value,
}

/// An APNs new-message wake-up: urgent ones an alert for the app's notification service
/// extension to replace (it fetches and decrypts the real messages), others a background
/// push.
pub fn apns_new_message(urgent: bool) -> ApnsPush {
    if urgent {
        ApnsPush {
            push_type: "alert",
            priority: 10,
            collapse_id: Some(APNS_COLLAPSE_ID),
            payload: json!({"aps": {"mutable-content": 1, "alert": {"loc-key": "APN_Message"}}}),
        }
    } else {
        ApnsPush {
            push_type: "background",
            priority: 5,
            collapse_id: None,
            payload: json!({"aps": {"content-available": 1}}),
        }
    }
}

/// The plaintext of a WebPush new-message wake-up (encrypted to the subscription before
/// it leaves) and its `Urgency` header.
pub fn webpush_new_message(urgent: bool) -> (Value, &'static str) {
    let (urgency, header) = if urgent {
        ("high", "high")
    } else {
        ("low", "normal")
    };
    (json!({ NEW_MESSAGE_KEY: "", "urgency": urgency }), header)
}

/// The plaintext of the push that activates a WebPush subscription.
pub fn webpush_activation(activation_token: &uuid::Uuid) -> Value {
    json!({"activationToken": activation_token.to_string(), "urgency": "high"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcm_wake_ups_carry_one_empty_key_and_a_priority() {
        let urgent = fcm_new_message("tok", true);
        assert_eq!(urgent["message"]["data"], json!({"newMessageAlert": ""}));
        assert_eq!(urgent["message"]["android"]["priority"], "HIGH");
        assert_eq!(urgent["message"]["android"]["ttl"], "2419200s");
        assert_eq!(urgent["message"]["token"], "tok");
        assert_eq!(
            fcm_new_message("tok", false)["message"]["android"]["priority"],
            "NORMAL"
        );
        // Nothing else: no notification block, no sender, no id, no time.
        let mut keys: Vec<_> = urgent["message"].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["android", "data", "token"]);
    }

    #[test]
    fn apns_urgent_is_a_collapsed_alert_and_the_rest_background() {
        let urgent = apns_new_message(true);
        assert_eq!((urgent.push_type, urgent.priority), ("alert", 10));
        assert_eq!(urgent.collapse_id, Some("incoming-message"));
        assert_eq!(
            urgent.payload,
            json!({"aps": {"mutable-content": 1, "alert": {"loc-key": "APN_Message"}}})
        );
        let background = apns_new_message(false);
        assert_eq!(
            (background.push_type, background.priority),
            ("background", 5)
        );
        assert_eq!(background.collapse_id, None);
        assert_eq!(background.payload, json!({"aps": {"content-available": 1}}));
    }

    #[test]
    fn webpush_plaintexts_are_the_fork_s() {
        let (urgent, header) = webpush_new_message(true);
        assert_eq!(urgent, json!({"newMessageAlert": "", "urgency": "high"}));
        assert_eq!(header, "high");
        let (later, header) = webpush_new_message(false);
        assert_eq!(later, json!({"newMessageAlert": "", "urgency": "low"}));
        assert_eq!(header, "normal");
        let token = uuid::Uuid::new_v4();
        assert_eq!(
            webpush_activation(&token),
            json!({"activationToken": token.to_string(), "urgency": "high"})
        );
    }
}
