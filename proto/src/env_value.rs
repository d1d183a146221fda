//! `KeyValue.value` (an environment value) was a string in the CRI before the
//! 1.36 level and is bytes now. crid's store keeps container configs as JSON:
//! a value written by an older crid is a JSON string, a new one a byte array.
//! Both load (also in the translated spec crid keeps beside the config).

use serde::de::{Deserializer, SeqAccess, Visitor};
use std::fmt;

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_any(StringOrBytes)
}

struct StringOrBytes;

impl<'de> Visitor<'de> for StringOrBytes {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a sequence of bytes")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Vec<u8>, E> {
        Ok(value.as_bytes().to_vec())
    }

    fn visit_bytes<E: serde::de::Error>(self, value: &[u8]) -> Result<Vec<u8>, E> {
        Ok(value.to_vec())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::cri::KeyValue;

    #[test]
    fn loads_old_string_values_and_new_byte_values() {
        let old: KeyValue = serde_json::from_str(r#"{"key":"A","value":"héllo"}"#).unwrap();
        assert_eq!(old.value, "héllo".as_bytes());

        let new = KeyValue {
            key: "B".into(),
            value: vec![0xff, 0x00, b'x'],
        };
        let json = serde_json::to_string(&new).unwrap();
        let back: KeyValue = serde_json::from_str(&json).unwrap();
        assert_eq!(back, new);
    }
}
