//! The deployment files agree with the gate: the Kubernetes ConfigMaps hold configurations the gate accepts, the
//! kustomizations name files that exist, probes and ports match, the Dockerfile keeps its contract, and the systemd
//! unit's sandbox allows what its comments offer.
//! (CI also runs hadolint on the Dockerfile and kubernetes-validate on the manifests, and on what `kubectl kustomize`
//! builds of each kustomization where a recent kubectl is installed.)

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The TOML inside a ConfigMap's `logto-gate.toml: |` block, with secret files swapped for inline test values
/// and, with `app_id`, the app id placeholder replaced as an operator must.
fn embedded_toml(configmap: &str, app_id: Option<&str>) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in configmap.lines() {
        if line.trim_start().starts_with("logto-gate.toml: |") {
            inside = true;
            continue;
        }
        if inside {
            if !line.is_empty() && !line.starts_with("    ") {
                break;
            }
            out.push_str(line.strip_prefix("    ").unwrap_or(line));
            out.push('\n');
        }
    }
    out.lines()
        .map(|l| {
            if let (true, Some(id)) = (l.starts_with("app_id"), app_id) {
                format!("app_id = \"{id}\"")
            } else if l.starts_with("app_secret_file") {
                "app_secret = \"test\"".to_owned()
            } else if l.starts_with("secret_file") {
                "secret = \"0123456789abcdef0123456789abcdef\"".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn kubernetes_configmaps_are_configurations_the_gate_accepts() {
    for (rel, redis) in [
        ("deploy/kubernetes/base/configmap.yaml", false),
        ("deploy/kubernetes/redis/configmap.yaml", true),
        ("deploy/kubernetes/sidecar/configmap.yaml", false),
    ] {
        let text = read(rel);
        assert!(
            text.contains("app_secret_file = \"/run/secrets/logto-gate/app_secret\""),
            "{rel}"
        );
        assert!(
            text.contains("secret_file = \"/run/secrets/logto-gate/session_secret\""),
            "{rel}"
        );
        // As shipped, the app id is a placeholder the gate refuses by name.
        let refused = logto_gate::Config::from_toml_str(&embedded_toml(&text, None), Vec::new())
            .expect_err("the placeholder app id is refused");
        assert!(
            refused
                .0
                .iter()
                .any(|l| l.starts_with("logto.app_id: still the placeholder")),
            "{refused}"
        );
        let config = logto_gate::Config::from_toml_str(&embedded_toml(&text, Some("k3m1x0appid")), Vec::new())
            .unwrap_or_else(|e| panic!("{rel} holds an invalid configuration:\n{e}"));
        assert!(
            matches!(config.server.listen, logto_gate::config::Listen::Tcp(a) if a.port() == 4180),
            "{rel}"
        );
        assert_eq!(
            config.session.store == logto_gate::config::StoreKind::Redis,
            redis,
            "{rel}"
        );
        assert!(
            config.server.shutdown_timeout.as_secs() < 30,
            "shorter than terminationGracePeriodSeconds"
        );
        assert_eq!(
            config.server.workers, 1,
            "{rel}: workers match the container's CPU limit of 1"
        );
        // 32 MiB at rest and 25 KiB per idle HTTP/2 connection (bench/README.md) within the 128Mi limit.
        let max = config.server.max_connections.expect("max_connections is set");
        assert!(
            32 * 1024 + max * 25 <= 128 * 1024,
            "{rel}: {max} connections exceed 128Mi"
        );
    }
    let deployment = read("deploy/kubernetes/base/deployment.yaml");
    assert!(
        deployment.contains("cpu: \"1\""),
        "the gate's CPU limit is the workers count"
    );
    assert!(
        deployment.contains("memory: 128Mi"),
        "the gate's memory limit bounds max_connections"
    );
}

/// The manifests name the image the release workflow publishes, and the sidecar patch adds the same gate as the
/// base example (image, config path, probes, the port its Service patch targets).
#[test]
fn manifests_use_the_published_image_and_the_sidecar_patch_matches_the_base() {
    let published = "ghcr.io/logto-gate/logto-gate:0.1.0";
    let workflow = read(".github/workflows/release.yml");
    assert!(
        workflow.contains("ghcr.io/${{ github.repository_owner }}/logto-gate"),
        "the workflow pushes to ghcr.io"
    );
    assert!(workflow.contains("linux/amd64,linux/arm64"));
    for target in ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"] {
        assert!(workflow.contains(target), "{target}");
    }
    let base = read("deploy/kubernetes/base/deployment.yaml");
    let patch = read("deploy/kubernetes/sidecar/add-logto-gate.yaml");
    for file in [&base, &patch] {
        assert!(file.contains(&format!("image: {published}")));
        assert!(file.contains("args: [\"--config\", \"/etc/logto-gate/logto-gate.toml\"]"));
        assert!(file.contains("path: /_logto/readyz") && file.contains("path: /_logto/healthz"));
    }
    assert!(patch.contains("name: gate-http"));
    assert!(read("deploy/kubernetes/sidecar/service-to-gate.yaml").contains("value: gate-http"));
    let k = read("deploy/kubernetes/sidecar/kustomization.yaml");
    for file in [
        "add-logto-gate.yaml",
        "service-to-gate.yaml",
        "configmap.yaml",
        "networkpolicy.yaml",
    ] {
        assert!(k.contains(file), "{file}");
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/kubernetes/sidecar")
                .join(file)
                .exists(),
            "{file}"
        );
    }
}

/// The sidecar's NetworkPolicy lets into the app's pods only what the gate listens on: it selects the pods of the
/// Deployment it patches and admits the gate's named ports, the app's own in no rule, and the gate's port from the
/// Ingress controller's namespace only (the gate believes the pod network's forwarding fields); so does the base's. A Service is no boundary (any
/// pod reaches a pod's address), so without it the app answers every pod in the cluster, with whatever identity
/// fields they send. No kustomization applies a Secret: `kubectl apply -k` would overwrite the one the README has
/// the operator create with placeholders.
#[test]
fn the_sidecar_admits_only_the_gates_ports_and_no_kustomization_applies_a_secret() {
    let policy = read("deploy/kubernetes/sidecar/networkpolicy.yaml");
    let app = read("deploy/kubernetes/sidecar/example-app/deployment.yaml");
    let patch = read("deploy/kubernetes/sidecar/add-logto-gate.yaml");
    // The lines indented below the last line of `after`.
    let labels = |text: &str, after: &str| -> Vec<String> {
        let from = text.find(after).unwrap_or_else(|| panic!("`{after}` in {text}"));
        let last = after.lines().last().unwrap_or_default();
        let indent = last.len() - last.trim_start().len();
        text[from + after.len()..]
            .lines()
            .skip(1)
            .take_while(|l| l.len() - l.trim_start().len() > indent)
            .map(|l| l.trim().to_owned())
            .collect()
    };
    let selected = labels(&policy, "podSelector:\n    matchLabels:");
    let pod = labels(&app, "template:\n    metadata:\n      labels:");
    assert_eq!(selected, vec!["app.kubernetes.io/name: my-app".to_owned()]);
    assert_eq!(selected, pod, "the policy selects the patched Deployment's pods");
    assert!(policy.contains("policyTypes: [\"Ingress\"]"));
    let admitted: Vec<&str> = policy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- port: "))
        .collect();
    assert_eq!(admitted, ["gate-http", "gate-metrics"]);
    for (name, port) in [("gate-http", "4180"), ("gate-metrics", "9090")] {
        assert!(
            patch.contains(&format!("- name: {name}\n              containerPort: {port}")),
            "the gate container declares {name}"
        );
    }
    let config = read("deploy/kubernetes/sidecar/configmap.yaml");
    assert!(config.contains("listen = \"0.0.0.0:4180\"") && config.contains("metrics_listen = \"0.0.0.0:9090\""));
    let from = |namespace: &str, port: &str| {
        format!(
            "    - from:\n        - namespaceSelector:\n            matchLabels:\n              \
             kubernetes.io/metadata.name: {namespace}\n      ports:\n        - port: {port}\n"
        )
    };
    // The gate believes the pod network's X-Forwarded-*: only the Ingress controller may connect.
    assert!(policy.contains(&from("ingress-nginx", "gate-http")), "{policy}");
    assert!(policy.contains(&from("monitoring", "gate-metrics")), "{policy}");
    let base = read("deploy/kubernetes/base/networkpolicy.yaml");
    assert!(base.contains(&from("ingress-nginx", "4180")), "{base}");
    assert!(base.contains(&from("monitoring", "9090")), "{base}");
    assert_eq!(
        base.matches("- port: ").count(),
        2,
        "the app's port is admitted nowhere: {base}"
    );
    for dir in ["base", "redis", "sidecar", "sidecar/example-app"] {
        let k = read(&format!("deploy/kubernetes/{dir}/kustomization.yaml"));
        for entry in kustomization_entries(&k) {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/kubernetes")
                .join(dir)
                .join(&entry);
            if path.is_file() {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(!text.contains("kind: Secret"), "{dir}/{entry} applies a Secret");
            }
        }
    }
}

/// Before the app exists in Logto the compose file gives the gate empty values (so `docker compose up -d logto`
/// works); a gate started with them stops at once, naming each key to set.
#[test]
fn the_compose_gate_without_its_env_names_the_missing_keys() {
    let toml = read("deploy/compose/logto-gate.toml");
    let env = [
        "LOGTO_GATE_LOGTO__APP_ID",
        "LOGTO_GATE_LOGTO__APP_SECRET",
        "LOGTO_GATE_SESSION__SECRET",
    ]
    .map(|k| (k.to_owned(), String::new()));
    let err = logto_gate::Config::from_toml_str(&toml, env).expect_err("refused");
    for key in [
        "logto.app_id: missing",
        "logto.app_secret: missing",
        "session.secret: missing",
    ] {
        assert!(err.0.iter().any(|l| l.starts_with(key)), "{key} in {err}");
    }
    let compose = read("deploy/compose/docker-compose.yml");
    assert!(!compose.contains(":?"), "no variable is required at interpolation time");
}

/// What a kustomization loads: its `resources` and `components` entries and its patches' `path`s.
fn kustomization_entries(kustomization: &str) -> Vec<String> {
    let mut section = "";
    let mut entries = Vec::new();
    for line in kustomization.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if !line.starts_with(' ') && !line.starts_with('-') {
            section = line.split(':').next().unwrap_or("");
            continue;
        }
        let item = line.trim().trim_start_matches("- ");
        let item = item.split(" #").next().unwrap_or(item).trim();
        match section {
            "resources" | "components" if line.trim_start().starts_with("- ") => entries.push(item.to_owned()),
            "patches" if item.starts_with("path:") => entries.push(item["path:".len()..].trim().to_owned()),
            _ => {}
        }
    }
    entries
}

/// Every kustomization loads only what kustomize's default load restrictor lets it (`kubectl apply -k` fails
/// otherwise): files in or below its own folder, and other folders only as kustomizations of their own.
#[test]
fn kustomizations_load_only_what_kustomize_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in [
        "deploy/kubernetes/base",
        "deploy/kubernetes/redis",
        "deploy/kubernetes/sidecar",
        "deploy/kubernetes/sidecar/example-app",
    ] {
        let entries = kustomization_entries(&read(&format!("{dir}/kustomization.yaml")));
        assert!(!entries.is_empty(), "{dir}: nothing read from its kustomization");
        for entry in entries {
            let path = root.join(dir).join(&entry);
            assert!(
                path.exists(),
                "{dir}/kustomization.yaml names {entry}, which does not exist"
            );
            if path.is_dir() {
                assert!(
                    path.join("kustomization.yaml").is_file(),
                    "{dir}/kustomization.yaml names the folder {entry}, which has no kustomization.yaml"
                );
            } else {
                assert!(
                    !entry.split('/').any(|part| part == ".."),
                    "{dir}/kustomization.yaml loads the file {entry} from outside its folder: kustomize refuses it"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} entries");
}

#[test]
fn kubernetes_manifests_are_consistent() {
    let d = read("deploy/kubernetes/base/deployment.yaml");
    for must in [
        "path: /_logto/healthz",
        "path: /_logto/readyz",
        "containerPort: 4180",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "terminationGracePeriodSeconds: 30",
        "mountPath: /run/secrets/logto-gate",
        "mountPath: /etc/logto-gate",
    ] {
        assert!(d.contains(must), "deployment.yaml lacks `{must}`");
    }
    let s = read("deploy/kubernetes/base/service.yaml");
    assert!(
        s.contains("targetPort: http") && !s.contains("8080"),
        "the Service exposes the gate's port only"
    );
}

/// The systemd unit's sandbox lets the gate reach an app on a Unix socket, which its comment and README offer (a
/// `RestrictAddressFamilies` without `AF_UNIX` would fail every connect with "address family not supported").
#[test]
fn the_systemd_unit_lets_the_gate_reach_an_app_on_a_unix_socket() {
    let unit = read("deploy/systemd/logto-gate.service");
    let families: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("RestrictAddressFamilies="))
        .flat_map(str::split_whitespace)
        .collect();
    for needed in ["AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(
            families.contains(&needed),
            "RestrictAddressFamilies lacks {needed}: {families:?}"
        );
    }
    assert!(
        unit.contains("SupplementaryGroups="),
        "the unit says how to reach the app's socket"
    );
}

/// The socket units pass the gate one stream socket each: it refuses two for one place (`listening.rs`), and a
/// datagram socket is no listener. The redirect's is known by the name the gate looks for, and passed to the
/// gate's service.
#[test]
fn the_systemd_socket_units_pass_one_stream_socket_each() {
    for (file, listen) in [
        ("deploy/systemd/logto-gate.socket", "ListenStream=4180"),
        ("deploy/systemd/logto-gate-http-redirect.socket", "ListenStream=80"),
    ] {
        let unit = read(file);
        let listens: Vec<&str> = unit.lines().filter(|l| l.starts_with("Listen")).collect();
        assert_eq!(listens, [listen], "{file}");
        assert!(
            !unit.contains("\nAccept=yes"),
            "{file}: the gate accepts its connections itself"
        );
    }
    let redirect = read("deploy/systemd/logto-gate-http-redirect.socket");
    for line in ["FileDescriptorName=http_redirect_listen", "Service=logto-gate.service"] {
        assert!(redirect.lines().any(|l| l == line), "the redirect socket lacks {line}");
    }
    assert!(
        !read("deploy/systemd/logto-gate.socket").contains("FileDescriptorName="),
        "the clients' socket keeps systemd's name: any name but the side listeners' is the clients'"
    );
}

#[test]
fn dockerfile_keeps_its_contract() {
    let d = read("Dockerfile");
    for must in [
        "AS build",
        "cargo fetch --locked",
        "FROM gcr.io/distroless/cc-debian12:nonroot",
        "EXPOSE 4180",
        "USER 65532:65532",
        "COPY config/logto-gate.toml /etc/logto-gate/logto-gate.toml",
        "ENV LOGTO_GATE_CONFIG=/etc/logto-gate/logto-gate.toml",
    ] {
        assert!(d.contains(must), "Dockerfile lacks `{must}`");
    }
    let ignore = read(".dockerignore");
    assert!(
        ignore.contains("target/") && ignore.contains("node_modules"),
        "the build context stays small"
    );
}

#[test]
fn the_compose_demo_configuration_is_complete_with_its_environment() {
    let toml = read("deploy/compose/logto-gate.toml");
    let env = vec![
        ("LOGTO_GATE_LOGTO__APP_ID".to_owned(), "app-id-from-console".to_owned()),
        (
            "LOGTO_GATE_LOGTO__APP_SECRET".to_owned(),
            "secret-from-console".to_owned(),
        ),
        (
            "LOGTO_GATE_SESSION__SECRET".to_owned(),
            "a-session-secret-of-at-least-32-bytes!!".to_owned(),
        ),
    ];
    let config = logto_gate::Config::from_toml_str(&toml, env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.logto.issuer, "http://localhost:3001/oidc");
    let compose = read("deploy/compose/docker-compose.yml");
    for must in [
        "LOGTO_GATE_LOGTO__APP_ID",
        "LOGTO_GATE_LOGTO__APP_SECRET",
        "LOGTO_GATE_SESSION__SECRET",
        "\"4180:4180\"",
    ] {
        assert!(compose.contains(must), "docker-compose.yml lacks {must}");
    }
}
