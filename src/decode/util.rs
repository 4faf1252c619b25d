//! Small serde helpers shared by the decoders: strings borrowed from the input when they have
//! no escapes, and lenient readers for fields that producers spell inconsistently (numbers as
//! strings, booleans as `"true"`, one audience or several).

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use memchr::memmem::Finder;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string field borrowed from the input when possible. Unlike `Cow<str>`, it also borrows
/// inside `Option` and `Vec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Returns the string when present and not blank.
pub fn nonblank<'s>(s: &'s Option<Str<'_>>) -> Option<&'s str> {
    s.as_deref().map(str::trim_ascii).filter(|s| !s.is_empty())
}

/// Owned copy of a present, non-blank string.
pub fn owned(s: &Option<Str<'_>>) -> Option<String> {
    nonblank(s).map(str::to_string)
}

/// Owned copy of the first non-blank string of a list.
pub fn first_owned(list: &[Str<'_>]) -> Option<String> {
    list.iter()
        .map(|s| s.trim_ascii())
        .find(|s| !s.is_empty())
        .map(str::to_string)
}

/// An integer that may be written as a number (integer or float) or as a numeric string;
/// `null` and empty strings read as absent.
pub fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer or a numeric string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("integer out of range"))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.is_finite() && v.abs() < 9.0e15 {
                Ok(Some(v.trunc() as i64))
            } else {
                Err(E::custom("number out of range"))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            let v = v.trim_ascii();
            if v.is_empty() {
                return Ok(None);
            }
            if let Ok(n) = v.parse::<i64>() {
                return Ok(Some(n));
            }
            match v.parse::<f64>() {
                Ok(f) => self.visit_f64(f),
                Err(_) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_any(V)
}

/// A boolean that may be written as `true`/`false` or as the strings `"true"`/`"false"`
/// (GitHub and GitLab claims use strings).
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean or \"true\"/\"false\"")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v.trim_ascii() {
                s if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
                s if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
                "" => Ok(None),
                other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_any(V)
}

/// A string or a list of strings (JWT `aud`); `null` reads as empty.
pub fn one_or_many<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Vec<Str<'a>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<Str<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(vec![Str(Cow::Borrowed(v))])
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![Str(Cow::Owned(v.to_string()))])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<Str<'de>>()? {
                out.push(s);
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

/// A list of strings where `null` reads as empty.
pub fn string_list<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Vec<Str<'a>>, D::Error> {
    Ok(Option::<Vec<Str<'a>>>::deserialize(d)?.unwrap_or_default())
}

/// A flat object keeping string values (numbers and booleans are kept as their JSON text;
/// nested values are skipped). Vault `metadata` is such a map.
pub fn string_map<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(Str<'a>, Str<'a>)>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(Str<'de>, Str<'de>)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<Str<'de>>()? {
                if let Some(v) = map.next_value::<Scalar<'de>>()?.0 {
                    out.push((k, v));
                }
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

/// An object of string lists (Kubernetes `user.extra`); a bare string counts as a list of one.
pub fn string_list_map<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(Str<'a>, Vec<Str<'a>>)>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(Str<'de>, Vec<Str<'de>>)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of string lists")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<Str<'de>>()? {
                let v = map.next_value::<OneOrMany<'de>>()?.0;
                out.push((k, v));
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

/// Looks a key up in a list of pairs.
pub fn lookup<'m, V>(pairs: &'m [(Str<'_>, V)], key: &str) -> Option<&'m V> {
    pairs.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
}

struct OneOrMany<'a>(Vec<Str<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for OneOrMany<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_or_many(d).map(OneOrMany)
    }
}

/// A scalar kept as text, or nothing for nested values and `null`.
struct Scalar<'a>(Option<Str<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Borrowed(v)))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Owned(v.to_string())))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Owned(v.to_string())))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Owned(v.to_string())))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Owned(v.to_string())))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Str(Cow::Owned(v.to_string())))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A substring search with a prebuilt searcher: building one per call (as `str::contains` and
/// `memmem::find` do) costs more than the search itself on short fields.
pub struct Needle {
    text: &'static str,
    finder: OnceLock<Finder<'static>>,
}

impl Needle {
    /// A needle for a fixed string.
    pub const fn new(text: &'static str) -> Self {
        Needle {
            text,
            finder: OnceLock::new(),
        }
    }

    /// Where the needle first occurs in `hay`.
    pub fn find(&self, hay: &str) -> Option<usize> {
        self.finder
            .get_or_init(|| Finder::new(self.text))
            .find(hay.as_bytes())
    }

    /// Whether the needle occurs in `hay`.
    pub fn is_in(&self, hay: &str) -> bool {
        self.find(hay).is_some()
    }
}

/// Strips a trailing `@ref` from a workflow or config reference.
pub fn strip_at_ref(s: &str) -> &str {
    match s.rsplit_once('@') {
        Some((path, _)) if !path.is_empty() => path,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct T<'a> {
        #[serde(borrow)]
        s: Option<Str<'a>>,
        #[serde(default, deserialize_with = "lenient_i64")]
        n: Option<i64>,
        #[serde(default, deserialize_with = "lenient_bool")]
        b: Option<bool>,
        #[serde(borrow, default, deserialize_with = "one_or_many")]
        aud: Vec<Str<'a>>,
        #[serde(borrow, default, deserialize_with = "string_map")]
        m: Vec<(Str<'a>, Str<'a>)>,
    }

    #[test]
    fn borrows_unescaped_strings_and_owns_escaped_ones() -> serde_json::Result<()> {
        let input = br#"{"s":"plain"}"#;
        let t: T = serde_json::from_slice(input)?;
        assert!(matches!(t.s.map(|s| s.0), Some(Cow::Borrowed("plain"))));
        let t: T = serde_json::from_slice(br#"{"s":"a\"b"}"#)?;
        assert_eq!(t.s.as_deref(), Some("a\"b"));
        Ok(())
    }

    #[test]
    fn lenient_fields_accept_the_spellings_seen_in_the_wild() -> serde_json::Result<()> {
        let t: T = serde_json::from_slice(br#"{"n":"900","b":"True","aud":"x"}"#)?;
        assert_eq!(t.n, Some(900));
        assert_eq!(t.b, Some(true));
        assert_eq!(t.aud.len(), 1);
        let t: T = serde_json::from_slice(
            br#"{"n":900.0,"b":false,"aud":["x","y"],"m":{"role":"r","n":3,"o":{"x":1}}}"#,
        )?;
        assert_eq!(t.n, Some(900));
        assert_eq!(t.b, Some(false));
        assert_eq!(t.aud.len(), 2);
        assert_eq!(t.m.len(), 2);
        assert_eq!(lookup(&t.m, "n").map(|s| &**s), Some("3"));
        let t: T = serde_json::from_slice(br#"{"n":null,"b":null,"aud":null}"#)?;
        assert_eq!((t.n, t.b, t.aud.len()), (None, None, 0));
        assert!(serde_json::from_slice::<T>(br#"{"n":"nine"}"#).is_err());
        assert!(serde_json::from_slice::<T>(br#"{"b":"yes"}"#).is_err());
        Ok(())
    }

    #[test]
    fn strips_refs() {
        assert_eq!(
            strip_at_ref("o/r/.github/workflows/x.yml@refs/heads/main"),
            "o/r/.github/workflows/x.yml"
        );
        assert_eq!(strip_at_ref("no-ref"), "no-ref");
        assert_eq!(strip_at_ref("@weird"), "@weird");
    }
}
