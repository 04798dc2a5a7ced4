//! `deploy/Dockerfile` and `.dockerignore`, read as text (no Docker engine
//! is needed, or available, to run these).

use crate::support::repo_file;

/// Instructions of a Dockerfile: line continuations joined, comments and
/// blank lines dropped; each as (INSTRUCTION, rest).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            current.push_str(start);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((keyword.to_ascii_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

/// The instructions of each stage, split at `FROM`.
fn stages(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for ins in instructions(text) {
        if ins.0 == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(ins);
    }
    stages
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_a_health_check() {
    let text = repo_file("deploy/Dockerfile");
    let stages = stages(&text);
    assert!(stages.len() >= 2, "multi-stage: {} stage(s)", stages.len());

    // Every stage is named, and the builder builds exactly what is locked.
    for stage in &stages {
        let from = &stage[0].1;
        assert!(
            from.to_ascii_uppercase().contains(" AS "),
            "FROM … AS name: {from}"
        );
    }
    let builder = &stages[0];
    assert!(
        builder[0].1.starts_with("rust:1-bookworm "),
        "{}",
        builder[0].1
    );
    assert!(
        builder
            .iter()
            .any(|(k, r)| k == "RUN" && r.contains("cargo build --release --locked")),
        "the builder runs cargo build --release --locked"
    );

    // The runtime stage: distroless, no shell tools, runs as 1001:1001.
    let runtime = stages.last().unwrap();
    assert!(
        runtime[0]
            .1
            .starts_with("gcr.io/distroless/cc-debian12:nonroot "),
        "{}",
        runtime[0].1
    );
    for (keyword, rest) in runtime {
        assert_ne!(keyword, "RUN", "no RUN in the shell-less runtime stage");
        for tool in ["curl", "wget"] {
            assert!(!rest.contains(tool), "{tool} in the runtime stage: {rest}");
        }
    }
    let find = |k: &str| -> Vec<&String> {
        runtime
            .iter()
            .filter(|(kw, _)| kw == k)
            .map(|(_, r)| r)
            .collect()
    };
    assert_eq!(find("USER"), vec!["1001:1001"], "USER 1001:1001, once");
    assert_eq!(find("EXPOSE"), vec!["3018"]);
    let env = find("ENV")
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(env.contains("KRALIKI_ENV=production"), "{env}");
    assert!(env.contains("KRALIKI_LISTEN=0.0.0.0:3018"), "{env}");
    let health = find("HEALTHCHECK");
    assert_eq!(health.len(), 1, "one HEALTHCHECK");
    assert!(
        health[0].ends_with(r#"CMD ["/usr/local/bin/kraliki", "healthcheck"]"#),
        "{}",
        health[0]
    );
    assert_eq!(
        find("ENTRYPOINT"),
        vec![r#"["/usr/local/bin/kraliki"]"#],
        "exec form"
    );
    // The user is the last word on who runs the process: nothing after it
    // switches back.
    let user_at = runtime.iter().position(|(k, _)| k == "USER").unwrap();
    assert!(runtime[user_at + 1..].iter().all(|(k, _)| k != "USER"));
}

#[test]
fn dockerignore_keeps_local_secrets_and_build_output_out_of_the_context() {
    let text = repo_file(".dockerignore");
    let rules: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // An allow-list: everything is excluded first, then the build inputs
    // are let back in.
    assert_eq!(rules.first(), Some(&"*"), "{rules:?}");
    for needed in ["!Cargo.toml", "!Cargo.lock", "!src/", "!migrations/"] {
        assert!(rules.contains(&needed), "{needed} in {rules:?}");
    }
    for never in ["data", "target", ".git", "deploy", "env"] {
        assert!(
            !rules
                .iter()
                .any(|r| r.starts_with('!') && r.contains(never)),
            "{never} must stay out of the build context"
        );
    }
}
