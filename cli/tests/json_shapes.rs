//! The `--json` documents of spec/cli.md are what the commands print: for each command
//! run here, the top-level keys of its output are exactly the keys the spec lists.

use std::collections::BTreeSet;
use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn spec() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/cli.md")).unwrap()
}

/// The top-level keys of the first `{...}` after "`escx COMMAND --json`" in the spec.
fn spec_keys(spec: &str, command: &str) -> BTreeSet<String> {
    // "`escx registry init --json`: {...}; `publish`: {...}": a later verb of the same noun
    // is listed by its name alone after the first.
    let (noun, verb) = command.split_once(' ').unwrap_or((command, ""));
    let heading = format!("`escx {command} --json`");
    let rest = match spec.find(&heading) {
        Some(at) => &spec[at + heading.len()..],
        None => {
            let first = spec
                .find(&format!("`escx {noun} "))
                .unwrap_or_else(|| panic!("{heading} is not in spec/cli.md"));
            let short = format!("`{verb}`:");
            let at = spec[first..].find(&short).unwrap_or_else(|| panic!("{heading} is not in spec/cli.md"));
            &spec[first + at + short.len()..]
        }
    };
    let open = rest.find('{').unwrap();
    let (mut depth, mut keys, mut token) = (0usize, BTreeSet::new(), String::new());
    let mut in_key = true;
    for ch in rest[open..].chars() {
        match ch {
            '{' | '[' => {
                depth += 1;
                if depth > 1 {
                    in_key = false;
                }
            }
            '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                keys.insert(token.trim().to_owned());
                token.clear();
                in_key = true;
            }
            ':' if depth == 1 => in_key = false,
            c if depth == 1 && in_key && !c.is_whitespace() && c != '`' => token.push(c),
            _ => {}
        }
    }
    keys.insert(token.trim().to_owned());
    keys.retain(|k| !k.is_empty());
    keys
}

fn run(dir: &Path, args: &[&str]) -> Value {
    let mut command = Command::cargo_bin("escx").unwrap();
    let out = command
        .current_dir(dir)
        .env_remove("ESCX_PASSPHRASE")
        .env_remove("SOURCE_DATE_EPOCH")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn documented_json_shapes_match_the_output() {
    let spec = spec();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("key generate", vec!["key", "generate", "--out", "acme", "--unencrypted"]),
        ("key show", vec!["key", "show", "acme.pub"]),
        ("manifest init", vec!["manifest", "init", "tool", "--name", "acme/tool"]),
        ("manifest check", vec!["manifest", "check", "tool"]),
        ("package pack", vec!["package", "pack", "tool", "-o", "tool.escx", "--key", "acme.key"]),
        ("package inspect", vec!["package", "inspect", "tool.escx"]),
        ("package verify", vec!["package", "verify", "tool.escx", "--pubkey", "acme.pub"]),
        ("package sign", vec!["package", "sign", "tool.escx", "--key", "acme2.key"]),
        ("registry init", vec!["registry", "init", "reg", "--key", "acme.key", "--publisher", "acme.pub"]),
        ("registry publish", vec!["registry", "publish", "reg", "tool.escx", "--key", "acme.key"]),
        ("registry search", vec!["registry", "search", "reg", "tool", "--registry-key", "acme.pub"]),
        ("registry refresh", vec!["registry", "refresh", "reg", "--key", "acme.key"]),
        ("issuer init", vec!["issuer", "init", "issuer", "--name", "Shapes Licensing", "--unencrypted"]),
        ("issuer epoch", vec!["issuer", "epoch", "issuer"]),
        ("license receive-key", vec!["license", "receive-key", "--wallet", "w", "-o", "w.receive"]),
        ("license list", vec!["license", "list", "--wallet", "w"]),
        ("issuer publish", vec!["issuer", "publish", "issuer", "-o", "issuer.bundle"]),
        ("issuer show", vec!["issuer", "show", "issuer.bundle"]),
        ("settle init", vec!["settle", "init", "ledger.db"]),
        ("ledger balances", vec!["ledger", "balances", "ledger.db"]),
        ("ledger audit", vec!["ledger", "audit", "ledger.db"]),
        ("hold list", vec!["hold", "list", "ledger.db"]),
        ("dispute list", vec!["dispute", "list", "ledger.db"]),
        ("statement list", vec!["statement", "list", "ledger.db"]),
        (
            "key rotate",
            vec!["key", "rotate", "--key", "acme.key", "--new", "acme2.pub", "-o", "acme2.rotation"],
        ),
    ];
    run(dir, &["key", "generate", "--out", "acme2", "--unencrypted"]);
    for (command, args) in cases {
        let output = run(dir, &args);
        assert_eq!(keys(&output), spec_keys(&spec, command), "`escx {command} --json`");
    }
}
