//! Decoders against the fixtures in `schemas/samples/`, written from each vendor's documented
//! record format: every field of the canonical event is checked.

use nhiwatch::config::EnvironmentsConfig;
use nhiwatch::decode::{Format, RejectReason};
use nhiwatch::event::{Action, CredentialKind, Outcome, RunnerKind, Source};

use crate::util::{self, decode_str, events, fp, one, reject};

fn scopes(e: &nhiwatch::event::Event) -> Vec<&str> {
    e.scopes.iter().map(String::as_str).collect()
}

#[test]
fn github_deploy_with_environment() {
    let e = one("github/environment-deploy.json");
    assert_eq!(e.id, "5b4d7c3e-2a9f-4c61-8f0e-93d1b2a7c6e4");
    assert_eq!(e.time.to_rfc3339(), "2026-01-05T11:00:00Z");
    assert_eq!(e.source, Source::GithubActions);
    assert_eq!(e.kind, "id_token");
    assert_eq!(e.action, Action::Mint);
    assert_eq!(e.outcome, Outcome::Success);
    assert_eq!(
        e.identity,
        "github:octo-org/octo-repo/.github/workflows/deploy.yml"
    );
    assert_eq!(
        e.environment.as_deref(),
        Some("production"),
        "prod is an alias"
    );
    assert_eq!(e.runner.kind, Some(RunnerKind::Hosted));
    assert_eq!(scopes(&e), ["aud:sts.amazonaws.com"]);
    assert_eq!(e.ttl, Some(300));
    let c = e.credential.as_ref().expect("credential");
    assert_eq!(c.kind, CredentialKind::OidcJti);
    assert_eq!(
        c.fp,
        fp(
            CredentialKind::OidcJti,
            "5b4d7c3e-2a9f-4c61-8f0e-93d1b2a7c6e4"
        )
    );
    assert!(c.single_use);
    assert_eq!(e.context.repo.as_deref(), Some("octo-org/octo-repo"));
    assert_eq!(e.context.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(e.context.ref_protected, Some(true));
    assert_eq!(
        e.context.sha.as_deref(),
        Some("d6a1c0e5b3f2a4e8c9b7d1f0a2e3c4b5a6d7e8f9")
    );
    assert_eq!(e.context.actor.as_deref(), Some("octocat"));
    assert_eq!(e.context.trigger.as_deref(), Some("push"));
    assert_eq!(
        e.context.subject.as_deref(),
        Some("repo:octo-org/octo-repo:environment:prod")
    );
}

#[test]
fn github_reusable_workflow_is_attributed_to_the_caller() {
    let e = one("github/reusable-workflow-self-hosted.json");
    assert_eq!(
        e.identity,
        "github:octo-org/octo-repo/.github/workflows/ci.yml"
    );
    assert_eq!(
        e.context.workflow.as_deref(),
        Some("octo-org/octo-automation/.github/workflows/build.yml@refs/tags/v2")
    );
    assert_eq!(e.runner.kind, Some(RunnerKind::SelfHosted));
    assert_eq!(e.environment, None);
    assert_eq!(e.context.ref_protected, Some(false));
    assert_eq!(e.context.trigger.as_deref(), Some("pull_request"));
    assert_eq!(
        scopes(&e),
        ["aud:https://vault.octo.example", "aud:sigstore"]
    );
    assert_eq!(e.time.to_rfc3339(), "2026-01-06T11:00:00Z");
}

#[test]
fn github_decoded_token_with_header_reads_the_payload() {
    let e = one("github/decoded-token-with-header.json");
    assert_eq!(e.id, "77e3c1a4-5b6d-4e8f-9a0b-1c2d3e4f5a6b");
    assert_eq!(
        e.identity,
        "github:octo-org/octo-repo/.github/workflows/nightly.yml"
    );
    assert_eq!(e.context.trigger.as_deref(), Some("schedule"));
    assert_eq!(e.ttl, Some(300));
}

#[test]
fn gitlab_production_deploy() {
    let e = one("gitlab/production-deploy.json");
    assert_eq!(e.id, "235b3a54-b797-45c7-ae9a-f72d7bc6ef5b");
    assert_eq!(e.source, Source::GitlabCi);
    assert_eq!(e.action, Action::Mint);
    assert_eq!(e.identity, "gitlab:my-group/my-project/.gitlab-ci.yml");
    assert_eq!(e.environment.as_deref(), Some("production"));
    assert_eq!(e.runner.kind, Some(RunnerKind::SelfHosted));
    assert_eq!(e.runner.id.as_deref(), Some("27"));
    assert_eq!(scopes(&e), ["aud:https://vault.example.com"]);
    assert_eq!(e.ttl, Some(3600));
    let c = e.credential.as_ref().expect("credential");
    assert_eq!(
        c.fp,
        fp(
            CredentialKind::OidcJti,
            "235b3a54-b797-45c7-ae9a-f72d7bc6ef5b"
        )
    );
    assert!(c.single_use);
    assert_eq!(e.context.repo.as_deref(), Some("my-group/my-project"));
    assert_eq!(e.context.git_ref.as_deref(), Some("main"));
    assert_eq!(e.context.ref_protected, Some(true));
    assert_eq!(
        e.context.sha.as_deref(),
        Some("714a629c0b401fdce83e847fc9589983fc6f46bc")
    );
    assert_eq!(e.context.actor.as_deref(), Some("sample-user"));
    assert_eq!(e.context.trigger.as_deref(), Some("push"));
    assert_eq!(e.time.to_rfc3339(), "2026-01-05T14:00:00Z");
}

#[test]
fn gitlab_review_app_uses_the_deployment_tier() {
    let e = one("gitlab/review-app-unprotected.json");
    assert_eq!(
        e.environment.as_deref(),
        Some("development"),
        "review/* has tier development"
    );
    assert_eq!(e.context.ref_protected, Some(false));
    assert_eq!(e.runner.kind, Some(RunnerKind::Hosted));
    assert_eq!(e.runner.id.as_deref(), Some("3"));
    assert_eq!(e.context.trigger.as_deref(), Some("merge_request_event"));
    assert_eq!(
        scopes(&e),
        ["aud:https://vault.example.com", "aud:sts.amazonaws.com"]
    );
}

#[test]
fn gitlab_without_config_uri_falls_back_to_the_project() {
    let e = one("gitlab/legacy-no-config-uri.json");
    assert_eq!(e.identity, "gitlab:my-group/infra");
    assert_eq!(e.environment, None);
    assert!(e.runner.is_empty());
}

#[test]
fn vault_jwt_login_is_a_mint_and_its_request_half_is_other() {
    let ev = events("vault/jwt-login.jsonl");
    assert_eq!(ev.len(), 2);
    let (req, resp) = (&ev[0], &ev[1]);
    assert_eq!(req.action, Action::Other);
    assert_eq!(req.kind, "login_request");
    assert_eq!(req.id, resp.id, "both halves carry request.id");
    assert_eq!(resp.id, "1f0a3d7e-5c2b-4e8a-9b61-7d2c4e9f0a13");
    assert_eq!(resp.source, Source::Vault);
    assert_eq!(resp.kind, "login");
    assert_eq!(resp.action, Action::Mint);
    assert_eq!(resp.time.to_rfc3339(), "2026-01-05T14:00:01.118440Z");
    assert_eq!(resp.identity, "vault:jwt/deploy-prod");
    assert_eq!(
        resp.environment.as_deref(),
        Some("production"),
        "role deploy-prod"
    );
    assert_eq!(
        scopes(resp),
        ["vault-policy:default", "vault-policy:deploy-production"]
    );
    assert_eq!(resp.ttl, Some(900));
    let c = resp.credential.as_ref().expect("credential");
    assert_eq!(c.kind, CredentialKind::VaultAccessor);
    assert_eq!(
        c.fp,
        fp(
            CredentialKind::VaultAccessor,
            "hmac-sha256:9c1e3a5c7e9a1c3e5a7c9e1a3c5e7a9c1e3a5c7e9a1c3e5a7c9e1a3c5e7a9c1e"
        )
    );
    assert!(!c.single_use);
    assert_eq!(resp.runner.ip.as_deref(), Some("10.20.30.40"));
    assert_eq!(resp.context.resource.as_deref(), Some("auth/jwt/login"));
    assert_eq!(resp.context.repo.as_deref(), Some("my-group/my-project"));
}

#[test]
fn vault_read_with_the_token_is_a_use_of_the_same_credential() {
    let login = &events("vault/jwt-login.jsonl")[1];
    let ev = events("vault/kv-read.jsonl");
    assert_eq!(ev.len(), 2);
    let u = &ev[0];
    assert_eq!(u.action, Action::Use);
    assert_eq!(u.kind, "request");
    assert_eq!(u.id, "6c2e8a4f-0b1d-4e3c-a5f7-9d1b3c5e7f09");
    assert_eq!(u.identity, login.identity, "same identity as the mint");
    assert_eq!(
        u.credential, login.credential,
        "same fingerprint as the mint"
    );
    assert_eq!(
        u.environment.as_deref(),
        Some("production"),
        "secret/data/production/..."
    );
    assert_eq!(u.context.operation.as_deref(), Some("read"));
    assert_eq!(
        u.context.resource.as_deref(),
        Some("secret/data/production/my-project/db")
    );
    assert_eq!(u.runner.agent.as_deref(), Some("vault-action/2.7.4"));
    assert_eq!(
        ev[1].action,
        Action::Other,
        "the response half is context only"
    );
    assert_eq!(ev[1].credential, None);
}

#[test]
fn vault_approle_token_create_denied_login_and_renewal() {
    let a = one("vault/approle-login.json");
    assert_eq!(a.identity, "vault:approle/nightly-backup");
    assert_eq!(
        a.environment.as_deref(),
        Some("staging"),
        "from the backup-staging policy"
    );
    assert_eq!(a.ttl, Some(1800));

    let t = one("vault/token-create.json");
    assert_eq!(t.kind, "token_create");
    assert_eq!(t.action, Action::Mint);
    assert_eq!(t.identity, "vault:token-release-bot-child");
    assert_eq!(scopes(&t), ["vault-policy:admin", "vault-policy:default"]);
    assert_eq!(t.ttl, Some(2_764_800));
    assert_eq!(
        t.credential.as_ref().map(|c| c.fp.clone()),
        Some(fp(
            CredentialKind::VaultAccessor,
            "hmac-sha256:5c7e9a1c3e5a7c9e1a3c5e7a9c1e3a5c7e9a1c3e5a7c9e1a3c5e7a9c1e3a5c7e"
        )),
        "the new token's accessor, not the parent's"
    );

    let d = one("vault/login-denied.json");
    assert_eq!(d.action, Action::Mint);
    assert_eq!(d.outcome, Outcome::Failure);
    assert_eq!(d.identity, "vault:jwt");
    assert_eq!(d.credential, None);
    assert!(
        d.context
            .error
            .as_deref()
            .is_some_and(|e| e.contains("invalid audience"))
    );
    assert_eq!(d.runner.ip.as_deref(), Some("203.0.113.99"));

    let r = one("vault/renew-self.json");
    assert_eq!(r.kind, "renew");
    assert_eq!(r.action, Action::Other);
}

#[test]
fn vault_raw_log_mode_still_yields_fingerprints() {
    let ev = events("vault/raw-log.jsonl");
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].identity, "vault:kubernetes/payments-api");
    assert_eq!(
        ev[0].environment.as_deref(),
        Some("production"),
        "payments-read-prod policy"
    );
    assert_eq!(ev[1].action, Action::Use);
    assert_eq!(
        ev[1].environment.as_deref(),
        Some("staging"),
        "kv/data/staging/..."
    );
    assert_eq!(ev[0].credential, ev[1].credential);
    assert_eq!(
        ev[1].credential.as_ref().map(|c| c.fp.clone()),
        Some(fp(
            CredentialKind::VaultAccessor,
            "rawAccessorX7kP2mQ9vL4nR8tZ"
        ))
    );
}

#[test]
fn cloudtrail_web_identity_mint_from_github() {
    let e = one("cloudtrail/assume-role-with-web-identity.json");
    assert_eq!(e.id, "3f4e5d6c-7b8a-4918-a7b6-c5d4e3f2a1b0");
    assert_eq!(e.source, Source::Cloudtrail);
    assert_eq!(e.kind, "AssumeRoleWithWebIdentity");
    assert_eq!(e.action, Action::Mint);
    assert_eq!(e.identity, "github:octo-org/octo-repo");
    assert_eq!(
        e.environment.as_deref(),
        Some("111122223333"),
        "unmapped account id"
    );
    assert_eq!(
        scopes(&e),
        ["aws-role:arn:aws:iam::111122223333:role/github-deploy"]
    );
    assert_eq!(e.ttl, Some(3600));
    let c = e.credential.as_ref().expect("credential");
    assert_eq!(c.kind, CredentialKind::AwsAccessKey);
    assert_eq!(
        c.fp,
        fp(CredentialKind::AwsAccessKey, "ASIAQNZGKIQY7EXAMPLE")
    );
    assert_eq!(e.runner.ip.as_deref(), Some("4.148.9.201"));
    assert!(
        e.runner
            .agent
            .as_deref()
            .is_some_and(|a| a.starts_with("aws-sdk-js/3.600.0"))
    );
    assert_eq!(e.runner.name.as_deref(), Some("GitHubActions"));
    assert_eq!(
        e.context.subject.as_deref(),
        Some("repo:octo-org/octo-repo:environment:prod")
    );
    assert_eq!(e.context.account.as_deref(), Some("111122223333"));
    assert_eq!(e.context.region.as_deref(), Some("us-east-1"));
}

#[test]
fn cloudtrail_role_chaining_is_a_use_and_a_mint() {
    let ev = events("cloudtrail/assume-role-chained.json");
    assert_eq!(ev.len(), 2);
    let (u, m) = (&ev[0], &ev[1]);
    assert_eq!(u.action, Action::Use);
    assert_eq!(
        u.identity,
        "aws:arn:aws:iam::111122223333:role/github-deploy"
    );
    assert_eq!(
        u.credential.as_ref().map(|c| c.fp.clone()),
        Some(fp(CredentialKind::AwsAccessKey, "ASIAQNZGKIQY7EXAMPLE")),
        "the key minted by AssumeRoleWithWebIdentity is presented here"
    );
    assert_eq!(m.action, Action::Mint);
    assert_eq!(m.identity, u.identity);
    assert_eq!(
        m.environment.as_deref(),
        Some("444455556666"),
        "the role's account"
    );
    assert_eq!(m.ttl, Some(900), "durationSeconds given as a string");
    assert_eq!(
        scopes(m),
        [
            "aws-action:ecs:DescribeServices",
            "aws-action:ecs:UpdateService",
            "aws-policy:arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
            "aws-role:arn:aws:iam::444455556666:role/prod-deployer",
        ]
    );
    assert_eq!(
        m.credential.as_ref().map(|c| c.fp.clone()),
        Some(fp(CredentialKind::AwsAccessKey, "ASIAXCHAINEDKEY00001"))
    );
    assert_eq!(m.runner.name.as_deref(), Some("octo-repo-311"));
}

#[test]
fn cloudtrail_session_token_saml_data_event_and_denial() {
    let ev = events("cloudtrail/get-session-token.json");
    assert_eq!(
        ev.len(),
        2,
        "use of the long-term key and mint of the session key"
    );
    let m = &ev[1];
    assert_eq!(m.action, Action::Mint);
    assert_eq!(
        m.identity,
        "aws:arn:aws:iam::111122223333:user/jenkins-legacy"
    );
    assert_eq!(m.ttl, Some(43_200));
    assert!(m.scopes.is_empty());
    assert_eq!(
        ev[0].credential.as_ref().map(|c| c.fp.clone()),
        Some(fp(CredentialKind::AwsLongTermKey, "AKIAIOSFODNN7EXAMPLE"))
    );

    let s = one("cloudtrail/assume-role-with-saml.json");
    assert_eq!(s.identity, "saml:SamlExample");
    assert_eq!(s.environment.as_deref(), Some("444455556666"));
    assert_eq!(
        s.context.actor.as_deref(),
        Some("https://server.example.com/idp/shibboleth")
    );

    let g = one("cloudtrail/s3-get-object.json");
    assert_eq!(g.action, Action::Use);
    assert_eq!(g.kind, "GetObject");
    assert_eq!(
        g.identity,
        "aws:arn:aws:iam::444455556666:role/prod-deployer"
    );
    assert_eq!(g.context.resource.as_deref(), Some("s3.amazonaws.com"));
    assert_eq!(
        scopes(&g),
        ["aws-role:arn:aws:iam::444455556666:role/prod-deployer"]
    );

    let d = events("cloudtrail/access-denied.json");
    assert_eq!(d.len(), 2);
    assert_eq!(d[1].action, Action::Mint);
    assert_eq!(d[1].outcome, Outcome::Failure);
    assert_eq!(d[1].context.error.as_deref(), Some("AccessDenied"));
    assert_eq!(d[1].credential, None);
}

#[test]
fn cloudtrail_delivery_file_decodes_each_record_and_rejects_only_the_bad_ones() {
    let out = util::decode_file_with(
        &util::decoder(),
        &util::fixture("cloudtrail/delivery-file.json"),
    );
    assert_eq!(out.len(), 5);
    let ok: Vec<_> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok[0].action, Action::Mint);
    assert_eq!(
        ok[0].identity, "aws:arn:aws:iam::555566667777:role/service-role/report-generator",
        "a service assuming a role acts for the role's workload"
    );
    assert_eq!(ok[1].action, Action::Use);
    assert_eq!(ok[1].credential, ok[0].credential);
    assert_eq!(ok[2].action, Action::Other);
    assert_eq!(ok[2].kind, "ConsoleLogin");
    let rejects: Vec<_> = out.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(rejects.len(), 2);
    assert_eq!(rejects[0].reason, RejectReason::NotAnObject);
    assert_eq!(rejects[0].index, Some(3));
    assert_eq!(rejects[1].reason, RejectReason::MissingField);
    assert_eq!(rejects[1].index, Some(4));
    assert!(
        rejects[1].message.contains("eventID"),
        "{}",
        rejects[1].message
    );
}

#[test]
fn kubernetes_token_request_by_kubelet() {
    let e = one("kubernetes/tokenrequest-kubelet.json");
    assert_eq!(e.id, "5f8c3e2a-7b1d-4c9e-a6f0-2d4b8e1c3a57");
    assert_eq!(e.source, Source::Kubernetes);
    assert_eq!(e.kind, "create serviceaccounts/token");
    assert_eq!(e.action, Action::Mint);
    assert_eq!(e.identity, "k8s:payments-prod/api");
    assert_eq!(
        e.environment.as_deref(),
        Some("production"),
        "namespace payments-prod"
    );
    assert_eq!(
        e.runner.id.as_deref(),
        Some("system:node:ip-10-0-12-34.ec2.internal")
    );
    assert_eq!(e.runner.group.as_deref(), Some("system:nodes"));
    assert_eq!(e.runner.ip.as_deref(), Some("10.0.12.34"));
    assert_eq!(
        scopes(&e),
        [
            "aud:https://kubernetes.default.svc.cluster.local",
            "aud:vault"
        ]
    );
    assert_eq!(e.ttl, Some(3607));
    assert_eq!(
        e.context.bound_to.as_deref(),
        Some("Pod/api-7d9f8b6c5d-x2k4q")
    );
    assert_eq!(e.time.to_rfc3339(), "2026-01-05T09:15:02.331874Z");
    let c = e.credential.as_ref().expect("credential");
    assert_eq!(c.kind, CredentialKind::K8sCredentialId);
    assert_eq!(
        c.fp,
        fp(
            CredentialKind::K8sCredentialId,
            "JTI=8d4b2f6e-1c3a-4e5b-9f7d-0a2c4e6b8d1f"
        )
    );
}

#[test]
fn kubernetes_service_account_request_uses_the_minted_token() {
    let mint = one("kubernetes/tokenrequest-kubelet.json");
    let u = one("kubernetes/serviceaccount-request.json");
    assert_eq!(u.action, Action::Use);
    assert_eq!(u.kind, "get secrets");
    assert_eq!(u.identity, mint.identity);
    assert_eq!(
        u.credential, mint.credential,
        "credential-id links use to mint"
    );
    assert_eq!(
        u.runner.id.as_deref(),
        Some("ip-10-0-12-34.ec2.internal"),
        "node"
    );
    assert_eq!(
        u.runner.name.as_deref(),
        Some("api-7d9f8b6c5d-x2k4q"),
        "pod"
    );
    assert_eq!(u.context.operation.as_deref(), Some("get"));
    assert_eq!(u.context.namespace.as_deref(), Some("payments-prod"));
}

#[test]
fn kubernetes_other_users_stages_and_failures() {
    let ev = events("kubernetes/tokenrequest-by-serviceaccount.json");
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].action, Action::Use);
    assert_eq!(ev[0].identity, "k8s:ci/runner");
    assert_eq!(ev[1].action, Action::Mint);
    assert_eq!(ev[1].identity, "k8s:kube-system/replicaset-controller");
    assert_eq!(
        ev[1].runner.group.as_deref(),
        Some("system:serviceaccount:ci:runner")
    );
    assert_eq!(ev[1].ttl, Some(86_400));
    assert!(ev[1].scopes.is_empty(), "audiences null");
    assert_eq!(ev[1].context.bound_to, None, "unbound token");

    let u = one("kubernetes/user-list-pods.json");
    assert_eq!(u.action, Action::Other);
    assert_eq!(u.identity, "k8s-user:alice@example.com");

    let s = one("kubernetes/request-received-stage.json");
    assert_eq!(
        s.action,
        Action::Other,
        "only the final stage counts as a use"
    );

    let f = one("kubernetes/tokenrequest-forbidden.json");
    assert_eq!(f.action, Action::Mint);
    assert_eq!(f.outcome, Outcome::Failure);
    assert_eq!(f.context.error.as_deref(), Some("403 Forbidden"));
}

#[test]
fn canonical_events_are_normalized_like_decoded_ones() {
    let e = one("canonical/event.json");
    assert_eq!(e.source, Source::Custom);
    assert_eq!(e.action, Action::Job);
    assert_eq!(
        e.time.to_rfc3339(),
        "2026-01-05T11:30:00Z",
        "offset converted to UTC"
    );
    assert_eq!(e.environment.as_deref(), Some("production"));
    assert_eq!(e.context.actor, None, "blank fields dropped");
    assert_eq!(
        e.credential.as_ref().map(|c| c.fp.as_str()),
        Some("00112233445566778899aabbccddeeff")
    );
    // Re-reading nhiwatch's own output gives the same event.
    let again = serde_json::to_string(&e).expect("serialize");
    let back = decode_str(&again);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].as_ref().expect("event"), &e);
    // A raw credential id is refused.
    let raw = again.replace("00112233445566778899aabbccddeeff", "ASIAQNZGKIQY7EXAMPLE");
    assert_eq!(reject(&raw).reason, RejectReason::InvalidField);
}

#[test]
fn auto_detection_handles_every_format_in_one_stream() {
    let mixed = std::fs::read_to_string(util::fixture("mixed/quickstart.jsonl")).expect("fixture");
    let mut sources = std::collections::BTreeSet::new();
    for line in mixed.lines() {
        for r in decode_str(line) {
            sources.insert(r.expect("every quickstart record decodes").source);
        }
    }
    assert_eq!(sources.len(), 6, "{sources:?}");
}

#[test]
fn a_misleading_first_key_costs_time_not_correctness() {
    // A Vault entry whose first key is "id" (sniffed as canonical) and whose request data
    // holds Kubernetes and GitLab key names.
    let text = r#"{"id":"x","time":"2026-01-05T00:00:00Z","type":"request","auth":{"accessor":"acc-1"},"request":{"id":"r-1","path":"secret/data/dev/x","data":{"auditID":"h","project_path":"h"}}}"#;
    let out = decode_str(text);
    let e = out[0].as_ref().expect("decoded");
    assert_eq!(e.source, Source::Vault);
    assert_eq!(e.id, "r-1");
    assert_eq!(e.environment.as_deref(), Some("development"));
}

#[test]
fn forced_formats_decode_or_report_a_mismatch() {
    let d = util::decoder_with(EnvironmentsConfig::default(), Format::Kubernetes);
    let text = std::fs::read_to_string(util::fixture("kubernetes/serviceaccount-request.json"))
        .expect("fixture");
    let mut out = Vec::new();
    d.decode(text.as_bytes(), &mut out);
    assert!(out[0].is_ok());
    let gh =
        std::fs::read_to_string(util::fixture("github/environment-deploy.json")).expect("fixture");
    out.clear();
    d.decode(gh.as_bytes(), &mut out);
    let r = out[0].as_ref().expect_err("mismatch");
    assert_eq!(r.reason, RejectReason::FormatMismatch);
    assert!(r.message.contains("GitHub Actions claims"), "{}", r.message);
}

#[test]
fn bad_input_gets_a_specific_reason() {
    assert_eq!(reject(r#"{"jti":"x","#).reason, RejectReason::MalformedJson);
    let elements = decode_str("[1, 2]");
    assert_eq!(elements.len(), 2, "one reject per element");
    assert!(elements.iter().all(|r| {
        r.as_ref()
            .is_err_and(|e| e.reason == RejectReason::NotAnObject)
    }));
    assert_eq!(reject("42").reason, RejectReason::NotAnObject);
    assert_eq!(reject("nonsense").reason, RejectReason::MalformedJson);
    assert_eq!(
        reject(r#"{"hello":"world"}"#).reason,
        RejectReason::UnknownFormat
    );
    let missing = reject(
        r#"{"eventVersion":"1.08","eventTime":"2026-01-05T00:00:00Z","eventName":"GetObject","eventSource":"s3.amazonaws.com"}"#,
    );
    assert_eq!(missing.reason, RejectReason::MissingField);
    assert!(
        missing.message.contains("cloudtrail") && missing.message.contains("eventID"),
        "{}",
        missing.message
    );
    let wrong_type = reject(
        r#"{"jti":"a","repository":"o/r","job_workflow_ref":"o/r/.github/workflows/x.yml@main","iat":"yesterday"}"#,
    );
    assert_eq!(wrong_type.reason, RejectReason::InvalidField);
    assert!(
        !wrong_type.message.contains("yesterday"),
        "values are not echoed: {}",
        wrong_type.message
    );
    let epoch = reject(
        r#"{"jti":"a","repository":"o/r","job_workflow_ref":"o/r/.github/workflows/x.yml@main","iat":0}"#,
    );
    assert_eq!(epoch.reason, RejectReason::AbsurdTimestamp);
    let future = reject(
        r#"{"jti":"a","repository":"o/r","job_workflow_ref":"o/r/.github/workflows/x.yml@main","iat":4102444800}"#,
    );
    assert_eq!(future.reason, RejectReason::AbsurdTimestamp);
    let bad_time =
        reject(r#"{"time":"2026-13-45T00:00:00Z","type":"request","request":{"id":"r"}}"#);
    assert_eq!(bad_time.reason, RejectReason::InvalidField);
    assert!(bad_time.message.contains("time"), "{}", bad_time.message);
    let mut invalid_utf8 = br#"{"jti":"a"#.to_vec();
    invalid_utf8.extend([0xff, 0xfe]);
    invalid_utf8.extend(br#""}"#);
    let mut out = Vec::new();
    util::decoder().decode(&invalid_utf8, &mut out);
    assert_eq!(
        out[0].as_ref().expect_err("utf8").reason,
        RejectReason::MalformedJson
    );
}

#[test]
fn oversized_records_are_rejected_before_parsing() {
    let cfg = nhiwatch::config::DecodeConfig {
        max_record_bytes: 2048,
        ..Default::default()
    };
    let d = nhiwatch::decode::Decoder::new(
        &cfg,
        nhiwatch::fingerprint::Fingerprinter::new(util::KEY.as_bytes()).expect("key"),
        nhiwatch::environment::EnvResolver::default(),
        Format::Auto,
    );
    let big = format!(r#"{{"jti":"{}"}}"#, "x".repeat(4096));
    let mut out = Vec::new();
    d.decode(big.as_bytes(), &mut out);
    assert_eq!(
        out[0].as_ref().expect_err("too large").reason,
        RejectReason::TooLarge
    );
}

#[test]
fn user_mappings_set_environments() {
    let mut env = EnvironmentsConfig::default();
    env.aws_accounts
        .insert("444455556666".into(), "production".into());
    env.vault_paths.insert(
        "secret/data/production/my-project/".into(),
        "payments-prod".into(),
    );
    env.kubernetes_namespaces
        .insert("kube-system".into(), "platform".into());
    let d = util::decoder_with(env, Format::Auto);
    let chained = util::decode_file_with(&d, &util::fixture("cloudtrail/assume-role-chained.json"));
    let mint = chained[1].as_ref().expect("mint");
    assert_eq!(mint.environment.as_deref(), Some("production"));
    let use_ = chained[0].as_ref().expect("use");
    assert_eq!(
        use_.environment.as_deref(),
        Some("111122223333"),
        "unmapped account stays"
    );
    let kv = util::decode_file_with(&d, &util::fixture("vault/kv-read.jsonl"));
    assert_eq!(
        kv[0].as_ref().expect("use").environment.as_deref(),
        Some("payments-prod")
    );
    let k = util::decode_file_with(
        &d,
        &util::fixture("kubernetes/tokenrequest-by-serviceaccount.json"),
    );
    // A use is in the environment where the credential is presented: the target namespace.
    assert_eq!(
        k[0].as_ref().expect("use").environment.as_deref(),
        Some("platform")
    );
    assert_eq!(
        k[1].as_ref().expect("mint").environment.as_deref(),
        Some("platform")
    );
}

#[test]
fn trust_changes_are_trust_events_for_the_identity_they_admit_to() {
    // A role's trust policy rewritten by Terraform: a use of its session key, and a trust
    // event for the role naming what the policy admits and who changed it.
    let ev = events("cloudtrail/update-assume-role-policy.json");
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!(ev[0].action, Action::Use);
    assert_eq!(
        ev[0].identity,
        "aws:arn:aws:iam::444455556666:role/terraform-apply"
    );
    let t = &ev[1];
    assert_eq!(t.action, Action::Trust);
    assert_eq!(t.kind, "UpdateAssumeRolePolicy");
    assert_eq!(t.identity, "aws:arn:aws:iam::444455556666:role/deploy-prod");
    assert_eq!(
        t.context.actor.as_deref(),
        Some("aws:arn:aws:iam::444455556666:role/terraform-apply")
    );
    assert_eq!(
        scopes(t),
        [
            "trust:federated:arn:aws:iam::444455556666:oidc-provider/token.actions.githubusercontent.com",
            "trust:sub:repo:acme/api:environment:production",
            "trust:sub:repo:acme/web:environment:production",
        ]
    );
    assert_eq!(t.credential, None);

    // A new OIDC provider created with an IAM user's long-term key.
    let ev = events("cloudtrail/create-oidc-provider.json");
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!(
        ev[0].credential.as_ref().map(|c| c.kind),
        Some(CredentialKind::AwsLongTermKey)
    );
    assert_eq!(ev[1].action, Action::Trust);
    assert_eq!(
        ev[1].identity,
        "aws:arn:aws:iam::444455556666:oidc-provider/gitlab.example.com"
    );
    assert_eq!(
        ev[1].context.actor.as_deref(),
        Some("aws:arn:aws:iam::444455556666:user/ops-admin")
    );

    // A Vault auth role written: who may log in to it, minus what Vault HMAC'd.
    let v = one("vault/auth-role-write.json");
    assert_eq!(v.action, Action::Trust);
    assert_eq!(v.kind, "role_write");
    assert_eq!(v.identity, "vault:jwt/deploy-prod");
    assert_eq!(
        v.context.actor.as_deref(),
        Some("vault:approle/vault-config")
    );
    assert_eq!(v.environment.as_deref(), Some("production"));
    assert_eq!(
        scopes(&v),
        [
            "trust:bound_audiences:https://vault.example.com",
            "trust:bound_claims.project_path:acme/api",
            "trust:bound_claims.project_path:acme/web",
            "trust:user_claim:sub",
        ]
    );
    assert!(!v.scopes.iter().any(|s| s.contains("hmac")));

    // A RoleBinding: the requester's use, and a trust event for the bound service account
    // (not for the person it also binds).
    let ev = events("kubernetes/rolebinding-create.json");
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!(ev[0].action, Action::Use);
    assert_eq!(ev[0].identity, "k8s:ci/runner");
    assert_eq!(ev[1].action, Action::Trust);
    assert_eq!(ev[1].identity, "k8s:payments/api");
    assert_eq!(
        ev[1].context.actor.as_deref(),
        Some("system:serviceaccount:ci:runner")
    );
    assert_eq!(
        scopes(&ev[1]),
        [
            "trust:binding:payments/api-admin",
            "trust:role:ClusterRole/admin"
        ]
    );
}
