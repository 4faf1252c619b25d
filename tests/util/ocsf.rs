//! A validator of OCSF events against the published schema files in
//! `../shared/ocsf-schema-1.8.0/` (not a compiled schema): a class is its file merged with
//! the classes it extends; an object its file merged with the objects it extends; every
//! attribute's type and `is_array` come from `dictionary.json`, enums from the dictionary and
//! every level that redefines them. Attributes of included profiles are allowed but not
//! required (no profile is declared in `metadata.profiles`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Clone, Debug, Default)]
struct Attr {
    requirement: String,
    enum_keys: BTreeSet<String>,
}

#[derive(Clone, Debug, Default)]
struct Def {
    attrs: BTreeMap<String, Attr>,
    /// (kind, attributes): `at_least_one` or `just_one`.
    constraints: Vec<(String, Vec<String>)>,
}

/// The schema.
pub struct Ocsf {
    root: PathBuf,
    dict: serde_json::Map<String, Value>,
    types: serde_json::Map<String, Value>,
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Ocsf {
    /// The schema under `../shared`, or None when this checkout has none.
    pub fn load() -> Option<Ocsf> {
        let root = super::root().join("../shared/ocsf-schema-1.8.0");
        if !root.is_dir() {
            eprintln!("skipping: {} is absent", root.display());
            return None;
        }
        let d = read(&root.join("dictionary.json"));
        Some(Ocsf {
            dict: d["attributes"].as_object().cloned().unwrap_or_default(),
            types: d["types"]["attributes"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            root,
        })
    }

    fn find_event(&self, name: &str) -> PathBuf {
        let base = self.root.join("events");
        if name == "base_event" {
            return base.join("base_event.json");
        }
        for dir in std::fs::read_dir(&base).expect("events dir").flatten() {
            let p = dir.path().join(format!("{name}.json"));
            if p.is_file() {
                return p;
            }
        }
        panic!("no event class {name}");
    }

    /// Merges a definition file (and what it extends) into `def`, base first.
    fn merge(&self, def: &mut Def, file: &Value, is_event: bool) {
        if let Some(parent) = file.get("extends").and_then(Value::as_str) {
            let path = if is_event {
                self.find_event(parent)
            } else {
                self.root.join("objects").join(format!("{parent}.json"))
            };
            self.merge(def, &read(&path), is_event);
        }
        let Some(attrs) = file.get("attributes").and_then(Value::as_object) else {
            return;
        };
        if let Some(inc) = attrs.get("$include") {
            let list: Vec<&str> = match inc {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            for rel in list {
                let f = read(&self.root.join(rel));
                for (k, v) in f["attributes"].as_object().into_iter().flatten() {
                    let a = def.attrs.entry(k.clone()).or_default();
                    a.enum_keys.extend(enum_keys(v));
                    if a.requirement.is_empty() {
                        // A profile's attributes apply only when the profile is declared.
                        a.requirement = "optional".into();
                    }
                }
            }
        }
        for (k, v) in attrs {
            if k == "$include" {
                continue;
            }
            let a = def.attrs.entry(k.clone()).or_default();
            if let Some(r) = v.get("requirement").and_then(Value::as_str) {
                a.requirement = r.to_string();
            }
            a.enum_keys.extend(enum_keys(v));
        }
        if let Some(c) = file.get("constraints").and_then(Value::as_object) {
            // A definition's constraints replace those of what it extends (as the schema
            // compiler merges them): `endpoint`'s list supersedes `_entity`'s.
            def.constraints.clear();
            for (kind, list) in c {
                let names = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                def.constraints.push((kind.clone(), names));
            }
        }
    }

    /// A class, with the enums the schema compiler derives rather than lists: `class_uid`
    /// is `category uid * 1000 + class uid`, `category_uid` the category's uid from
    /// `categories.json` (the base event's `0` applies to the base event only).
    fn class_def(&self, name: &str) -> Def {
        let mut d = Def::default();
        let file = read(&self.find_event(name));
        self.merge(&mut d, &file, true);
        let uid = file["uid"].as_i64().expect("class uid");
        let mut category = None;
        let mut f = file;
        loop {
            if let Some(c) = f.get("category").and_then(Value::as_str) {
                category = Some(c.to_string());
                break;
            }
            match f.get("extends").and_then(Value::as_str) {
                Some(parent) => f = read(&self.find_event(parent)),
                None => break,
            }
        }
        let category = category.expect("class category");
        let cats = read(&self.root.join("categories.json"));
        let cat_uid = cats["attributes"][&category]["uid"]
            .as_i64()
            .expect("category uid");
        for (attr, value) in [
            ("class_uid", cat_uid * 1000 + uid),
            ("category_uid", cat_uid),
        ] {
            if let Some(a) = d.attrs.get_mut(attr) {
                a.enum_keys = BTreeSet::from([value.to_string()]);
            }
        }
        d
    }

    fn object_def(&self, name: &str) -> Def {
        let mut d = Def::default();
        self.merge(
            &mut d,
            &read(&self.root.join("objects").join(format!("{name}.json"))),
            false,
        );
        d
    }

    /// Every violation of `v` as an instance of the event class `class`.
    pub fn validate_event(&self, v: &Value, class: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let def = self.class_def(class);
        self.check(v, &def, "", &mut errors);
        errors
    }

    fn check(&self, v: &Value, def: &Def, at: &str, errors: &mut Vec<String>) {
        let Some(obj) = v.as_object() else {
            errors.push(format!("{at}: not an object"));
            return;
        };
        for (name, a) in &def.attrs {
            if a.requirement == "required" && !obj.contains_key(name) {
                errors.push(format!("{at}/{name}: required attribute missing"));
            }
        }
        for (kind, names) in &def.constraints {
            let n = names.iter().filter(|k| obj.contains_key(*k)).count();
            let ok = match kind.as_str() {
                "at_least_one" => n >= 1,
                "just_one" => n == 1,
                _ => true,
            };
            if !ok {
                errors.push(format!("{at}: constraint {kind} of {names:?} not met"));
            }
        }
        for (name, value) in obj {
            let path = format!("{at}/{name}");
            let Some(a) = def.attrs.get(name) else {
                errors.push(format!("{path}: not an attribute of this class or object"));
                continue;
            };
            let Some(d) = self.dict.get(name) else {
                errors.push(format!("{path}: not in dictionary.json"));
                continue;
            };
            let mut keys = a.enum_keys.clone();
            if !matches!(name.as_str(), "class_uid" | "category_uid") {
                keys.extend(enum_keys(d));
            }
            let ty = d["type"].as_str().unwrap_or("");
            if d.get("is_array").and_then(Value::as_bool) == Some(true) {
                match value.as_array() {
                    Some(items) => {
                        for (i, item) in items.iter().enumerate() {
                            self.check_value(item, ty, &keys, &format!("{path}[{i}]"), errors);
                        }
                    }
                    None => errors.push(format!("{path}: must be an array")),
                }
            } else {
                self.check_value(value, ty, &keys, &path, errors);
            }
        }
    }

    fn check_value(
        &self,
        v: &Value,
        ty: &str,
        enums: &BTreeSet<String>,
        path: &str,
        errors: &mut Vec<String>,
    ) {
        if !enums.is_empty() {
            let key = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !enums.contains(&key) {
                errors.push(format!("{path}: {key} is not one of {enums:?}"));
            }
        }
        if ty == "object" {
            if !v.is_object() {
                errors.push(format!("{path}: must be an object"));
            }
            return;
        }
        if !ty.ends_with("_t") {
            let def = self.object_def(ty);
            self.check(v, &def, path, errors);
            return;
        }
        self.check_scalar(v, ty, path, errors);
    }

    fn check_scalar(&self, v: &Value, ty: &str, path: &str, errors: &mut Vec<String>) {
        let t = self.types.get(ty).cloned().unwrap_or(Value::Null);
        let ok = match ty {
            "string_t" => v.is_string(),
            "integer_t" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "long_t" => v.is_i64() || v.is_u64(),
            "float_t" => v.is_number(),
            "boolean_t" => v.is_boolean(),
            "json_t" => true,
            _ => {
                let base = t["type"].as_str().unwrap_or("string_t").to_string();
                self.check_scalar(v, &base, path, errors);
                true
            }
        };
        if !ok {
            errors.push(format!("{path}: {v} is not a {ty}"));
            return;
        }
        if let (Some(re), Some(s)) = (t["regex"].as_str(), v.as_str())
            && !regex::Regex::new(re).expect("schema regex").is_match(s)
        {
            errors.push(format!("{path}: {s:?} does not match the {ty} pattern"));
        }
        if let (Some(max), Some(s)) = (t["max_len"].as_u64(), v.as_str())
            && s.len() as u64 > max
        {
            errors.push(format!("{path}: longer than {max}"));
        }
        if let (Some(r), Some(n)) = (t["range"].as_array(), v.as_i64())
            && (n < r[0].as_i64().unwrap_or(i64::MIN) || n > r[1].as_i64().unwrap_or(i64::MAX))
        {
            errors.push(format!("{path}: {n} out of range"));
        }
    }

    /// The caption of `value` in the enum of attribute `attr` of event class `class`.
    pub fn caption(&self, class: &str, attr: &str, value: i64) -> Option<String> {
        // The most derived definition wins; the dictionary's comes last.
        let mut files = Vec::new();
        let mut name = Some(class.to_string());
        while let Some(n) = name {
            let f = read(&self.find_event(&n));
            files.push(f["attributes"][attr].clone());
            name = f.get("extends").and_then(Value::as_str).map(str::to_string);
        }
        files.push(self.dict.get(attr).cloned().unwrap_or(Value::Null));
        files.iter().find_map(|f| {
            f["enum"][value.to_string()]["caption"]
                .as_str()
                .map(str::to_string)
        })
    }
}

fn enum_keys(v: &Value) -> BTreeSet<String> {
    v.get("enum")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}
