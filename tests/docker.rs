//! docker/ cannot be run here (no Docker engine), so its files are checked for agreement
//! with each other and with the code: images pinned, the container user owns what it
//! writes, every path the configuration names is mounted (secrets and audit on named
//! volumes), passwords match the logins the database creates, the schema is the one
//! `phigate synth` prints, the example users exist, Prometheus scrapes phigate's admin
//! port, and the dashboard's metrics exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &str) -> String {
    std::fs::read_to_string(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn compose() -> Yaml {
    YamlLoader::load_from_str(&read("docker/compose.yaml"))
        .unwrap()
        .remove(0)
}

/// A service's mapping with `<<: *anchor` merged in.
fn service(doc: &Yaml, name: &str) -> BTreeMap<String, Yaml> {
    let s = doc["services"][name]
        .as_hash()
        .unwrap_or_else(|| panic!("no service {name}"));
    let mut out = BTreeMap::new();
    if let Some(base) = s.get(&Yaml::String("<<".into())).and_then(Yaml::as_hash) {
        for (k, v) in base {
            out.insert(k.as_str().unwrap().to_owned(), v.clone());
        }
    }
    for (k, v) in s {
        if k.as_str() != Some("<<") {
            out.insert(k.as_str().unwrap().to_owned(), v.clone());
        }
    }
    out
}

/// (source, target) of a service's volumes.
fn mounts(svc: &BTreeMap<String, Yaml>) -> Vec<(String, String)> {
    svc.get("volumes")
        .and_then(Yaml::as_vec)
        .map(|v| {
            v.iter()
                .map(|m| {
                    let parts: Vec<&str> = m.as_str().unwrap().split(':').collect();
                    (parts[0].to_owned(), parts[1].to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The mount of `svc` holding container path `p`, if any.
fn mount_of(svc: &BTreeMap<String, Yaml>, p: &Path) -> Option<(String, String)> {
    mounts(svc)
        .into_iter()
        .filter(|(_, t)| p.starts_with(t))
        .max_by_key(|(_, t)| t.len())
}

fn pinned(image: &str) -> bool {
    let tag = image.rsplit_once(':').map_or("", |(_, t)| t);
    tag != "latest" && tag.chars().any(|c| c.is_ascii_digit())
}

const PHIGATE_SERVICES: [&str; 3] = ["keys", "phigate", "seed"];

#[test]
fn images_are_pinned_and_the_container_user_is_not_root() {
    let doc = compose();
    for (name, _) in doc["services"].as_hash().unwrap() {
        let svc = service(&doc, name.as_str().unwrap());
        let image = svc["image"].as_str().unwrap();
        assert!(
            svc.contains_key("build") || pinned(image),
            "{image} is not pinned"
        );
    }
    let dockerfile = read("docker/Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    assert!(froms.iter().all(|f| pinned(f)), "{froms:?}");
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    let uid = user.split(':').next().unwrap();
    assert!(dockerfile.contains(&format!("chown -R {uid}:{uid} /var/lib/phigate")));
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l == "target/"),
        ".dockerignore must exclude target/"
    );
    // what the build copies exists
    for l in dockerfile.lines().filter_map(|l| l.strip_prefix("COPY ")) {
        if !l.starts_with("--from") {
            for src in l.split_whitespace().rev().skip(1) {
                assert!(root().join(src).exists(), "COPY {src}: no such path");
            }
        }
    }
}

#[test]
fn mounts_volumes_and_configuration_agree() {
    let doc = compose();
    let declared: Vec<String> = doc["volumes"]
        .as_hash()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let dockerfile = read("docker/Dockerfile");
    for name in doc["services"].as_hash().unwrap().keys() {
        let svc = service(&doc, name.as_str().unwrap());
        for (src, target) in mounts(&svc) {
            if src.starts_with('.') {
                assert!(
                    root().join("docker").join(&src).exists(),
                    "bind mount {src} does not exist"
                );
            } else {
                assert!(declared.contains(&src), "volume {src} is not declared");
                if PHIGATE_SERVICES.contains(&name.as_str().unwrap()) {
                    assert!(
                        dockerfile.contains(&target),
                        "the image does not create {target}, so the volume would be root's"
                    );
                }
            }
        }
    }
    let phigate = service(&doc, "phigate");
    let (src, _) = mounts(&phigate)
        .into_iter()
        .find(|(_, t)| t == "/etc/phigate/phigate.toml")
        .expect("the configuration is mounted");
    assert_eq!(src, "./phigate.toml");
    let config = phigate::config::Config::load(&root().join("docker/phigate.toml")).unwrap();
    // what phigate writes and must keep lives on named volumes, also for the keys job
    for p in [
        config.keyring_file(),
        config.audit_dir(),
        config.audit_key_file(),
        config.session_key_file(),
    ] {
        let (src, _) =
            mount_of(&phigate, &p).unwrap_or_else(|| panic!("{} is not on a volume", p.display()));
        assert!(
            declared.contains(&src),
            "{} is on a bind mount, not a named volume",
            p.display()
        );
    }
    let keys = service(&doc, "keys");
    assert!(mount_of(&keys, &config.keyring_file()).is_some_and(|(s, _)| declared.contains(&s)));
    // what phigate reads comes from the repository
    let host = |p: PathBuf| -> PathBuf {
        let (src, target) =
            mount_of(&phigate, &p).unwrap_or_else(|| panic!("{} is not mounted", p.display()));
        let rest = p.strip_prefix(&target).unwrap();
        let src = root().join("docker").join(src);
        if rest.as_os_str().is_empty() {
            src
        } else {
            src.join(rest)
        }
    };
    let policies = host(config.policies_dir());
    let set = phigate::policy::PolicySet::load(&policies).unwrap();
    let logins = read("docker/initdb/01-logins.sql");
    for (user, file) in [
        (
            &config.upstream.user,
            config.upstream.password_file.as_ref().unwrap(),
        ),
        (
            config.upstream.admin_user.as_ref().unwrap(),
            config.upstream.admin_password_file.as_ref().unwrap(),
        ),
    ] {
        let password = std::fs::read_to_string(host(file.relative())).unwrap();
        assert!(
            logins.contains(&format!(
                "CREATE ROLE {user} LOGIN PASSWORD '{}'",
                password.trim()
            )),
            "{user}'s password file does not match docker/initdb/01-logins.sql"
        );
    }
    // the seed loads as a user of the mounted policies whose role writes every table
    let seed = service(&doc, "seed");
    let command: Vec<&str> = seed["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let url = command[command.iter().position(|c| *c == "--through").unwrap() + 1];
    let user = url
        .trim_start_matches("postgres://")
        .split(':')
        .next()
        .unwrap();
    let role = &set
        .user(user)
        .unwrap_or_else(|| panic!("{user} is not in the policies"))
        .role;
    assert!(
        set.role(role).unwrap().bypass_row_policies,
        "{user} cannot write every clinic"
    );
    assert!(url.contains(&format!(
        "@phigate:{}/{}",
        config.listen.address.port(),
        config.upstream.database
    )));
    // published ports are phigate's
    let ports: Vec<&str> = phigate["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for port in [
        config.listen.address.port(),
        config.admin.address.unwrap().port(),
    ] {
        assert!(
            ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
            "port {port} not published"
        );
    }
    assert!(
        read("docker/prometheus.yml")
            .contains(&format!("phigate:{}", config.admin.address.unwrap().port()))
    );
}

#[test]
fn the_database_is_seeded_with_the_synth_schema() {
    let file = read("docker/initdb/02-schema.sql");
    let body = file
        .split_once("SET ROLE ehr_owner;\n")
        .expect("runs as the owner")
        .1;
    assert_eq!(
        body,
        phigate::synth::schema_sql(),
        "regenerate it with `phigate synth --schema`"
    );
    let grants = read("docker/initdb/03-grants.sql");
    assert!(grants.contains("TO phigate_svc"));
}

#[test]
fn the_dashboard_shows_metrics_phigate_exports() {
    let metrics = phigate::metrics::Metrics::new();
    metrics.refused("42501");
    let exported = metrics.render();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("docker/grafana/dashboards/phigate.json")).unwrap();
    let mut seen = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("phigate_"))
            {
                let base = name.trim_end_matches("_bucket");
                assert!(
                    exported.contains(&format!("# TYPE {base} ")),
                    "{name} is not a phigate metric"
                );
                seen += 1;
            }
        }
    }
    assert!(seen >= 8);
    let provisioning = read("docker/grafana/provisioning/dashboards/phigate.yaml");
    let doc = compose();
    let grafana = service(&doc, "grafana");
    let path = provisioning
        .lines()
        .find_map(|l| l.trim().strip_prefix("path: "))
        .unwrap();
    assert!(
        mounts(&grafana)
            .iter()
            .any(|(s, t)| t == path && s == "./grafana/dashboards")
    );
}
