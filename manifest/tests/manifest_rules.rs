//! Every manifest rule has a failing example with its expected `line:column: key: message`
//! (spec: manifest.md). The base document is three lines; snippets start on line 4.

use std::path::Path;

use escx_manifest::Manifest;

const BASE: &str = "[package]\nname = \"acme/x\"\nversion = \"1.0.0\"\n";

/// (document, expected start of one diagnostic, after "manifest.toml:"). A document
/// starting with "[package]" or "!" is used whole; any other is appended to BASE.
const CASES: &[(&str, &str)] = &[
    // [package]
    ("![publisher]\nname = \"a\"\n", "1:1: package: missing [package] table"),
    ("[package]\nversion = \"1.0.0\"\n", "1:1: package.name: missing `name`"),
    ("[package]\nname = \"Acme\"\nversion = \"1.0.0\"\n", "2:8: package.name: \"Acme\" must start each part"),
    (
        "[package]\nname = \"a/b/c\"\nversion = \"1.0.0\"\n",
        "2:8: package.name: \"a/b/c\" may contain at most one '/'",
    ),
    ("[package]\nname = \"a\"\n", "1:1: package.version: missing `version`"),
    (
        "[package]\nname = \"a\"\nversion = \"1.0\"\n",
        "3:11: package.version: \"1.0\" is not a semantic version",
    ),
    (
        "[package]\nname = \"a\"\nversion = \"1.0.0+build.5\"\n",
        "3:11: package.version: \"1.0.0+build.5\" is not a semantic version: build metadata",
    ),
    (
        "[package]\nname = \"a\"\nversion = \"18446744073709551616.0.0\"\n",
        "3:11: package.version: \"18446744073709551616.0.0\" is not a semantic version",
    ),
    (
        "!\u{feff}[package]\nname = \"a\"\nversion = \"1.0.0\"\n",
        "1:1: the manifest starts with a byte order mark",
    ),
    (
        "[dependencies]\n\"acme/y\" = \"=1.2.3+build\"\n",
        "5:12: dependencies.acme/y: \"=1.2.3+build\" has build metadata",
    ),
    (
        "[package]\nname = \"a\"\nversion = \"1.0.0\"\nnmae = \"x\"\n",
        "4:1: package.nmae: unknown field `nmae`",
    ),
    (
        "[package]\nname = \"a\"\nversion = \"1.0.0\"\nlicense = \"MIT ORR GPL\"\n",
        "4:11: package.license: \"MIT ORR GPL\" is not an SPDX license expression",
    ),
    (
        "[package]\nname = \"a\"\nversion = \"1.0.0\"\nkeywords = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]\n",
        "4:38: package.keywords: more than 5 entries",
    ),
    (
        "[package]\nname = \"a\"\nversion = \"1.0.0\"\nkeywords = [\"Bad Keyword\"]\n",
        "4:13: package.keywords: \"Bad Keyword\" is not a lowercase slug",
    ),
    (
        "[package]\nname = \"a\"\nversion = \"1.0.0\"\ncategories = [\"sim//x\"]\n",
        "4:15: package.categories: \"sim//x\" is not lowercase slugs",
    ),
    (
        "[package]\nname = \"a\"\nversion = \"1.0.0\"\nhomepage = \"ftp://x\"\n",
        "4:12: package.homepage: \"ftp://x\" is not an http(s) URL",
    ),
    (
        "[package]\nname = \"a\"\nversion = \"1.0.0\"\nhomepage = \"https://\"\n",
        "4:12: package.homepage: \"https://\" is not an http(s) URL",
    ),
    // [publisher]
    (
        "[publisher]\nname = \"A\"\nurl = \"example.com\"\n",
        "6:7: publisher.url: \"example.com\" is not an http(s) URL",
    ),
    ("[publisher]\nemail = \"a@b.c\"\n", "4:1: publisher.name: missing `name`"),
    (
        "[publisher]\nname = \"A\"\nemail = \"nobody\"\n",
        "6:9: publisher.email: \"nobody\" is not an email address",
    ),
    ("[publisher]\nname = \"A\"\nkey_id = \"xyz\"\n", "6:10: publisher.key_id: \"xyz\" is not a key id"),
    // [dependencies]
    ("[dependencies]\n\"Bad\" = \"^1\"\n", "5:1: dependencies.Bad: dependency name \"Bad\""),
    ("[dependencies]\n\"acme/x\" = \"^1\"\n", "5:1: dependencies.acme/x: a package cannot depend on itself"),
    (
        "[dependencies]\n\"acme/y\" = 3\n",
        "5:12: dependencies.acme/y: expected a version requirement string or a table, found integer",
    ),
    ("[dependencies]\n\"acme/y\" = { optional = true }\n", "5:12: dependencies.acme/y: missing `version`"),
    (
        "[dependencies]\n\"acme/y\" = { version = \"^1\", optinal = true }\n",
        "5:12: dependencies.acme/y: unknown field `optinal`",
    ),
    (
        "[dependencies]\n\"acme/y\" = \"^^1\"\n",
        "5:12: dependencies.acme/y: \"^^1\" is not a version requirement",
    ),
    (
        "[dependencies]\n\"acme/y\" = \">=1, <3\"\n",
        "5:12: dependencies.acme/y: \">=1, <3\" spans more than one major version",
    ),
    // [features]
    ("[features]\n\"Bad!\" = []\n", "5:1: features.Bad!: feature name \"Bad!\""),
    (
        "[dependencies]\n\"acme/y\" = \"^1\"\n[features]\nf = [\"dep:acme/y\"]\n",
        "7:6: features.f: \"dep:acme/y\": acme/y is not optional",
    ),
    (
        "[features]\nf = [\"dep:acme/nope\"]\n",
        "5:6: features.f: \"dep:acme/nope\": no dependency named \"acme/nope\"",
    ),
    (
        "[features]\nf = [\"acme/nope/svg\"]\n",
        "5:6: features.f: \"acme/nope/svg\": no dependency named \"acme/nope\"",
    ),
    ("[features]\nf = [\"g\"]\n", "5:6: features.f: \"g\" is not a feature of this package"),
    ("[features]\nf = [\"f\"]\n", "5:6: features.f: a feature cannot list itself"),
    (
        "[dependencies]\n\"acme/y\" = { version = \"^1\", optional = true }\n",
        "5:1: dependencies.acme/y: optional dependency acme/y is not enabled by any feature",
    ),
    // [pricing]
    ("[pricing]\ncurrency = \"USD\"\n", "4:1: pricing.license_type: missing `license_type`"),
    ("[pricing]\nlicense_type = \"cheap\"\n", "5:16: pricing.license_type: \"cheap\" is not a license type"),
    (
        "[pricing]\nlicense_type = \"free\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"1\"\n",
        "6:1: pricing.tier: a free package has no price tiers",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n",
        "4:1: pricing.tier: a paid package needs at least one [[pricing.tier]]",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"1\"\n",
        "4:1: pricing.currency: a paid package needs a currency",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"usd\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"1\"\n",
        "6:12: pricing.currency: \"usd\" is not an ISO 4217 currency code",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nprice = \"1\"\n",
        "7:1: pricing.tier[0].name: missing `name`",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"1\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"2\"\n",
        "11:8: pricing.tier[1].name: tier \"a\" is defined twice",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nname = \"a\"\n",
        "7:1: pricing.tier[0].price: missing `price`",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"0.1234567\"\n",
        "9:9: pricing.tier[0].price: \"0.1234567\": 7 decimal places",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"1\"\nunit = \"week\"\n",
        "10:8: pricing.tier[0].unit: \"week\" is not a price unit",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"1\"\ntelemetry = \"all\"\n",
        "10:13: pricing.tier[0].telemetry: \"all\" is not a telemetry mode",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"1\"\nseats = 0\n",
        "10:9: pricing.tier[0].seats: 0 seats",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"1\"\nfeatures = [\"pro\"]\n",
        "10:13: pricing.tier[0].features: \"pro\" is not a feature of this package",
    ),
    (
        "[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"1\"\ntelemetry = \"share\"\n",
        "4:1: telemetry: a tier shares telemetry but there is no [telemetry] table",
    ),
    // [revenue]
    (
        "[revenue]\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nfixed = \"1\"\n",
        "4:1: revenue.currency: missing `currency`",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nfixed = \"1\"\n",
        "4:1: revenue.residual: missing `residual`",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"A B\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nfixed = \"1\"\n",
        "6:12: revenue.residual: party \"A B\" must be",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\n[[revenue.step]]\nparty = \"p\"\nfixed = \"1\"\n",
        "4:1: revenue.effective_from: missing `effective_from`",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-13-01\"\n[[revenue.step]]\nparty = \"p\"\nfixed = \"1\"\n",
        "7:18: revenue.effective_from: \"2026-13-01\" is not a date",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n",
        "4:1: revenue.step: a waterfall needs at least one step",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\n",
        "8:1: revenue.step[0]: a step needs exactly one amount rule, found 0",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nfixed = \"1\"\nshare_of_gross_bps = 5\n",
        "8:1: revenue.step[0]: a step needs exactly one amount rule, found 2",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nfixed = \"1\"\n",
        "8:1: revenue.step[0].party: missing `party`",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nshare_of_gross_bps = 10001\n",
        "10:22: revenue.step[0].share_of_gross_bps: 10001 bps is outside 1..=10000",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nshare_of_remaining_bps = 0\n",
        "10:26: revenue.step[0].share_of_remaining_bps: 0 bps is outside 1..=10000",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nshare_of_gross_bps = 6000\n[[revenue.step]]\nparty = \"q\"\nshare_of_gross_bps = 6000\n",
        "8:1: revenue.step: shares of gross add up to 12000 bps",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nfixed = \"0.00\"\n",
        "10:9: revenue.step[0].fixed: must be greater than zero",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nrecoup_cap = \"1.0000001\"\n",
        "10:14: revenue.step[0].recoup_cap: \"1.0000001\": 7 decimal places",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nresidual_weights = { a = 1 }\n[[revenue.step]]\nparty = \"p\"\nfixed = \"1\"\n",
        "8:1: revenue.step[0]: residual_weights must be the last step",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nresidual_weights = { a = 1 }\n",
        "9:9: revenue.step[0].party: a residual_weights step names its parties",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nresidual_weights = { a = 0 }\n",
        "9:26: revenue.step[0].residual_weights.a: weight 0 must be 1 to 10000",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nresidual_weights = {}\n",
        "9:20: revenue.step[0].residual_weights: needs 1 to 16 parties",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nfixed = \"1\"\n[[revenue.version]]\neffective_from = \"2025-01-01\"\n[[revenue.version.step]]\nparty = \"p\"\nfixed = \"2\"\n",
        "11:1: revenue.version[0].effective_from: must be later than the previous waterfall's effective_from",
    ),
    (
        "[revenue]\ncurrency = \"EUR\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nfixed = \"1\"\n[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"1\"\n",
        "5:12: revenue.currency: revenue is in EUR but prices are in USD",
    ),
    (
        "[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n[[revenue.step]]\nparty = \"p\"\nfixed = \"1\"\n[[revenue.version]]\n[[revenue.version.step]]\nparty = \"p\"\nfixed = \"2\"\n",
        "11:1: revenue.version[0].effective_from: missing `effective_from`",
    ),
    // [telemetry]
    (
        "[telemetry]\nmetrics = [\"bytes\"]\nwindow = \"400d\"\nepsilon = 1.0\n",
        "6:10: telemetry.window: \"400d\" is not a window of at least one hour",
    ),
    (
        "[telemetry]\nmetrics = [\"bytes\"]\nwindow = \"1h\"\nepsilon = 11.0\n",
        "7:11: telemetry.epsilon: 11 is not in (0, 10]",
    ),
    ("[telemetry]\nwindow = \"1h\"\nepsilon = 1.0\n", "4:1: telemetry.metrics: no metrics"),
    (
        "[telemetry]\nmetrics = [\"clicks\"]\nwindow = \"1h\"\nepsilon = 1.0\n",
        "5:12: telemetry.metrics: \"clicks\" is not a metric",
    ),
    ("[telemetry]\nmetrics = [\"bytes\"]\nepsilon = 1.0\n", "4:1: telemetry.window: missing `window`"),
    (
        "[telemetry]\nmetrics = [\"bytes\"]\nwindow = \"30m\"\nepsilon = 1.0\n",
        "6:10: telemetry.window: \"30m\" is not a window of at least one hour",
    ),
    (
        "[telemetry]\nmetrics = [\"bytes\"]\nwindow = \"1h\"\ncohort_min_size = 10\nepsilon = 1.0\n",
        "7:19: telemetry.cohort_min_size: 10 is below the minimum of 50",
    ),
    (
        "[telemetry]\nmetrics = [\"bytes\"]\nwindow = \"1h\"\nepsilon = 0.0\n",
        "7:11: telemetry.epsilon: 0 is not in (0, 10]",
    ),
    ("[telemetry]\nmetrics = [\"bytes\"]\nwindow = \"1h\"\n", "4:1: telemetry.epsilon: missing `epsilon`"),
    // [include]
    ("[include]\nfiles = [\"src/[\"]\n", "5:10: include.files: \"src/[\" is not a valid glob"),
    // [lifecycle]
    ("[lifecycle]\ndeprecated = 3\n", "5:14: lifecycle.deprecated: expected true, false or a message"),
    ("[lifecycle]\nreplaced_by = \"Nope\"\n", "5:15: lifecycle.replaced_by: \"Nope\" must start each part"),
    (
        "[lifecycle]\nreplaced_by = \"acme/x\"\n",
        "5:15: lifecycle.replaced_by: a package cannot replace itself",
    ),
    // [solution]
    ("[solution]\n", "4:1: solution.packages: a solution bundles at least one package"),
    ("[solution]\npackages = { \"A\" = \"^1\" }\n", "5:14: solution.packages.A: \"A\" must start each part"),
    (
        "[solution]\npackages = { \"acme/a\" = \"*\" }\n",
        "5:25: solution.packages.acme/a: \"*\" spans more than one major version",
    ),
    (
        "[solution]\npackages = { \"acme/a\" = \"^1\" }\n[solution.tier]\nresidual_weights = { a = 1 }\n",
        "6:1: solution.tier: a solution tier is a share or a fixed amount",
    ),
];

#[test]
fn every_rule_reports_its_location_and_message() {
    let mut failures = Vec::new();
    for (document, expected) in CASES {
        // "[package]..." and "!..." are whole documents; anything else follows BASE.
        let text = match document.strip_prefix('!') {
            Some(whole) => whole.to_string(),
            None if document.starts_with("[package]") => document.to_string(),
            None => format!("{BASE}{document}"),
        };
        match Manifest::parse(&text, Path::new("manifest.toml")) {
            Ok(_) => failures.push(format!("accepted, expected {expected:?}:\n{text}")),
            Err(diagnostics) => {
                let want = format!("manifest.toml:{expected}");
                if !diagnostics.0.iter().any(|d| d.to_string().starts_with(&want)) {
                    failures.push(format!("expected {want:?}, got:\n{diagnostics}\n--- for:\n{text}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn limits_are_enforced() {
    let long =
        format!("[package]\nname = \"a\"\nversion = \"1.0.0\"\ndescription = \"{}\"\n", "x".repeat(1025));
    let err = Manifest::parse(&long, Path::new("m.toml")).unwrap_err();
    assert!(
        err.to_string().starts_with("m.toml:4:15: package.description: 1025 characters; the limit is 1024"),
        "{err}"
    );

    let tiers: String =
        (0..17).map(|i| format!("[[pricing.tier]]\nname = \"t{i}\"\nprice = \"1\"\n")).collect();
    let text = format!("{BASE}[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n{tiers}");
    let err = Manifest::parse(&text, Path::new("m.toml")).unwrap_err();
    assert!(err.to_string().contains("pricing.tier: more than 16 tiers"), "{err}");

    let steps: String =
        (0..65).map(|i| format!("[[revenue.step]]\nparty = \"p{i}\"\nfixed = \"1\"\n")).collect();
    let text = format!(
        "{BASE}[revenue]\ncurrency = \"USD\"\nresidual = \"a\"\neffective_from = \"2026-01-01\"\n{steps}"
    );
    let err = Manifest::parse(&text, Path::new("m.toml")).unwrap_err();
    assert!(err.to_string().contains("revenue.step: more than 64 steps"), "{err}");

    let deps: String = (0..257).map(|i| format!("\"acme/d{i}\" = \"^1\"\n")).collect();
    let err = Manifest::parse(&format!("{BASE}[dependencies]\n{deps}"), Path::new("m.toml")).unwrap_err();
    assert!(err.to_string().contains("dependencies: more than 256 dependencies"), "{err}");
}

#[test]
fn diagnostics_include_a_fix() {
    let err = Manifest::parse(&format!("{BASE}[pricing]\nlicense_type = \"cheap\"\n"), Path::new("m.toml"))
        .unwrap_err();
    assert!(err.to_string().contains("help: use \"free\" or \"paid\""), "{err}");
    let err =
        Manifest::parse("[package]\nname = \"a\"\nverison = \"1.0.0\"\n", Path::new("m.toml")).unwrap_err();
    assert!(err.to_string().contains("did you mean `version`?"), "{err}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = "[package]\nname = \"Bad\"\nversion = \"x\"\n";
    let err = Manifest::parse(text, Path::new("m.toml")).unwrap_err();
    assert_eq!(err.0.len(), 2, "{err}");
}

/// Issue 27 (15): `manifest check` stopped at the first unknown table or key (serde's
/// deny_unknown_fields); every shape problem is listed now, each at its own line.
#[test]
fn every_unknown_table_and_key_is_listed() {
    let text = "[package]\nname = \"a\"\nversion = \"1.0.0\"\nnmae = \"x\"\ntags = [\n  \"a\",\n  \"b\",\n]\n\n\
                [widgets]\nsize = 3\n\n[pricing]\nlicense_type = \"free\"\ncurency = \"USD\"\n\n[gadgets]\nx = 1\n";
    let err = Manifest::parse(text, Path::new("m.toml")).unwrap_err();
    let lines: Vec<String> = err.0.iter().map(|d| format!("{}:{} {}", d.line, d.key, d.message)).collect();
    assert_eq!(lines.len(), 5, "{err}");
    for (line, key) in
        [(4, "package.nmae"), (5, "package.tags"), (10, "widgets"), (15, "pricing.curency"), (17, "gadgets")]
    {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{line}:{key} unknown field"))),
            "{key} at line {line}: {lines:#?}"
        );
    }
    // One problem is still one diagnostic.
    let one =
        Manifest::parse("[package]\nname = \"a\"\nversion = \"1.0.0\"\nnmae = \"x\"\n", Path::new("m.toml"));
    assert_eq!(one.unwrap_err().0.len(), 1);
}

#[test]
fn money_in_the_manifest_is_exact() {
    let text = format!(
        "{BASE}[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n[[pricing.tier]]\nname = \"a\"\nprice = \"0.1\"\n[[pricing.tier]]\nname = \"b\"\nprice = \"0.2\"\n"
    );
    let manifest = Manifest::parse(&text, Path::new("m.toml")).unwrap();
    let tiers = &manifest.pricing.unwrap().tiers;
    let sum = tiers[0].price.checked_add(tiers[1].price).unwrap();
    assert_eq!(sum, escx_manifest::Micros::parse("0.3").unwrap());
}

#[test]
fn a_full_manifest_parses_into_typed_values() {
    let text = r#"
[package]
name = "acme/thermal"
version = "1.2.0"
license = "MIT OR Apache-2.0"
keywords = ["thermal"]
[dependencies]
"acme/units" = "^1.2"
"acme/plot" = { version = "^0.4", optional = true, features = ["svg"] }
[features]
default = ["plots"]
plots = ["dep:acme/plot", "acme/plot/png"]
[pricing]
license_type = "paid"
currency = "USD"
[[pricing.tier]]
name = "share"
price = "49.00"
unit = "month"
telemetry = "share"
[telemetry]
metrics = ["invocations", "custom:frames"]
window = "24h"
cohort_min_size = 100
epsilon = 0.5
[revenue]
currency = "USD"
residual = "acme"
effective_from = "2026-01-01"
[[revenue.step]]
party = "platform"
share_of_gross_bps = 1500
[[revenue.step]]
party = "investor"
recoup_cap = "5000.00"
[[revenue.step]]
residual_weights = { acme = 3, partner = 1 }
[[revenue.version]]
effective_from = "2027-01-01"
[[revenue.version.step]]
party = "platform"
share_of_gross_bps = 1000
"#;
    let m = Manifest::parse(text, Path::new("m.toml")).unwrap();
    assert_eq!(m.dependencies["acme/plot"].requirement.bucket().to_string(), "0.4");
    assert!(m.dependencies["acme/plot"].optional);
    assert_eq!(m.telemetry.as_ref().unwrap().window_secs, 86_400);
    let revenue = m.revenue.unwrap();
    assert_eq!(revenue.base.steps.len(), 3);
    let jan_2027 = escx::timestamp::parse("2027-01-01").unwrap();
    assert_eq!(revenue.in_force(jan_2027).unwrap().steps.len(), 1);
    assert_eq!(revenue.in_force(jan_2027 - 1).unwrap().steps.len(), 3);
}
