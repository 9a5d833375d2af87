//! Where settings come from, lowest first: the file, the environment, the flags.
//!
//! Each source is a TOML table laid over the one before, key by key; the result is read
//! as a [`FileConfig`], whose defaults fill what none of them set. Every setting has
//! an environment variable: `SWITCHYARD_` and its dotted name in capitals, with `__`
//! for each dot (`guest.fuel_per_call` is `SWITCHYARD_GUEST__FUEL_PER_CALL`). Its
//! value reads as a TOML value (a number, `true`, `[...]`, `{...}`) where it is one,
//! else as a string; a string that reads as a number is quoted (`'"42"'`).

use super::{Error, FileConfig};
use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::path::Path;
use toml::{Table, Value};

const PREFIX: &str = "SWITCHYARD_";

/// The settings of the file `path` (if any): its table, to lay the others over.
pub fn read(path: Option<&Path>) -> Result<Table, Error> {
    let Some(path) = path else { return Ok(Table::new()) };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
    text.parse::<Table>().map_err(|source| Error::Parse { path: path.into(), source })
}

/// `settings` (a file's) with the environment `vars` and the `flags` (by dotted name)
/// laid over them; and the environment variables that were taken.
pub fn layered(
    mut settings: Table,
    vars: impl IntoIterator<Item = (String, String)>,
    flags: Vec<(&str, Value)>,
) -> Result<(FileConfig, Vec<String>), Error> {
    let names = setting_names();
    let mut taken = Vec::new();
    for (var, text) in vars {
        if let Some(name) = names.iter().find(|name| env_var(name) == var) {
            set(&mut settings, name, env_value(&text));
            taken.push(var);
        }
    }
    for (name, value) in flags {
        set(&mut settings, name, value);
    }
    let config = serde_path_to_error::deserialize(settings).map_err(|err| {
        let setting = err.path().to_string();
        let var = env_var(&setting);
        let from = if taken.contains(&var) { format!(" (set by {var})") } else { String::new() };
        Error::Invalid(format!("{setting}: {}{from}", err.inner().message()))
    })?;
    Ok((config, taken))
}

/// The environment variable of setting `name` (dotted).
pub fn env_var(name: &str) -> String {
    format!("{PREFIX}{}", name.replace('.', "__").to_ascii_uppercase())
}

/// An environment variable's value as the file would give it.
fn env_value(text: &str) -> Value {
    format!("value = {text}")
        .parse::<Table>()
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

/// Sets `value` at the dotted `name` in `table`, making the tables on the way.
pub(super) fn set(table: &mut Table, name: &str, value: Value) {
    match name.split_once('.') {
        None => {
            table.insert(name.to_owned(), value);
        }
        Some((section, rest)) => {
            let inner = table.entry(section).or_insert_with(|| Value::Table(Table::new()));
            if !inner.is_table() {
                *inner = Value::Table(Table::new());
            }
            if let Value::Table(inner) = inner {
                set(inner, rest, value);
            }
        }
    }
}

/// The dotted name of every setting of [`FileConfig`], sections walked into: found by
/// having it deserialize from [`Probe`], so that a setting added to the file's shape
/// has its environment variable with nothing else to change.
pub fn setting_names() -> Vec<String> {
    let mut names = Vec::new();
    // A probe answers every field; nothing is refused.
    let _ = FileConfig::deserialize(Probe { name: String::new(), names: &mut names });
    names
}

/// A deserializer that answers a struct with each of its fields, and records the name
/// of each field that is not a struct itself, answering it with nothing (no value, an
/// empty list or map).
struct Probe<'a> {
    name: String,
    names: &'a mut Vec<String>,
}

impl Probe<'_> {
    fn leaf(self) {
        self.names.push(self.name);
    }
}

#[derive(Debug)]
struct ProbeError(String);

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        ProbeError(message.to_string())
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeError> {
        Err(de::Error::custom(format!("setting {} is neither optional nor a section", self.name)))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.leaf();
        visitor.visit_none()
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.leaf();
        visitor.visit_bool(false)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.leaf();
        visitor.visit_seq(Nothing)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.leaf();
        visitor.visit_map(Nothing)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_map(Fields { section: self.name, fields: fields.iter(), next: None, names: self.names })
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// A struct's fields, each answered by a [`Probe`] named after it.
struct Fields<'a> {
    section: String,
    fields: std::slice::Iter<'static, &'static str>,
    next: Option<&'static str>,
    names: &'a mut Vec<String>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        let Some(field) = self.fields.next() else { return Ok(None) };
        self.next = Some(field);
        seed.deserialize(field.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ProbeError> {
        let field = self.next.take().unwrap_or_default();
        let name =
            if self.section.is_empty() { field.to_owned() } else { format!("{}.{field}", self.section) };
        seed.deserialize(Probe { name, names: self.names })
    }
}

/// An empty list or map.
struct Nothing;

impl<'de> SeqAccess<'de> for Nothing {
    type Error = ProbeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        _: T,
    ) -> Result<Option<T::Value>, ProbeError> {
        Ok(None)
    }
}

impl<'de> MapAccess<'de> for Nothing {
    type Error = ProbeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, _: K) -> Result<Option<K::Value>, ProbeError> {
        Ok(None)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, _: V) -> Result<V::Value, ProbeError> {
        Err(de::Error::custom("a map without keys has no values"))
    }
}
