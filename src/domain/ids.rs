//! Account and device identifiers, parsed at the edge.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::DomainError;

/// An account identifier (ACI): a UUID the server picks at registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aci(Uuid);

impl Aci {
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn uuid(self) -> Uuid {
        self.0
    }

    /// The 16-byte binary form.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for Aci {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for Aci {
    type Err = DomainError;

    /// Accepts a plain UUID or the `ACI:` service-id form; PNIs do not exist in sealpost.
    fn from_str(s: &str) -> Result<Self, DomainError> {
        let s = s.trim();
        // `get`, not indexing: the input is any client text, and byte 4 may fall inside a
        // multi-byte character (found by the `headers` fuzz target; it panicked a worker).
        let prefix = s.get(..4);
        if prefix.is_some_and(|p| p.eq_ignore_ascii_case("PNI:")) {
            return Err(DomainError::invalid("PNI identifiers are not supported"));
        }
        let s = match prefix {
            Some(p) if p.eq_ignore_ascii_case("ACI:") => &s[4..],
            _ => s,
        };
        Uuid::try_parse(s)
            .map(Aci)
            .map_err(|_| DomainError::invalid(format!("{s:?} is not a valid account identifier")))
    }
}

impl serde::Serialize for Aci {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Aci {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A device id, 1..=127; the primary is 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(u8);

impl DeviceId {
    pub const PRIMARY: DeviceId = DeviceId(1);
    pub const MAX: u8 = 127;

    pub fn new(id: u32) -> Result<Self, DomainError> {
        if (1..=u32::from(Self::MAX)).contains(&id) {
            Ok(Self(id as u8))
        } else {
            Err(DomainError::invalid(format!(
                "device id {id} is out of range (1..=127)"
            )))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    pub fn is_primary(self) -> bool {
        self == Self::PRIMARY
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for DeviceId {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        let id: u32 = s
            .parse()
            .map_err(|_| DomainError::invalid(format!("{s:?} is not a device id")))?;
        Self::new(id)
    }
}

/// A registration id, 1..=16383, chosen by the client per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegistrationId(u16);

impl RegistrationId {
    pub fn new(id: i64) -> Result<Self, DomainError> {
        if (1..=16383).contains(&id) {
            Ok(Self(id as u16))
        } else {
            Err(DomainError::invalid(format!(
                "registrationId {id} is out of range (1..=16383)"
            )))
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acis_parse_plain_and_prefixed_but_never_as_pni() {
        let uuid = "9d0652a3-dcc3-4d11-975f-74d61598733f";
        let aci: Aci = uuid.parse().unwrap();
        assert_eq!(aci.to_string(), uuid);
        assert_eq!(format!("ACI:{uuid}").parse::<Aci>().unwrap(), aci);
        assert!(format!("PNI:{uuid}").parse::<Aci>().is_err());
        assert!("nope".parse::<Aci>().is_err());
    }

    #[test]
    fn device_ids_are_bounded() {
        assert!(DeviceId::new(0).is_err());
        assert!(DeviceId::new(128).is_err());
        assert!(DeviceId::new(1).unwrap().is_primary());
        assert_eq!("127".parse::<DeviceId>().unwrap().get(), 127);
        assert!("-1".parse::<DeviceId>().is_err());
    }

    #[test]
    fn registration_ids_are_bounded() {
        assert!(RegistrationId::new(0).is_err());
        assert!(RegistrationId::new(16384).is_err());
        assert_eq!(RegistrationId::new(16383).unwrap().get(), 16383);
    }
}
