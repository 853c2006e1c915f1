//! The deploy files, checked as far as this machine allows (no container engine, no
//! cluster): the systemd units with `systemd-analyze verify`; the Kubernetes manifests and
//! the compose file against their schemas (`deploy/validate/validate.sh`: kubernetes-validate,
//! strict, and the compose-spec JSON schema), with broken copies that must be rejected; and
//! the manifests for what a schema cannot say: pinned images, hardening and the server
//! options they set.

use std::path::Path;
use std::process::Command;

fn deploy(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Runs `deploy/validate/validate.sh` with these arguments.
fn validate(args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/validate/validate.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    // Exit status 2 is "could not install the validators": never a pass, never a skip.
    assert_ne!(
        out.status.code(),
        Some(2),
        "validate.sh could not install its tools: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn deploy_files_pass_kubernetes_and_compose_schemas() {
    let out = validate(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("all valid"), "{stdout}{stderr}");
}

/// A copy of a deploy file with one edit, which must change it.
fn mutated(dir: &Path, file: &str, from: &str, to: &str) -> std::path::PathBuf {
    let text = deploy(file);
    assert!(text.contains(from), "{file} has no '{from}' to break");
    let name = Path::new(file).file_name().unwrap();
    // Named by the edit, so each case has a file of its own.
    let tag: String = to.chars().filter(char::is_ascii_alphanumeric).collect();
    let path = dir.join(format!("{tag}-{}", name.to_string_lossy()));
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    path
}

#[test]
fn schema_validation_rejects_broken_deploy_files() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // A misspelt field, which Kubernetes would silently drop without strict validation.
        (
            "kubernetes",
            mutated(
                dir.path(),
                "kubernetes/server.yaml",
                "readOnlyRootFilesystem: true",
                "readOnlyRootFileSystem: true",
            ),
            "readOnlyRootFileSystem",
        ),
        // A wrong type.
        (
            "kubernetes",
            mutated(
                dir.path(),
                "kubernetes/relay.yaml",
                "minReplicas: 2",
                "minReplicas: two",
            ),
            "two",
        ),
        // An unknown service key.
        (
            "compose",
            mutated(
                dir.path(),
                "docker-compose.yml",
                "    profiles:",
                "    profile:",
            ),
            "profile",
        ),
        // A wrong type in compose.
        (
            "compose",
            mutated(
                dir.path(),
                "docker-compose.yml",
                "stop_grace_period: 20s",
                "stop_grace_period: [20s]",
            ),
            "stop_grace_period",
        ),
    ];
    for (kind, path, named) in cases {
        let out = validate(&[kind, path.to_str().unwrap()]);
        // kubernetes-validate reports on standard output, the compose check on standard error.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{}: {said}", path.display());
        assert!(
            said.contains("ERROR") && said.contains(named),
            "{}: {said}",
            path.display()
        );
    }
}

#[test]
fn systemd_units_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is needed (apt-get install systemd)"
    );
    let dir = std::env::temp_dir().join(format!("vexil-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for unit in ["vexil-server.service", "vexil-relay.service"] {
        // `verify` checks that ExecStart is executable: point it at a binary that exists.
        let text = deploy(&format!("systemd/{unit}"))
            .replace(
                "/usr/local/bin/vexil-server",
                env!("CARGO_BIN_EXE_vexil-server"),
            )
            .replace(
                "/usr/local/bin/vexil-relay",
                env!("CARGO_BIN_EXE_vexil-server"),
            );
        let path = dir.join(unit);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The manifest's documents, without comments.
fn documents(text: &str) -> Vec<String> {
    text.split("\n---\n")
        .map(|d| {
            d.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|d| !d.trim().is_empty())
        .collect()
}

fn kind(doc: &str) -> &str {
    doc.lines()
        .find_map(|l| l.strip_prefix("kind: "))
        .unwrap_or_else(|| panic!("a document without kind:\n{doc}"))
        .trim()
}

fn check_manifest(file: &str, kinds: &[&str]) -> Vec<String> {
    let docs = documents(&deploy(file));
    let found: Vec<&str> = docs.iter().map(|d| kind(d)).collect();
    assert_eq!(found, kinds, "{file}");
    for d in &docs {
        assert!(
            d.contains("apiVersion: ") && d.contains("metadata:") && d.contains("  name: "),
            "{file}:\n{d}"
        );
        for image in d.lines().filter_map(|l| l.trim().strip_prefix("image: ")) {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(
                !tag.is_empty() && tag != "latest",
                "{file}: image '{image}' is not pinned"
            );
        }
        if kind(d) == "Deployment" {
            for needed in [
                "readinessProbe:",
                "livenessProbe:",
                "resources:",
                "requests:",
                "limits:",
                "runAsNonRoot: true",
                "readOnlyRootFilesystem: true",
                "allowPrivilegeEscalation: false",
            ] {
                assert!(d.contains(needed), "{file}: the Deployment lacks {needed}");
            }
            assert!(
                !d.contains("value: vxa_") && !d.contains("value: vxr_"),
                "{file}: a secret inline"
            );
        }
    }
    docs
}

#[test]
fn kubernetes_manifests_are_complete_pinned_and_hardened() {
    let server = check_manifest(
        "kubernetes/server.yaml",
        &["Deployment", "Service", "PodDisruptionBudget"],
    );
    check_manifest(
        "kubernetes/relay.yaml",
        &[
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
        ],
    );
    // Every variable the server manifest sets is one the server reads.
    let help = Command::new(env!("CARGO_BIN_EXE_vexil-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let mut seen = 0;
    for line in server[0].lines() {
        if let Some(rest) = line.trim().strip_prefix("- { name: VEXIL_") {
            let var = format!("VEXIL_{}", rest.split(',').next().unwrap().trim());
            let read_as = var.strip_suffix("_FILE").unwrap_or(&var);
            assert!(help.contains(read_as), "the server does not read {var}");
            if var.ends_with("_FILE") {
                assert!(
                    vexil_server::cli::SECRET_FILES
                        .iter()
                        .any(|(_, v)| *v == read_as),
                    "{var} is not a secret file variable"
                );
            }
            seen += 1;
        }
    }
    assert!(seen >= 4, "{seen} variables found");
}

#[test]
fn compose_pins_its_images_and_mounts_files_that_exist() {
    let compose = deploy("docker-compose.yml");
    let mut images = 0;
    for line in compose.lines().map(str::trim) {
        if let Some(image) = line.strip_prefix("image: ") {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(
                !tag.is_empty() && tag != "latest",
                "docker-compose.yml: image '{image}' is not pinned"
            );
            images += 1;
        }
        // Bind mounts of repository files: `- ./path:/in/container[:ro]`.
        if let Some(mount) = line.strip_prefix("- ./") {
            let local = mount.split(':').next().unwrap();
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy")
                .join(local);
            assert!(
                path.exists(),
                "docker-compose.yml mounts {local}, which does not exist"
            );
        }
    }
    assert_eq!(images, 5, "postgres, server, relay, prometheus, grafana");
    for service in ["postgres:", "server:", "relay:", "prometheus:", "grafana:"] {
        assert!(
            compose.contains(&format!("\n  {service}\n")),
            "no {service} service"
        );
    }
}

#[test]
fn compose_prometheus_config_and_alerts_pass_promtool() {
    let promtool = Path::new("/usr/bin/promtool");
    assert!(
        promtool.exists(),
        "promtool is needed (apt-get install prometheus)"
    );
    let dir = tempfile::tempdir().unwrap();
    let alerts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability/alerts.yml");
    let config = deploy("compose/prometheus.yml")
        .replace("/etc/prometheus/alerts.yml", &alerts.to_string_lossy());
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
