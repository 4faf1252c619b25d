//! GitLab CI `id_token` claims: the decoded payload of the ID tokens a job requests with the
//! `id_tokens` keyword (the same claim set GitLab's JWT auth to Vault sees).
//!
//! Each claims record is a `mint`; `jti` is the native id and the single-use credential. The
//! identity is the pipeline definition: `ci_config_ref_uri` without host and `@ref`
//! (`gitlab:acme/api/.gitlab-ci.yml`), falling back to the project path when the instance is too
//! old to send it. The environment prefers the user's name for it when that is a known alias,
//! then GitLab's own `deployment_tier` (which is already a tier such as `production`), then the
//! raw environment name.

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
    project_path: Str<'a>,
    #[serde(borrow)]
    ci_config_ref_uri: Option<Str<'a>>,
    #[serde(borrow)]
    environment: Option<Str<'a>>,
    #[serde(borrow)]
    deployment_tier: Option<Str<'a>>,
    #[serde(default, deserialize_with = "lenient_i64")]
    runner_id: Option<i64>,
    #[serde(borrow)]
    runner_environment: Option<Str<'a>>,
    #[serde(rename = "ref", borrow)]
    git_ref: Option<Str<'a>>,
    #[serde(default, deserialize_with = "lenient_bool")]
    ref_protected: Option<bool>,
    #[serde(borrow)]
    sha: Option<Str<'a>>,
    #[serde(borrow)]
    pipeline_source: Option<Str<'a>>,
    #[serde(borrow)]
    user_login: Option<Str<'a>>,
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
    let project = c.project_path.trim_ascii();
    if project.is_empty() {
        return Err(FormatError::Invalid("project_path", "empty".into()));
    }
    let issued = c.iat.or(c.nbf).ok_or(FormatError::Missing("iat"))?;
    let time = Timestamp::from_unix_seconds(issued)
        .ok_or_else(|| FormatError::Invalid("iat", format!("{issued} is out of range")))?;

    let identity = match nonblank(&c.ci_config_ref_uri) {
        Some(uri) => cat!("gitlab:", pipeline_definition(uri)),
        None => cat!("gitlab:", project),
    };
    let mut e = Event::new(
        jti,
        time,
        Source::GitlabCi,
        "id_token",
        Action::Mint,
        identity,
    );
    e.environment = environment(ctx, nonblank(&c.environment), nonblank(&c.deployment_tier));
    e.runner.kind = match nonblank(&c.runner_environment) {
        Some("gitlab-hosted") => Some(RunnerKind::Hosted),
        Some("self-hosted") => Some(RunnerKind::SelfHosted),
        _ => None,
    };
    e.runner.id = c.runner_id.map(|id| id.to_string());
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
    e.context.repo = Some(project.to_string());
    e.context.git_ref = owned(&c.git_ref);
    e.context.ref_protected = c.ref_protected;
    e.context.sha = owned(&c.sha);
    e.context.workflow = owned(&c.ci_config_ref_uri);
    e.context.actor = owned(&c.user_login);
    e.context.subject = owned(&c.sub);
    e.context.trigger = owned(&c.pipeline_source);
    out.push(Ok(e));
    Ok(())
}

/// `gitlab.example.com/grp/proj//.gitlab-ci.yml@refs/heads/main` → `grp/proj/.gitlab-ci.yml`.
fn pipeline_definition(uri: &str) -> String {
    let path = strip_at_ref(uri);
    // The first segment is the instance host.
    let path = match path.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') => rest,
        _ => path,
    };
    path.replace("//", "/")
}

fn environment(ctx: &Ctx<'_>, name: Option<&str>, tier: Option<&str>) -> Option<String> {
    if let Some(name) = name
        && let Some(canonical) = ctx.env.alias(name)
    {
        return Some(canonical.to_string());
    }
    match tier {
        Some(t) if !t.eq_ignore_ascii_case("other") => ctx.env.normalize(t),
        _ => name.and_then(|n| ctx.env.normalize(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_definition_drops_host_and_ref() {
        assert_eq!(
            pipeline_definition(
                "gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main"
            ),
            "my-group/my-project/.gitlab-ci.yml"
        );
        assert_eq!(
            pipeline_definition("gitlab.com/a/b/c//ci/deploy.yml@refs/tags/v1.2"),
            "a/b/c/ci/deploy.yml"
        );
        assert_eq!(
            pipeline_definition("localhost:3000/a/b//.gitlab-ci.yml@x"),
            "a/b/.gitlab-ci.yml"
        );
    }
}
