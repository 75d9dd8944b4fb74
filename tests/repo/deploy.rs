//! The shipped deployment, checked by reading it as its tools would (no Docker engine or
//! cluster runs here): the compose file parses into two pods behind a load balancer that
//! passes WebSockets, with Prometheus and provisioned Grafana; the Kubernetes manifests
//! probe the admin port and give shutdown time to drain; the image's health check is the
//! binary's own `healthcheck` command, exercised against a real server process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::process::{Server, free_port};
use serde_norway::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut value: Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Compose files use `<<: *anchor`; apply those merges as compose does.
    value.apply_merge().unwrap();
    value
}

fn str_list(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `(source, target)` of a service's volumes in short syntax.
fn volumes(service: &Value) -> Vec<(String, String)> {
    str_list(&service["volumes"])
        .into_iter()
        .map(|v| {
            let mut parts = v.split(':');
            (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_compose_file_runs_two_pods_behind_a_websocket_passing_balancer_with_monitoring() {
    let compose = yaml(&repo("deploy/compose.yaml"));
    let services = compose["services"].as_mapping().expect("services");
    let names: Vec<&str> = services.keys().filter_map(Value::as_str).collect();
    for needed in [
        "postgres",
        "redis",
        "sealpost-1",
        "sealpost-2",
        "lb",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(&needed), "no {needed} service in {names:?}");
    }
    let service = |name: &str| &compose["services"][name];

    // Redis keeps queues: append-only, fsynced every second, on a volume.
    let redis_command = str_list(&service("redis")["command"]).join(" ");
    assert!(
        redis_command.contains("--appendonly yes"),
        "{redis_command}"
    );
    assert!(
        redis_command.contains("--appendfsync everysec"),
        "{redis_command}"
    );

    // Both pods: same image build, same stores and certificates, health-checked.
    let pods = [service("sealpost-1"), service("sealpost-2")];
    assert_eq!(pods[0], pods[1], "the two pods are configured alike");
    let pod = pods[0];
    assert_eq!(
        pod["build"]["dockerfile"].as_str(),
        Some("deploy/Dockerfile")
    );
    for variable in [
        "SEALPOST_DATABASE_URL",
        "SEALPOST_REDIS_URL",
        "SEALPOST_CERTIFICATE_DIR",
    ] {
        assert!(
            pod["environment"][variable].is_string(),
            "pods lack {variable}"
        );
    }
    // Attachments in MinIO's bucket: made before the pods start, and the pods' variables
    // (with compose's `${VAR:-default}` defaults) are a configuration sealpost accepts.
    assert!(
        service("minio")["healthcheck"]["test"].is_sequence(),
        "minio has no healthcheck"
    );
    assert_eq!(
        pod["depends_on"]["minio-bucket"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
    assert_eq!(
        service("minio-bucket")["depends_on"]["minio"]["condition"].as_str(),
        Some("service_healthy")
    );
    let environment = pod["environment"].as_mapping().expect("an environment map");
    let resolved = |value: &str| match value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .and_then(|v| v.split_once(":-"))
    {
        Some((_, default)) => default.to_owned(),
        None => value.to_owned(),
    };
    let env: BTreeMap<String, String> = environment
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), resolved(v.as_str()?))))
        .collect();
    let config = sealpost::config::Config::load_with(None, |name| env.get(name).cloned())
        .expect("the pods' environment is a valid configuration");
    let s3 = config.attachments.s3.expect("the pods use a bucket");
    assert_eq!(s3.endpoint, "http://minio:9000");
    let bucket_made = str_list(&service("minio-bucket")["command"]).join(" ");
    assert!(bucket_made.contains(&format!("mc mb --ignore-existing store/{}", s3.bucket)));
    let minio = &service("minio")["environment"];
    assert_eq!(
        minio["MINIO_ROOT_USER"].as_str(),
        environment
            .get("SEALPOST_S3_ACCESS_KEY_ID")
            .and_then(Value::as_str)
    );
    assert_eq!(
        minio["MINIO_ROOT_PASSWORD"].as_str(),
        environment
            .get("SEALPOST_S3_SECRET_ACCESS_KEY")
            .and_then(Value::as_str)
    );

    let healthcheck = str_list(&pod["healthcheck"]["test"]).join(" ");
    assert!(
        healthcheck.contains("sealpost healthcheck"),
        "{healthcheck}"
    );
    assert!(healthcheck.contains(":9090/health/ready"), "{healthcheck}");
    for dependency in ["postgres", "redis"] {
        assert_eq!(
            pod["depends_on"][dependency]["condition"].as_str(),
            Some("service_healthy")
        );
    }
    for name in ["postgres", "redis"] {
        assert!(
            service(name)["healthcheck"]["test"].is_sequence(),
            "{name} has no healthcheck"
        );
    }

    // Every relative bind mount exists in the repository; named volumes are declared.
    let declared = compose["volumes"].as_mapping().expect("named volumes");
    for name in &names {
        for (source, _) in volumes(service(name)) {
            if source.starts_with('.') {
                assert!(
                    repo("deploy").join(&source).exists(),
                    "{name} mounts missing {source}"
                );
            } else {
                assert!(
                    declared.contains_key(source.as_str()),
                    "{name}: undeclared {source}"
                );
            }
        }
    }

    // The balancer passes WebSocket upgrades to both pods.
    let lb = volumes(service("lb"));
    let (conf, _) = lb
        .iter()
        .find(|(_, target)| target == "/etc/nginx/nginx.conf")
        .expect("nginx.conf is mounted");
    let nginx = std::fs::read_to_string(repo("deploy").join(conf)).unwrap();
    for line in [
        "server sealpost-1:8080",
        "server sealpost-2:8080",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
    ] {
        assert!(nginx.contains(line), "nginx.conf lacks {line:?}");
    }
    assert!(
        str_list(&service("lb")["ports"])
            .iter()
            .any(|p| p.ends_with(":8080"))
    );

    // Prometheus scrapes both pods' admin ports and loads the rules.
    let prometheus = yaml(&repo("deploy/prometheus/prometheus.yml"));
    let targets = str_list(&prometheus["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(targets, ["sealpost-1:9090", "sealpost-2:9090"]);
    assert_eq!(str_list(&prometheus["rule_files"]), ["alerts.yml"]);
    assert!(
        volumes(service("prometheus")).contains(&("./prometheus".into(), "/etc/prometheus".into()))
    );

    // Grafana: provisioning and dashboards mounted where the provisioning file looks.
    let grafana = volumes(service("grafana"));
    let mounted = |target: &str| {
        grafana
            .iter()
            .find(|(_, t)| t == target)
            .map(|(s, _)| repo("deploy").join(s))
            .unwrap_or_else(|| panic!("grafana mounts nothing at {target}"))
    };
    let provisioning = mounted("/etc/grafana/provisioning");
    let provider = yaml(&provisioning.join("dashboards/sealpost.yaml"));
    let dashboards_path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let dashboards = mounted(dashboards_path);
    let count = std::fs::read_dir(&dashboards)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert!(count >= 2, "{count} dashboards");
    let datasource = yaml(&provisioning.join("datasources/prometheus.yaml"));
    assert_eq!(
        datasource["datasources"][0]["uid"].as_str(),
        Some("prometheus")
    );
    assert_eq!(
        datasource["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
}

#[test]
fn the_dockerfile_builds_in_two_stages_and_runs_unprivileged_with_its_own_health_check() {
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    let from: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        from,
        ["FROM rust:1-bookworm AS build", "FROM debian:bookworm-slim"]
    );
    assert!(dockerfile.contains("cargo build --release --locked"));
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert_ne!(user, "USER root");
    assert_ne!(user, "USER 0");
    let healthcheck = dockerfile
        .split("HEALTHCHECK")
        .nth(1)
        .expect("a HEALTHCHECK");
    assert!(healthcheck.contains(r#""healthcheck", "--url", "http://127.0.0.1:9090/health/live""#));
    let ignored = std::fs::read_to_string(repo(".dockerignore")).expect("a .dockerignore");
    assert!(
        ignored.lines().any(|l| l.trim() == "target"),
        "target/ stays out of the context"
    );
    let installed = dockerfile
        .lines()
        .find(|l| l.contains("apt-get install"))
        .expect("an install line");
    assert!(
        !installed.contains("curl"),
        "the runtime image needs no curl"
    );
}

#[tokio::test]
async fn the_healthcheck_command_passes_on_a_live_server_and_fails_when_nothing_answers() {
    let server = Server::start(&[]).await;
    let run = |url: String| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_sealpost"))
                .args(["healthcheck", "--url", &url])
                .output()
                .unwrap()
        })
    };
    let live = run(format!("{}/health/live", server.admin)).await.unwrap();
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );
    let missing = run(format!("{}/no-such-page", server.admin)).await.unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let started = std::time::Instant::now();
    let down = run(format!("http://127.0.0.1:{}/health/live", free_port()))
        .await
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Every document of every manifest in `deploy/k8s`, by kind and name.
fn manifests() -> BTreeMap<(String, String), Value> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(repo("deploy/k8s")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kind = value["kind"].as_str().expect("a kind").to_owned();
            let name = value["metadata"]["name"].as_str().unwrap_or("").to_owned();
            all.insert((kind, name), value);
        }
    }
    all
}

#[test]
fn the_kubernetes_manifests_probe_the_admin_port_and_leave_time_to_drain() {
    let all = manifests();
    let get = |kind: &str, name: &str| {
        all.get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let deployment = get("Deployment", "sealpost");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let ports: BTreeMap<&str, i64> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports.get("admin"), Some(&9090));
    assert_eq!(ports.get("api"), Some(&8080));
    for (probe, path) in [
        ("readinessProbe", "/health/ready"),
        ("livenessProbe", "/health/live"),
        ("startupProbe", "/health/live"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            get["port"].as_str(),
            Some("admin"),
            "{probe} must use the admin port"
        );
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));

    // The configuration file the pods mount is one sealpost accepts.
    let config_text = get("ConfigMap", "sealpost-config")["data"]["sealpost.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = std::env::temp_dir().join(format!("sealpost-k8s-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&file, config_text).unwrap();
    let config = sealpost::config::Config::load_with(Some(&file), |name| match name {
        "SEALPOST_DATABASE_URL" => Some("postgres://u:p@db/sealpost".into()),
        "SEALPOST_REDIS_URL" => Some("redis://redis:6379".into()),
        _ => None,
    });
    std::fs::remove_file(&file).unwrap();
    let config = config.expect("the ConfigMap's sealpost.toml loads");
    assert_eq!(config.admin_listen.port(), 9090);
    assert_eq!(config.listen.port(), 8080);

    // SIGKILL comes after terminationGracePeriodSeconds: it must cover the preStop pause
    // and the whole shutdown timeout.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pre_stop = str_list(&container["lifecycle"]["preStop"]["exec"]["command"]);
    let pause: u64 = match pre_stop.as_slice() {
        [sleep, secs] if sleep == "sleep" => secs.parse().unwrap(),
        other => panic!("unexpected preStop {other:?}"),
    };
    assert!(
        grace > pause + config.shutdown_timeout.as_secs(),
        "grace {grace} s <= preStop {pause} s + shutdown {} s",
        config.shutdown_timeout.as_secs()
    );

    let labels = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(
        &deployment["spec"]["template"]["metadata"]["labels"],
        labels
    );
    assert_eq!(
        &get("PodDisruptionBudget", "sealpost")["spec"]["selector"]["matchLabels"],
        labels
    );
    assert_eq!(&get("Service", "sealpost")["spec"]["selector"], labels);
    assert_eq!(
        get("Service", "sealpost-admin")["spec"]["ports"][0]["targetPort"].as_str(),
        Some("admin")
    );
    let hpa = get("HorizontalPodAutoscaler", "sealpost");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("sealpost")
    );
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    let secrets: Vec<&str> = container["envFrom"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| e["secretRef"]["name"].as_str())
        .collect();
    assert_eq!(secrets, ["sealpost-stores"]);
    let example = get("Secret", "sealpost-stores");
    assert!(example["stringData"]["SEALPOST_DATABASE_URL"].is_string());

    // kustomization.yaml names every manifest but the example Secret.
    let kustomization = yaml(&repo("deploy/k8s/kustomization.yaml"));
    let resources = str_list(&kustomization["resources"]);
    for resource in &resources {
        assert!(repo("deploy/k8s").join(resource).exists(), "{resource}");
    }
    assert!(!resources.iter().any(|r| r.contains("secret")));
}

#[test]
fn every_dashboard_panel_queries_the_provisioned_datasource_and_has_its_own_place() {
    let provisioned = yaml(&repo(
        "deploy/grafana/provisioning/datasources/prometheus.yaml",
    ));
    let uid = provisioned["datasources"][0]["uid"].as_str().unwrap();
    for entry in std::fs::read_dir(repo("deploy/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
        let mut ids = std::collections::BTreeSet::new();
        let mut places = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = &panel["title"];
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{title}: duplicate id"
            );
            let grid = &panel["gridPos"];
            let place = (grid["x"].as_u64().unwrap(), grid["y"].as_u64().unwrap());
            assert!(
                places.insert(place),
                "{title} overlaps another panel at {place:?}"
            );
            assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24);
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(panel["datasource"]["uid"].as_str(), Some(uid), "{title}");
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title} has no query");
            for target in targets {
                assert_eq!(target["datasource"]["uid"].as_str(), Some(uid), "{title}");
            }
        }
    }
}
