//! The deployment files agree with the gate: the Kubernetes ConfigMaps hold configurations the gate accepts, the
//! kustomizations name files that exist, probes and ports match, the Dockerfile keeps its contract, and the systemd
//! unit's sandbox allows what its comments offer.
//! (CI also runs hadolint on the Dockerfile and kubernetes-validate on the manifests.)

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
        "../base/configmap.yaml",
        "../base/secret.yaml",
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

#[test]
fn kubernetes_manifests_are_consistent() {
    for dir in ["deploy/kubernetes/base", "deploy/kubernetes/redis"] {
        let k = read(&format!("{dir}/kustomization.yaml"));
        for line in k
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("- ") || l.starts_with("- path:"))
        {
            let file = line.trim_start_matches("- path:").trim_start_matches("- ").trim();
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(file);
            assert!(
                path.exists(),
                "{dir}/kustomization.yaml names {file}, which does not exist"
            );
        }
    }
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
