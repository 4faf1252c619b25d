//! The canonical event JSON itself (`schemas/event.schema.json`), for producers that already
//! normalize their records, and for re-reading nhiwatch's own `--emit events` output.
//!
//! Environment names go through the same alias normalization as decoded records
//! (`prod` → `production`). The credential must already be a fingerprint: nhiwatch cannot tell a fingerprint from a raw
//! id, so producers fingerprint with their own key (or re-feed nhiwatch output).

use super::{Ctx, Decoded, FormatError};
use crate::event::Event;

pub(crate) fn decode(obj: &str, ctx: &Ctx<'_>, out: &mut Vec<Decoded>) -> Result<(), FormatError> {
    let mut e: Event = serde_json::from_str(obj)?;
    e.tidy();
    e.environment = e.environment.as_deref().and_then(|n| ctx.env.normalize(n));
    for (field, value) in [("id", &e.id), ("identity", &e.identity), ("kind", &e.kind)] {
        if value.trim_ascii().is_empty() {
            return Err(FormatError::Invalid(field, "empty".into()));
        }
    }
    if let Some(c) = &e.credential
        && (!(16..=64).contains(&c.fp.len()) || !c.fp.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(FormatError::Invalid(
            "credential.fp",
            "must be a hex fingerprint of at least 16 digits, never a raw credential id".into(),
        ));
    }
    out.push(Ok(e));
    Ok(())
}
