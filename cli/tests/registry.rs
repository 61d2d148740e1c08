//! Registry, resolve, tree and install through the real binary.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

struct Project {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Project {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let project = Self { _tmp: tmp, dir };
        for key in ["registry", "acme"] {
            project.cmd().args(["key", "generate", "--out", key, "--unencrypted"]).assert().success();
        }
        project
            .cmd()
            .args(["registry", "init", "reg", "--key", "registry.key", "--publisher", "acme.pub"])
            .assert()
            .success();
        project
    }

    fn cmd(&self) -> Command {
        let mut command = Command::cargo_bin("escx").unwrap();
        command
            .current_dir(&self.dir)
            .env("ESCX_STATE_DIR", self.dir.join("state"))
            .env_remove("ESCX_PASSPHRASE");
        command
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn publish(&self, name: &str, version: &str, dependencies: &str) {
        let src = self.path(&format!("src-{name}-{version}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("manifest.toml"),
            format!("[package]\nname = \"acme/{name}\"\nversion = \"{version}\"\ndescription = \"{name} thermal\"\n[dependencies]\n{dependencies}"),
        )
        .unwrap();
        std::fs::write(src.join("lib.txt"), format!("{name} {version}")).unwrap();
        let file = format!("{name}-{version}.escx");
        self.cmd()
            .args(["package", "pack", src.to_str().unwrap(), "-o", &file, "--key", "acme.key"])
            .assert()
            .success();
        self.cmd().args(["registry", "publish", "reg", &file, "--key", "registry.key"]).assert().success();
    }

    fn app(&self, dependencies: &str) {
        let app = self.path("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(
            app.join("manifest.toml"),
            format!("[package]\nname = \"acme/app\"\nversion = \"0.1.0\"\n[dependencies]\n{dependencies}"),
        )
        .unwrap();
    }

    fn client(&self, verb: &str) -> Command {
        let mut command = self.cmd();
        command.args([
            verb,
            "--registry",
            "reg",
            "--root",
            "app",
            "--registry-key",
            "registry.pub",
            "--pubkey",
            "acme.pub",
        ]);
        command
    }
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

fn diamond(project: &Project) {
    project.publish("c", "1.2.0", "");
    project.publish("c", "1.5.0", "");
    project.publish("a", "1.0.0", "\"acme/c\" = \"^1.2\"\n");
    project.publish("b", "1.0.0", "\"acme/c\" = \"^1.5\"\n");
    project.app("\"acme/a\" = \"^1\"\n\"acme/b\" = \"^1\"\n");
}

#[test]
fn resolve_tree_install_a_diamond() {
    let project = Project::new();
    diamond(&project);
    let out = project.client("resolve").arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value = json(&out.stdout);
    let names: Vec<&str> =
        value["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme/c", "acme/a", "acme/b"], "install order puts c first");
    assert!(project.path("app/escx.lock").exists());
    project.client("tree").assert().success().stdout(predicate::str::contains("acme/c 1.5.0 (*)"));
    project
        .client("install")
        .args(["--into", "app/escx_packages"])
        .assert()
        .success()
        .stdout(predicate::str::contains("installed 3 packages"));
    assert_eq!(
        std::fs::read_to_string(project.path("app/escx_packages/acme/c/1.5.0/lib.txt")).unwrap(),
        "c 1.5.0"
    );
}

#[test]
fn unsatisfiable_requirements_are_explained() {
    let project = Project::new();
    project.publish("c", "1.2.0", "");
    project.publish("c", "1.5.0", "");
    project.publish("a", "1.0.0", "\"acme/c\" = \"~1.2\"\n");
    project.publish("b", "1.0.0", "\"acme/c\" = \"^1.5\"\n");
    project.app("\"acme/a\" = \"^1\"\n\"acme/b\" = \"^1\"\n");
    project
        .client("resolve")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("depends on acme/c >=1.2.0, <1.3.0"))
        .stderr(predicate::str::contains("acme/b 1.0.0 depends on acme/c >=1.5.0, <2.0.0"));
    assert!(!project.path("app/escx.lock").exists());
}

#[test]
fn lockfile_pins_until_update_and_yank_is_respected() {
    let project = Project::new();
    project.publish("c", "1.2.0", "");
    project.app("\"acme/c\" = \"^1\"\n");
    project.client("resolve").assert().success();
    project.publish("c", "1.3.0", "");
    project.client("resolve").assert().success().stdout(predicate::str::contains("(no changes)"));
    project
        .client("resolve")
        .arg("--update")
        .assert()
        .success()
        .stdout(predicate::str::contains("+ acme/c 1.3.0"));
    project
        .cmd()
        .args(["registry", "yank", "reg", "acme/c@1.3.0", "--key", "registry.key"])
        .assert()
        .success();
    // Locked to 1.3.0: still used although yanked; --update moves back to 1.2.0.
    project.client("resolve").assert().success().stdout(predicate::str::contains("(no changes)"));
    project
        .client("resolve")
        .arg("--update")
        .assert()
        .success()
        .stdout(predicate::str::contains("+ acme/c 1.2.0"));
}

#[test]
fn a_rolled_back_index_is_refused_by_the_cli() {
    let project = Project::new();
    project.publish("c", "1.2.0", "");
    project.app("\"acme/c\" = \"^1\"\n");
    let old = std::fs::read(project.path("reg/index.signed")).unwrap();
    project.publish("c", "1.3.0", "");
    project.client("resolve").assert().success();
    std::fs::write(project.path("reg/index.signed"), old).unwrap();
    let out = project.client("resolve").arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "index-rollback");
}

#[test]
fn a_failed_install_leaves_the_target_as_it_was() {
    let project = Project::new();
    diamond(&project);
    std::fs::create_dir_all(project.path("app/escx_packages")).unwrap();
    std::fs::write(project.path("app/escx_packages/keep.txt"), "mine").unwrap();
    let package = project.path("reg/packages/acme/b/1.0.0.escx");
    let mut bytes = std::fs::read(&package).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&package, bytes).unwrap();
    project
        .client("install")
        .args(["--into", "app/escx_packages"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("acme/b@1.0.0"))
        .stderr(predicate::str::contains("1.0.0.escx"))
        .stderr(predicate::str::contains("help:"));
    assert_eq!(std::fs::read_to_string(project.path("app/escx_packages/keep.txt")).unwrap(), "mine");
    assert!(!project.path("app/escx_packages/acme").exists());
}

#[test]
fn search_and_mirror() {
    let project = Project::new();
    diamond(&project);
    let out = project
        .cmd()
        .args(["registry", "search", "reg", "thermal", "--registry-key", "registry.pub", "--json"])
        .output()
        .unwrap();
    let value = json(&out.stdout);
    assert_eq!(value["verified"], true);
    assert_eq!(value["results"].as_array().unwrap().len(), 3);
    project
        .cmd()
        .args(["registry", "mirror", "reg", "mirror", "--registry-key", "registry.pub"])
        .assert()
        .success()
        .stdout(predicate::str::contains("4 package files copied"));
    // Installing from the mirror works and sees the same index.
    let mut install = project.cmd();
    install.args([
        "install",
        "--registry",
        "mirror",
        "--root",
        "app",
        "--into",
        "app/pk",
        "--registry-key",
        "registry.pub",
        "--pubkey",
        "acme.pub",
    ]);
    install.assert().success();
}

#[test]
fn publish_without_publisher_trust_is_a_usage_error() {
    let project = Project::new();
    std::fs::remove_file(project.path("reg/publishers.toml")).unwrap();
    let src = project.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("manifest.toml"), "[package]\nname = \"acme/x\"\nversion = \"1.0.0\"\n").unwrap();
    project.cmd().args(["package", "pack", "src", "-o", "x.escx", "--key", "acme.key"]).assert().success();
    project
        .cmd()
        .args(["registry", "publish", "reg", "x.escx", "--key", "registry.key"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no publisher trust"));
}

#[test]
fn registry_commands_have_help_with_examples() {
    for command in [
        vec!["registry", "init"],
        vec!["registry", "publish"],
        vec!["registry", "yank"],
        vec!["registry", "search"],
        vec!["registry", "mirror"],
        vec!["registry", "refresh"],
        vec!["registry", "issuer"],
        vec!["resolve"],
        vec!["tree"],
        vec!["install"],
    ] {
        let mut args = command.clone();
        args.push("--help");
        Command::cargo_bin("escx")
            .unwrap()
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:"));
    }
}

/// Versions are immutable: publishing one again is the input's fault (exit 1,
/// `already-published`), and the index does not change.
#[test]
fn publishing_a_version_again_is_refused_with_exit_1() {
    let project = Project::new();
    project.publish("c", "1.2.0", "");
    let before = std::fs::read(project.path("reg/index.signed")).unwrap();
    let out = project
        .cmd()
        .args(["registry", "publish", "reg", "c-1.2.0.escx", "--key", "registry.key", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out.stdout)["error"]["code"], "already-published");
    assert_eq!(std::fs::read(project.path("reg/index.signed")).unwrap(), before);
}

#[test]
fn publishing_an_altered_package_names_the_file_and_says_what_to_do() {
    let project = Project::new();
    project.publish("c", "1.2.0", "");
    let mut bytes = std::fs::read(project.path("c-1.2.0.escx")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(project.path("altered.escx"), bytes).unwrap();
    project
        .cmd()
        .args(["registry", "publish", "reg", "altered.escx", "--key", "registry.key"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("altered.escx"))
        .stderr(predicate::str::contains("help:"));
}
