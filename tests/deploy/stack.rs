//! `deploy/production.yml`, parsed as YAML, against the invariants of
//! DESIGN §9: only nginx publishes (80 and 443); PostgreSQL and Redis sit
//! on an internal-only network; every secret is external and versioned;
//! every service is read-only, unprivileged and without capabilities; the
//! application trusts forwarded headers from the internal subnet only and
//! is given longer to stop than it takes to drain.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_norway::Value;

use crate::support::repo_file;

const SERVICES: &[&str] = &["app", "postgres", "redis", "nginx"];

fn stack() -> Value {
    serde_norway::from_str(&repo_file("deploy/production.yml")).expect("production.yml is YAML")
}

fn service<'a>(stack: &'a Value, name: &str) -> &'a Value {
    let s = &stack["services"][name];
    assert!(s.is_mapping(), "service {name} exists");
    s
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|seq| {
            seq.iter()
                .map(|x| x.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Network names of a service (list or mapping form).
fn networks(v: &Value) -> BTreeSet<String> {
    match &v["networks"] {
        Value::Sequence(_) => strings(&v["networks"]).into_iter().collect(),
        Value::Mapping(m) => m.keys().map(|k| k.as_str().unwrap().to_string()).collect(),
        _ => BTreeSet::new(),
    }
}

/// Published host ports of a service (short "80:8080" or long form).
fn published_ports(v: &Value) -> Vec<u64> {
    let Some(ports) = v["ports"].as_sequence() else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|p| match p {
            Value::Mapping(_) => p["published"]
                .as_u64()
                .or_else(|| p["published"].as_str().and_then(|s| s.parse().ok()))
                .expect("a published port"),
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                assert!(parts.len() >= 2, "{s:?} publishes a host port explicitly");
                parts[parts.len() - 2].parse().expect("a port number")
            }
            other => panic!("unexpected port entry {other:?}"),
        })
        .collect()
}

#[test]
fn only_nginx_publishes_ports_and_exactly_80_and_443() {
    let stack = stack();
    let names: BTreeSet<String> = stack["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, expected, "the stack's services");

    for name in ["app", "postgres", "redis"] {
        let s = service(&stack, name);
        assert!(s["ports"].is_null(), "{name} publishes no port");
        assert!(s["expose"].is_null(), "{name} exposes nothing extra");
        assert!(
            s["network_mode"].is_null(),
            "{name} uses the stack's networks"
        );
    }
    let mut ports = published_ports(service(&stack, "nginx"));
    ports.sort_unstable();
    assert_eq!(ports, vec![80, 443]);
}

#[test]
fn databases_sit_on_an_internal_network_and_nginx_alone_on_the_edge() {
    let stack = stack();
    let internal = &stack["networks"]["internal"];
    assert_eq!(internal["internal"].as_bool(), Some(true), "internal: true");
    assert!(
        internal["driver"].is_null() || internal["driver"].as_str() == Some("overlay"),
        "overlay under stack deploy (the default), bridge under compose"
    );
    assert!(
        stack["networks"]["edge"].as_mapping().is_some(),
        "an edge network"
    );

    for name in SERVICES {
        assert!(
            networks(service(&stack, name)).contains("internal"),
            "{name} is on the internal network"
        );
    }
    for name in ["postgres", "redis"] {
        let nets = networks(service(&stack, name));
        assert_eq!(
            nets.into_iter().collect::<Vec<_>>(),
            vec!["internal"],
            "{name} is on the internal network only"
        );
    }
    let on_edge: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|name| networks(service(&stack, name)).contains("edge"))
        .collect();
    assert_eq!(on_edge, vec!["nginx"], "nginx alone on the edge network");

    // Every network but `internal` that a service joins is declared, and
    // the application's way out publishes nothing (checked above).
    for name in SERVICES {
        for net in networks(service(&stack, name)) {
            assert!(
                stack["networks"][net.as_str()].is_mapping(),
                "{name}: network {net} is declared"
            );
        }
    }
}

#[test]
fn every_secret_is_external_and_versioned() {
    let stack = stack();
    let secrets = stack["secrets"].as_mapping().expect("a secrets section");
    assert!(!secrets.is_empty());
    for (key, def) in secrets {
        let key = key.as_str().unwrap();
        assert_eq!(def["external"].as_bool(), Some(true), "{key} is external");
        assert!(def["file"].is_null(), "{key} is not read from a file");
        let name = def["name"].as_str().unwrap_or_default();
        let version = name
            .strip_prefix(&format!("kraliki_{key}_v"))
            .unwrap_or_else(|| panic!("{key}: name {name:?} is kraliki_{key}_v<N>"));
        assert!(
            !version.is_empty() && version.chars().all(|c| c.is_ascii_digit()),
            "{key}: version of {name:?}"
        );
    }

    // Every secret a service mounts is declared, and lands under
    // /run/secrets/<name>, the name the loader looks for.
    for name in SERVICES {
        let Some(list) = service(&stack, name)["secrets"].as_sequence() else {
            continue;
        };
        for entry in list {
            let (source, target) = match entry {
                Value::String(s) => (s.clone(), s.clone()),
                Value::Mapping(_) => (
                    entry["source"].as_str().unwrap().to_string(),
                    entry["target"]
                        .as_str()
                        .or(entry["source"].as_str())
                        .unwrap()
                        .to_string(),
                ),
                other => panic!("{name}: unexpected secret entry {other:?}"),
            };
            assert!(
                secrets.contains_key(source.as_str()),
                "{name}: secret {source} is declared"
            );
            assert_eq!(
                target, source,
                "{name}: {source} is mounted as its own name"
            );
        }
    }

    // The application gets every key it needs from the secrets folder.
    let app = service(&stack, "app");
    let mounted: BTreeSet<String> = app["secrets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap().to_string())
        .collect();
    for needed in [
        "jwt_signing_key",
        "session_key",
        "csrf_key",
        "audit_key",
        "data_key",
        "database_url",
        "redis_url",
    ] {
        assert!(mounted.contains(needed), "app mounts {needed}");
    }
    assert_eq!(
        app["environment"]["KRALIKI_SECRETS_DIR"].as_str(),
        Some("/run/secrets")
    );
    // No secret value, or secret-carrying variable, in the environment.
    for (k, v) in app["environment"].as_mapping().unwrap() {
        let k = k.as_str().unwrap();
        let v = v.as_str().unwrap_or_default();
        assert!(
            !kraliki::secrets::SECRET_NAMES
                .iter()
                .any(|s| k.eq_ignore_ascii_case(&kraliki::secrets::env_var_name(s))),
            "app: secret {k} in a plain variable"
        );
        assert!(
            !v.contains("://") || k == "KRALIKI_PUBLIC_URL",
            "app: {k}={v}"
        );
    }
    let pg = service(&stack, "postgres");
    assert_eq!(
        pg["environment"]["POSTGRES_PASSWORD_FILE"].as_str(),
        Some("/run/secrets/postgres_password")
    );
    assert!(pg["environment"]["POSTGRES_PASSWORD"].is_null());
}

#[test]
fn every_service_is_read_only_without_new_privileges_or_capabilities() {
    let stack = stack();
    let allowed_caps: &[(&str, &[&str])] = &[
        ("app", &[]),
        (
            "postgres",
            &["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"],
        ),
        ("redis", &["SETGID", "SETUID"]),
        ("nginx", &["NET_BIND_SERVICE", "CHOWN", "SETGID", "SETUID"]),
    ];
    for (name, allowed) in allowed_caps {
        let s = service(&stack, name);
        assert_eq!(s["read_only"].as_bool(), Some(true), "{name}: read_only");
        assert!(
            strings(&s["security_opt"]).contains(&"no-new-privileges:true".to_string()),
            "{name}: no-new-privileges"
        );
        assert_eq!(strings(&s["cap_drop"]), vec!["ALL"], "{name}: cap_drop ALL");
        for cap in strings(&s["cap_add"]) {
            assert!(allowed.contains(&cap.as_str()), "{name}: cap_add {cap}");
        }
        assert!(s["privileged"].is_null(), "{name}: not privileged");
        assert!(
            s["pid"].is_null() && s["ipc"].is_null(),
            "{name}: own namespaces"
        );
        assert!(
            s["healthcheck"]["test"]
                .as_sequence()
                .is_some_and(|t| !t.is_empty()),
            "{name}: a health check"
        );
        assert!(
            s["deploy"]["resources"]["limits"]["memory"]
                .as_str()
                .is_some(),
            "{name}: a memory limit"
        );
        assert!(
            s["deploy"]["resources"]["limits"]["cpus"]
                .as_str()
                .is_some(),
            "{name}: a CPU limit"
        );
        // A read-only root needs somewhere to write temporary files.
        let tmpfs_targets: Vec<&str> = s["volumes"]
            .as_sequence()
            .map(|v| {
                v.iter()
                    .filter(|m| m["type"].as_str() == Some("tmpfs"))
                    .map(|m| m["target"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert!(tmpfs_targets.contains(&"/tmp"), "{name}: tmpfs /tmp");
        // No bind mount of a host path.
        for m in s["volumes"].as_sequence().into_iter().flatten() {
            assert_ne!(m["type"].as_str(), Some("bind"), "{name}: bind mount");
            if let Some(short) = m.as_str() {
                assert!(!short.starts_with('/'), "{name}: bind mount {short}");
            }
        }
    }

    let pg_tmpfs = &service(&stack, "postgres")["volumes"];
    assert!(
        pg_tmpfs
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| m["type"].as_str() == Some("tmpfs")
                && m["target"].as_str() == Some("/var/run/postgresql")),
        "postgres: tmpfs /var/run/postgresql"
    );
}

#[test]
fn the_application_runs_as_1001_with_two_replicas_and_its_health_check() {
    let stack = stack();
    let app = service(&stack, "app");
    assert_eq!(app["user"].as_str(), Some("1001:1001"));
    assert_eq!(app["image"].as_str(), Some("kraliki:latest"));
    assert_eq!(app["deploy"]["replicas"].as_u64(), Some(2));
    assert_eq!(
        strings(&app["healthcheck"]["test"]),
        vec!["CMD", "/usr/local/bin/kraliki", "healthcheck"]
    );
    let env = &app["environment"];
    assert_eq!(env["KRALIKI_ENV"].as_str(), Some("production"));
    assert_eq!(env["KRALIKI_LISTEN"].as_str(), Some("0.0.0.0:3018"));

    // nginx proxies to the application's replicas by service name.
    let nginx = service(&stack, "nginx");
    assert_eq!(
        nginx["environment"]["UPSTREAMS"].as_str(),
        Some("server app:3018;")
    );
    for image in ["postgres", "redis"] {
        let img = service(&stack, image)["image"].as_str().unwrap();
        assert!(
            img.starts_with(&format!("{image}:")) && !img.ends_with(":latest"),
            "{image}: pinned major version, got {img}"
        );
    }
}

#[test]
fn redis_requires_a_password_read_from_its_secret_file() {
    let stack = stack();
    let redis = service(&stack, "redis");
    let command = strings(&redis["command"]).join(" ");
    assert!(command.contains("--appendonly yes"), "{command}");
    assert!(
        command.contains("requirepass $$(cat /run/secrets/redis_password)"),
        "{command}"
    );
    assert!(
        !command.contains("--requirepass"),
        "the password never goes on redis-server's command line"
    );
    assert!(strings(&redis["secrets"]).contains(&"redis_password".to_string()));
}

/// The server's shutdown grace: `SHUTDOWN_GRACE` in `src/startup.rs`, 30 s.
/// Kept here rather than imported because it may become the setting
/// `http.shutdown_grace_secs`, with the same default, which the stack
/// leaves alone.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A Compose duration (Go syntax: `35s`, `1m30s`, `1h`, `500ms`, `1.5s`).
fn compose_duration(text: &str) -> Duration {
    let mut rest = text.trim();
    assert!(!rest.is_empty(), "an empty duration");
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end]
            .parse()
            .unwrap_or_else(|_| panic!("{text:?} is not a duration"));
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            unit => panic!("{text:?}: unknown unit {unit:?}"),
        };
        rest = &rest[unit_end..];
        total += Duration::from_secs_f64(number * seconds);
    }
    total
}

#[test]
fn compose_durations_are_read_like_docker_reads_them() {
    assert_eq!(compose_duration("35s"), Duration::from_secs(35));
    assert_eq!(compose_duration("1m30s"), Duration::from_secs(90));
    assert_eq!(compose_duration("2h"), Duration::from_secs(7200));
    assert_eq!(compose_duration("1.5s"), Duration::from_millis(1500));
    assert_eq!(compose_duration("30s500ms"), Duration::from_millis(30_500));
}

#[test]
fn the_application_is_given_longer_to_stop_than_it_takes_to_drain() {
    let stack = stack();
    let app = service(&stack, "app");
    // Docker sends SIGTERM, then SIGKILL once stop_grace_period is over
    // (10 s when unset): it must outlast the drain, or requests still in
    // flight are cut off.
    let grace = app["stop_grace_period"]
        .as_str()
        .expect("the application sets stop_grace_period");
    let grace = compose_duration(grace);
    assert!(
        grace > SHUTDOWN_GRACE,
        "stop_grace_period {grace:?} must outlast the server's {SHUTDOWN_GRACE:?} drain"
    );
}

#[test]
fn the_application_believes_forwarded_headers_from_the_internal_subnet_only() {
    let stack = stack();
    let subnets: BTreeSet<ipnet::IpNet> = stack["networks"]["internal"]["ipam"]["config"]
        .as_sequence()
        .expect("the internal network declares its subnet")
        .iter()
        .map(|c| {
            let subnet = c["subnet"].as_str().expect("a subnet");
            subnet
                .parse()
                .unwrap_or_else(|_| panic!("{subnet:?} is a CIDR"))
        })
        .collect();
    assert!(!subnets.is_empty());

    // Read the value as the server reads it.
    let value = service(&stack, "app")["environment"]["KRALIKI_TRUSTED_PROXIES"]
        .as_str()
        .expect("KRALIKI_TRUSTED_PROXIES is set");
    let env = [("KRALIKI_TRUSTED_PROXIES".to_string(), value.to_string())].into();
    let settings = kraliki::config::load(None, &env, &Default::default())
        .expect("the server accepts KRALIKI_TRUSTED_PROXIES");
    let trusted: BTreeSet<ipnet::IpNet> = settings
        .trusted_proxies
        .iter()
        .map(|p| kraliki::config::parse_proxy(p).expect("an address or CIDR"))
        .collect();
    // nginx reaches the application from there, and only there.
    assert_eq!(trusted, subnets, "KRALIKI_TRUSTED_PROXIES is {value:?}");
    assert!(
        trusted.iter().all(|net| net.prefix_len() > 0),
        "never every address"
    );
}
