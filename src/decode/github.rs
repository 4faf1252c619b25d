//! GitHub Actions OIDC token claims: the decoded JWT payload GitHub documents for
//! `token.actions.githubusercontent.com` (also GitHub Enterprise Server issuers).
//!
//! Each claims record is one token minted for one job, so it is a `mint`; the `jti` is both the
//! native id and the (single-use) credential. The identity is the calling workflow file in its
//! repository (`workflow_ref` without the `@ref`), because that is the pipeline definition whose
//! behaviour is baselined; runs, attempts and branches are not identities.

use serde::Deserialize;

use super::util::{Str, lenient_bool, lenient_i64, nonblank, one_or_many, owned, strip_at_ref};
use super::{Ctx, Decoded, FormatError};
use crate::event::{Action, CredentialKind, Event, RunnerKind, Source};
use crate::time::Timestamp;

#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(borrow)]
    jti: Str<'a>,
    #[serde(borrow)]
    sub: Option<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "one_or_many")]
    aud: Vec<Str<'a>>,
    #[serde(borrow)]
    repository: Str<'a>,
    #[serde(borrow)]
    workflow_ref: Option<Str<'a>>,
    #[serde(borrow)]
    job_workflow_ref: Option<Str<'a>>,
    #[serde(borrow)]
    workflow: Option<Str<'a>>,
    #[serde(borrow)]
    environment: Option<Str<'a>>,
    #[serde(borrow)]
    runner_environment: Option<Str<'a>>,
    #[serde(rename = "ref", borrow)]
    git_ref: Option<Str<'a>>,
    #[serde(default, deserialize_with = "lenient_bool")]
    ref_protected: Option<bool>,
    #[serde(borrow)]
    sha: Option<Str<'a>>,
    #[serde(borrow)]
    event_name: Option<Str<'a>>,
    #[serde(borrow)]
    actor: Option<Str<'a>>,
    #[serde(default, deserialize_with = "lenient_i64")]
    iat: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    exp: Option<i64>,
}

pub(crate) fn decode(obj: &str, ctx: &Ctx<'_>, out: &mut Vec<Decoded>) -> Result<(), FormatError> {
    let c: Claims = serde_json::from_str(obj)?;
    let jti = c.jti.trim_ascii();
    if jti.is_empty() {
        return Err(FormatError::Invalid("jti", "empty".into()));
    }
    let repo = c.repository.trim_ascii();
    if repo.is_empty() {
        return Err(FormatError::Invalid("repository", "empty".into()));
    }
    let issued = c.iat.or(c.nbf).ok_or(FormatError::Missing("iat"))?;
    let time = Timestamp::from_unix_seconds(issued)
        .ok_or_else(|| FormatError::Invalid("iat", format!("{issued} is out of range")))?;

    let identity = identity(
        repo,
        nonblank(&c.workflow_ref),
        nonblank(&c.job_workflow_ref),
        nonblank(&c.workflow),
    )
    .ok_or(FormatError::Missing("job_workflow_ref"))?;

    let mut e = Event::new(
        jti,
        time,
        Source::GithubActions,
        "id_token",
        Action::Mint,
        identity,
    );
    e.environment = nonblank(&c.environment).and_then(|n| ctx.env.normalize(n));
    e.runner.kind = match nonblank(&c.runner_environment) {
        Some("github-hosted") => Some(RunnerKind::Hosted),
        Some("self-hosted") => Some(RunnerKind::SelfHosted),
        _ => None,
    };
    e.scopes = c
        .aud
        .iter()
        .filter(|a| !a.trim_ascii().is_empty())
        .map(|a| cat!("aud:", a.trim_ascii()))
        .collect();
    e.ttl = match c.exp {
        Some(exp) if exp >= issued => u64::try_from(exp - issued).ok(),
        _ => None,
    };
    e.credential = ctx.fp.credential(CredentialKind::OidcJti, jti, true);
    e.context.repo = Some(repo.to_string());
    e.context.git_ref = owned(&c.git_ref);
    e.context.ref_protected = c.ref_protected;
    e.context.sha = owned(&c.sha);
    e.context.workflow = owned(&c.job_workflow_ref).or_else(|| owned(&c.workflow_ref));
    e.context.actor = owned(&c.actor);
    e.context.subject = owned(&c.sub);
    e.context.trigger = owned(&c.event_name);
    out.push(Ok(e));
    Ok(())
}

/// The pipeline definition: the calling workflow file, else the executing one when it lives in
/// the same repository, else the repository and workflow name.
fn identity(
    repo: &str,
    workflow_ref: Option<&str>,
    job_workflow_ref: Option<&str>,
    workflow_name: Option<&str>,
) -> Option<String> {
    if let Some(w) = workflow_ref {
        return Some(cat!("github:", strip_at_ref(w)));
    }
    if let Some(j) = job_workflow_ref {
        let path = strip_at_ref(j);
        if path
            .strip_prefix(repo)
            .is_some_and(|rest| rest.starts_with('/'))
        {
            return Some(cat!("github:", path));
        }
        return Some(match workflow_name {
            Some(name) => cat!("github:", repo, ":", name),
            None => cat!("github:", repo),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_prefers_the_calling_workflow_file() {
        assert_eq!(
            identity(
                "o/r",
                Some("o/r/.github/workflows/a.yml@refs/heads/x"),
                Some("o/lib/.github/workflows/b.yml@v1"),
                None
            )
            .as_deref(),
            Some("github:o/r/.github/workflows/a.yml")
        );
        assert_eq!(
            identity(
                "o/r",
                None,
                Some("o/r/.github/workflows/a.yml@refs/heads/main"),
                None
            )
            .as_deref(),
            Some("github:o/r/.github/workflows/a.yml")
        );
        // A reusable workflow from another repository is not the caller's pipeline.
        assert_eq!(
            identity(
                "o/r",
                None,
                Some("o/lib/.github/workflows/b.yml@v1"),
                Some("deploy")
            )
            .as_deref(),
            Some("github:o/r:deploy")
        );
        // Same prefix but a different repository (o/r vs o/r2).
        assert_eq!(
            identity("o/r", None, Some("o/r2/.github/workflows/b.yml@v1"), None).as_deref(),
            Some("github:o/r")
        );
        assert_eq!(identity("o/r", None, None, Some("x")), None);
    }
}
