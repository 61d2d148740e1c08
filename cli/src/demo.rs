//! `escx demo`: the whole flow on embedded sample data, one line per step saying what
//! was proven. Later features add steps to [`STEPS`].

use escx::Fault as _;
use escx_licensing::messages::{SealedLicense, SealedRedeemRequest};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use escx::container::{PackageReader, SectionType};
use escx::keyfile::{self, Protection};
use escx::pack::PackOptions;
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx::verify::{self, SectionSelection, VerifyOptions};
use escx_licensing::issuer::Issuer;
use escx_licensing::trust::Trust;
use escx_licensing::wallet::Wallet;
use escx_manifest::Manifest;
use escx_manifest::Micros;
use escx_manifest::client::{self, StateDir};
use escx_manifest::lockfile::Lockfile;
use escx_manifest::registry::{DEFAULT_EXPIRY_SECS, Registry};
use escx_manifest::resolve::{Catalog, ResolveOptions, resolve};
use escx_metering::meter::{Meter, Telemetry};
use escx_metering::operator::{Aggregate, Operator, Outcome};
use escx_metering::{self as metering, HOUR_SECS};
use escx_settlement::events::BillingEvent;
use escx_settlement::ledger::{BATCH_DEFAULT, Ledger, Manifests, Options, PlatformFee};
use escx_settlement::payout::Period;
use escx_settlement::statement;

use crate::output::{self, Ui};

#[derive(Args)]
#[command(after_help = "\
Runs offline in a fresh temporary directory (removed afterwards) unless --dir is given.
Keys made by the demo are NOT passphrase-protected; do not use them for anything else.

Examples:
  escx demo
  escx demo --dir ./escx-demo --json")]
pub struct DemoArgs {
    /// Work in this directory (created if needed) and keep the files.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// State shared by the steps.
struct Demo {
    dir: PathBuf,
    publisher: Option<SecretKey>,
    attester: Option<SecretKey>,
    package: PathBuf,
    registry_key: Option<SecretKey>,
    issuer: Option<Issuer>,
    /// The last sealed redemption request and the answer it got.
    last_redemption: Option<(SealedRedeemRequest, SealedLicense)>,
    license_id: Option<Vec<u8>>,
    licensed_package: PathBuf,
    operator: Option<SecretKey>,
    events: Vec<BillingEvent>,
    /// The demo's metering clock: it runs ahead of the real one, so hours can end.
    meter_clock: escx::UnixSeconds,
    /// Report files per customer wallet, and close files.
    reports: Vec<PathBuf>,
    closes: Vec<PathBuf>,
}

impl Demo {
    fn publisher(&self) -> anyhow::Result<&SecretKey> {
        self.publisher.as_ref().context("no publisher key yet")
    }
    fn attester(&self) -> anyhow::Result<&SecretKey> {
        self.attester.as_ref().context("no attester key yet")
    }
    fn trust_publisher(&self) -> anyhow::Result<TrustPolicy> {
        Ok(TrustPolicy::from_keys(vec![self.publisher()?.public_key().clone()]))
    }
    fn issuer(&self) -> anyhow::Result<&Issuer> {
        self.issuer.as_ref().context("no issuer yet")
    }
    fn wallet(&self) -> anyhow::Result<Wallet> {
        Ok(Wallet::open(&self.dir.join("wallet"))?)
    }
    /// What the licensed program ships with: the issuer whose licenses it accepts.
    fn trust(&self) -> anyhow::Result<Trust> {
        Ok(Trust::issuer(self.issuer()?.signing_key().id()))
    }
    fn registry_key(&self) -> anyhow::Result<&SecretKey> {
        self.registry_key.as_ref().context("no registry key yet")
    }
    /// The client's view: the registry key signs the index, the publisher the packages.
    fn client_policy(&self) -> anyhow::Result<TrustPolicy> {
        Ok(self.trust_publisher()?.with_registry_keys(vec![self.registry_key()?.public_key().clone()]))
    }
    fn operator(&self) -> anyhow::Result<&SecretKey> {
        self.operator.as_ref().context("no operator key yet")
    }
    fn settlement_dir(&self) -> PathBuf {
        self.dir.join("settlement")
    }
    fn ledger(&self) -> anyhow::Result<Ledger> {
        Ok(Ledger::open(&self.settlement_dir().join("ledger.db"))?)
    }
    fn manifests(&self) -> anyhow::Result<Manifests> {
        Ok(Manifests::load_dir(&self.settlement_dir().join("manifests"))?)
    }
    fn registry_dir(&self) -> PathBuf {
        self.dir.join("registry")
    }
    fn state(&self) -> StateDir {
        StateDir::new(self.dir.join("client-state"))
    }
    /// Packs `demo/<name>` at `version` with `dependencies` and publishes it.
    fn publish(&self, name: &str, version: &str, dependencies: &str) -> anyhow::Result<()> {
        let source = self.dir.join("sources").join(format!("{name}-{version}"));
        std::fs::create_dir_all(&source)?;
        std::fs::write(
            source.join("manifest.toml"),
            format!(
                "[package]\nname = \"demo/{name}\"\nversion = \"{version}\"\ndescription = \"demo {name}\"\n[dependencies]\n{dependencies}"
            ),
        )?;
        std::fs::write(source.join("lib.py"), format!("NAME = \"{name}\"\nVERSION = \"{version}\"\n"))?;
        let file = self.dir.join("sources").join(format!("{name}-{version}.escx"));
        escx::pack::pack_dir(
            &source,
            &file,
            &[self.publisher()?],
            &PackOptions { overwrite: true, ..Default::default() },
        )?;
        Registry::open(&self.registry_dir())?.publish(
            &file,
            &self.trust_publisher()?,
            &[self.registry_key()?],
            escx::now_unix(),
            DEFAULT_EXPIRY_SECS,
        )?;
        Ok(())
    }
    fn app(&self, name: &str, dependencies: &str) -> anyhow::Result<(PathBuf, Manifest)> {
        let root = self.dir.join(name);
        std::fs::create_dir_all(&root)?;
        let text =
            format!("[package]\nname = \"demo/{name}\"\nversion = \"0.1.0\"\n[dependencies]\n{dependencies}");
        std::fs::write(root.join("manifest.toml"), &text)?;
        let manifest = Manifest::load(&root.join("manifest.toml"))?;
        Ok((root, manifest))
    }
}

struct Step {
    name: &'static str,
    run: fn(&mut Demo) -> anyhow::Result<String>,
}

/// `escx demo --json` (spec/cli.md); `kept` only once every step passed.
#[derive(serde::Serialize)]
struct DemoReport<'a> {
    ok: bool,
    dir: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    kept: Option<bool>,
    steps: &'a [StepResult],
}

#[derive(serde::Serialize)]
struct StepResult {
    step: &'static str,
    ok: bool,
    proved: String,
}

/// The demo's package, as the licensing APIs take it.
fn thermal() -> anyhow::Result<escx::header::PackageName> {
    Ok(escx::header::PackageName::parse("demo/thermal")?)
}

const STEPS: &[Step] = &[
    Step { name: "keys", run: generate_keys },
    Step { name: "sample", run: write_sample },
    Step { name: "pack", run: pack },
    Step { name: "verify", run: verify_full },
    Step { name: "partial", run: verify_partial },
    Step { name: "policy", run: countersign_and_policy },
    Step { name: "tamper", run: tamper },
    Step { name: "stranger", run: stranger },
    Step { name: "extract", run: extract },
    Step { name: "registry", run: registry },
    Step { name: "resolve", run: resolve_diamond },
    Step { name: "install", run: install },
    Step { name: "rollback", run: rollback },
    Step { name: "conflict", run: conflict },
    Step { name: "purchase", run: purchase },
    Step { name: "redeem", run: redeem_license },
    Step { name: "offline", run: verify_license },
    Step { name: "decrypt", run: decrypt },
    Step { name: "replay", run: double_spend },
    Step { name: "revoke", run: revoke },
    Step { name: "settle", run: settle },
    Step { name: "statement", run: verify_statement },
    Step { name: "payout", run: payout_report },
    Step { name: "rerun", run: rerun_settlement },
    Step { name: "meter", run: meter },
    Step { name: "ingest", run: ingest_reports },
    Step { name: "service", run: over_http },
    Step { name: "close", run: close_period },
    Step { name: "cohort", run: suppressed_cohort },
    Step { name: "usage", run: settle_usage },
    Step { name: "prove", run: prove_statements },
    Step { name: "revenue", run: prove_revenue },
    Step { name: "audit", run: audit_public },
];

pub fn run(args: DemoArgs, ui: &Ui) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("escx-demo-")
                .tempdir()
                .context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let mut demo = Demo {
        package: dir.join("thermal-1.0.0.escx"),
        licensed_package: dir.join("thermal-1.0.0-licensed.escx"),
        dir,
        publisher: None,
        attester: None,
        registry_key: None,
        issuer: None,
        last_redemption: None,
        license_id: None,
        operator: None,
        events: Vec::new(),
        meter_clock: escx::UnixSeconds::EPOCH,
        reports: Vec::new(),
        closes: Vec::new(),
    };
    let mut results = Vec::new();
    for (index, step) in STEPS.iter().enumerate() {
        let outcome = (step.run)(&mut demo);
        let ok = outcome.is_ok();
        let detail = match &outcome {
            Ok(detail) => detail.clone(),
            Err(error) => format!("FAILED: {}", crate::failure::message(error)),
        };
        if !ui.json {
            output::print_line(&format!("[{}/{}] {:<9} {detail}", index + 1, STEPS.len(), step.name));
        }
        results.push(StepResult { step: step.name, ok, proved: detail });
        if let Err(error) = outcome {
            if ui.json {
                ui.emit(&DemoReport { ok: false, dir: &demo.dir, kept: None, steps: &results }, String::new);
            }
            return Err(error.context(format!("demo step {:?} failed", step.name)));
        }
    }
    let kept = args.dir.is_some();
    ui.emit(&DemoReport { ok: true, dir: &demo.dir, kept: Some(kept), steps: &results }, || {
        if kept {
            format!("demo complete; files are in {}", demo.dir.display())
        } else {
            "demo complete (temporary files removed; pass --dir to keep them)".to_owned()
        }
    });
    Ok(())
}

fn generate_keys(demo: &mut Demo) -> anyhow::Result<String> {
    let keys = demo.dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let publisher = SecretKey::generate();
    let attester = SecretKey::generate();
    for (name, key) in [("publisher", &publisher), ("attester", &attester)] {
        keyfile::write_secret_key(&keys.join(format!("{name}.key")), key, &Protection::Unencrypted, true)?;
        keyfile::write_public_key(&keys.join(format!("{name}.pub")), key.public_key(), true)?;
    }
    let line = format!(
        "ML-DSA-87 keys: publisher {}, attester {} (secret files mode 0600)",
        publisher.id(),
        attester.id()
    );
    demo.publisher = Some(publisher);
    demo.attester = Some(attester);
    Ok(line)
}

/// The embedded sample package.
const SAMPLE: &[(&str, &str)] = &[
    (
        "manifest.toml",
        "[package]\nname = \"demo/thermal\"\nversion = \"1.0.0\"\ndescription = \"Thermal model for the escx demo\"\nlicense = \"MIT\"\n\n[include]\nfiles = [\"src/**\", \"data/**\"]\n\n[features]\nplots = []\n\n[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\n[[pricing.tier]]\nname = \"standard\"\nprice = \"49.00\"\nunit = \"month\"\nseats = 5\nfeatures = [\"plots\"]\n\n[[pricing.tier]]\nname = \"metered\"\nprice = \"6.00\"\nunit = \"hour\"\ntelemetry = \"private\"\nfeatures = [\"plots\"]\n\n[[pricing.tier]]\nname = \"metered-share\"\nprice = \"4.80\"\nunit = \"hour\"\ntelemetry = \"share\"\nfeatures = [\"plots\"]\n\n[telemetry]\nmetrics = [\"invocations\"]\nwindow = \"24h\"\ncohort_min_size = 50\nepsilon = 1.0\n\n[revenue]\ncurrency = \"USD\"\nresidual = \"publisher\"\neffective_from = \"2026-01-01\"\n\n[[revenue.step]]\nparty = \"referrer\"\nshare_of_gross_bps = 1000\n",
    ),
    (
        "src/model.py",
        "def steady_state(power_w, resistance_k_per_w, ambient_c):\n    return ambient_c + power_w * resistance_k_per_w\n",
    ),
    ("src/__init__.py", "from .model import steady_state\n"),
    ("data/materials.csv", "material,conductivity_w_per_mk\ncopper,401\naluminium,237\nsteel,50\n"),
    ("docs/README.md", "# demo/thermal\n\n`steady_state(power_w, resistance_k_per_w, ambient_c)`\n"),
    ("tests/test_model.py", "from src.model import steady_state\n\nassert steady_state(10, 2, 25) == 45\n"),
    ("LICENSE", "MIT License\n\nCopyright (c) 2026 Demo Publisher\n"),
    ("notes.txt", "not selected by [include] files, so not packed\n"),
];

fn write_sample(demo: &mut Demo) -> anyhow::Result<String> {
    let root = demo.dir.join("thermal");
    for (path, content) in SAMPLE {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
    }
    Ok(format!("{} files in {} (manifest, payload, docs/, tests/, LICENSE)", SAMPLE.len(), root.display()))
}

fn pack(demo: &mut Demo) -> anyhow::Result<String> {
    let options = PackOptions { overwrite: true, ..PackOptions::default() };
    let report =
        escx::pack::pack_dir(&demo.dir.join("thermal"), &demo.package, &[demo.publisher()?], &options)?;
    let sections: Vec<&str> = report.sections.iter().map(|s| s.kind.name()).collect();
    Ok(format!(
        "{} {} -> {} ({}): sections {}; root {}… signed by the publisher",
        report.package.name,
        report.package.version,
        file_name(&demo.package),
        output::size(report.file_bytes),
        sections.join(", "),
        &output::hex(&report.root)[..16]
    ))
}

fn verify_full(demo: &mut Demo) -> anyhow::Result<String> {
    let report = verify::verify_file(&demo.package, &demo.trust_publisher()?, &VerifyOptions::default())?;
    Ok(format!(
        "publisher's ML-DSA-87 signature over the root is valid and all {} section hashes match it",
        report.sections.len()
    ))
}

fn verify_partial(demo: &mut Demo) -> anyhow::Result<String> {
    let only = SectionSelection::Only(vec![SectionType::Manifest]);
    let options = VerifyOptions { sections: &only, ..VerifyOptions::default() };
    let report = verify::verify_file(&demo.package, &demo.trust_publisher()?, &options)?;
    let skipped: Vec<&str> = report.skipped.iter().map(|k| k.name()).collect();
    Ok(format!("manifest alone verified against the signed root without reading {}", skipped.join(", ")))
}

fn countersign_and_policy(demo: &mut Demo) -> anyhow::Result<String> {
    escx::pack::countersign(&demo.package, demo.attester()?, escx::now_unix(), &escx::progress::NoProgress)?;
    let policy_path = demo.dir.join("trust.toml");
    std::fs::write(
        &policy_path,
        "version = 1\n\n[[key]]\nname = \"publisher\"\npublic_key_file = \"keys/publisher.pub\"\n\n\
         [[key]]\nname = \"attester\"\npublic_key_file = \"keys/attester.pub\"\n\n\
         [[scope]]\npackages = \"demo/*\"\nkeys = [\"publisher\", \"attester\"]\nthreshold = 2\n",
    )?;
    let policy = TrustPolicy::load(&policy_path)?;
    let report = verify::verify_file(&demo.package, &policy, &VerifyOptions::default())?;
    Ok(format!("attester countersigned; trust.toml accepts it: {}", report.decision.rules.join("; ")))
}

fn tamper(demo: &mut Demo) -> anyhow::Result<String> {
    let tampered = demo.dir.join("thermal-1.0.0-tampered.escx");
    let mut bytes = std::fs::read(&demo.package)?;
    let payload = PackageReader::open(std::io::Cursor::new(bytes.clone()), &demo.package)?
        .section(SectionType::Payload)
        .cloned()
        .context("sample package has no payload")?;
    bytes[usize::try_from(payload.offset + payload.stored_length / 2)?] ^= 0x01;
    std::fs::write(&tampered, bytes)?;
    let policy = demo.trust_publisher()?;
    let Err(error) = verify::verify_file(&tampered, &policy, &VerifyOptions::default()) else {
        bail!("a tampered copy verified");
    };
    if error.code() != "section-hash-mismatch" {
        bail!("tampered copy rejected for the wrong reason: {error}");
    }
    let only = SectionSelection::Only(vec![SectionType::Manifest]);
    verify::verify_file(&tampered, &policy, &VerifyOptions { sections: &only, ..VerifyOptions::default() })?;
    Ok(format!(
        "one flipped payload bit is rejected ({}: payload hash differs from the signed table); the intact manifest still verifies alone",
        error.code()
    ))
}

fn stranger(demo: &mut Demo) -> anyhow::Result<String> {
    let stranger = TrustPolicy::from_keys(vec![SecretKey::generate().public_key().clone()]);
    match verify::verify_file(&demo.package, &stranger, &VerifyOptions::default()) {
        Ok(_) => bail!("a package verified against a key that never signed it"),
        Err(error) if error.code() == "untrusted" => {
            Ok("checked against a stranger's key, the package is refused: no trusted signature".to_owned())
        }
        Err(error) => bail!("refused for the wrong reason: {error}"),
    }
}

fn extract(demo: &mut Demo) -> anyhow::Result<String> {
    let target = demo.dir.join("extracted");
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    escx::extract::extract_file(&demo.package, &target, &demo.trust_publisher()?, &VerifyOptions::default())?;
    let source = demo.dir.join("thermal");
    let mut same = 0;
    for (path, _) in SAMPLE.iter().filter(|(p, _)| *p != "notes.txt") {
        if std::fs::read(source.join(path))? != std::fs::read(target.join(path))? {
            bail!("{path} differs after extraction");
        }
        same += 1;
    }
    if target.join("notes.txt").exists() {
        bail!("notes.txt was extracted although [include] did not select it");
    }
    Ok(format!(
        "verified, then extracted {same} files into {}: byte-identical to the source",
        file_name(&target)
    ))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

const APP_DEPENDENCIES: &str = "\"demo/solver\" = \"^1\"\n\"demo/plot\" = \"^1\"\n";

fn registry(demo: &mut Demo) -> anyhow::Result<String> {
    let key = SecretKey::generate();
    Registry::init(&demo.registry_dir(), &[&key], escx::now_unix(), DEFAULT_EXPIRY_SECS)?;
    // Kept with the other keys, so a kept demo directory can be installed from (--dir).
    keyfile::write_public_key(&demo.dir.join("keys").join("registry.pub"), key.public_key(), true)?;
    demo.registry_key = Some(key);
    demo.publish("units", "1.0.0", "")?;
    demo.publish("units", "1.2.0", "")?;
    demo.publish("solver", "1.0.0", "\"demo/units\" = \"^1.0\"\n")?;
    demo.publish("plot", "1.0.0", "\"demo/units\" = \"^1.2\"\n")?;
    Ok("registry with a signed index: demo/units 1.0.0 + 1.2.0, demo/solver and demo/plot both depending on units (a diamond), each verified before publishing".to_owned())
}

fn resolve_diamond(demo: &mut Demo) -> anyhow::Result<String> {
    let (root, manifest) = demo.app("app", APP_DEPENDENCIES)?;
    let trusted =
        client::load_index(&demo.registry_dir(), &demo.client_policy()?, &demo.state(), escx::now_unix())?;
    let catalog = Catalog::new(&trusted.index);
    let resolution = resolve(&manifest, &catalog, &ResolveOptions::default())?;
    Lockfile::from_resolution(&resolution, "registry").write(&root)?;
    let order: Vec<String> = resolution
        .install_order
        .iter()
        .map(|&i| format!("{} {}", resolution.packages[i].name, resolution.packages[i].version))
        .collect();
    Ok(format!(
        "index version {} verified; PubGrub picked one units for both: {}; escx.lock written",
        trusted.index.version,
        order.join(" -> ")
    ))
}

fn install(demo: &mut Demo) -> anyhow::Result<String> {
    let root = demo.dir.join("app");
    let manifest = Manifest::load(&root.join("manifest.toml"))?;
    let policy = demo.client_policy()?;
    let now = escx::now_unix();
    let trusted = client::load_index(&demo.registry_dir(), &policy, &demo.state(), now)?;
    let lock = Lockfile::read(&root)?;
    let catalog = Catalog::new(&trusted.index);
    let resolution =
        resolve(&manifest, &catalog, &ResolveOptions { lock: lock.as_ref(), ..Default::default() })?;
    let report = escx_manifest::install::install(
        &trusted,
        &resolution,
        &root.join("escx_packages"),
        &policy,
        now,
        |_, _, _| {},
    )?;
    Ok(format!(
        "{} packages fetched, size- and hash-checked against the index, signature-verified, then installed dependencies-first into app/escx_packages",
        report.installed.len()
    ))
}

fn rollback(demo: &mut Demo) -> anyhow::Result<String> {
    let index_path = demo.registry_dir().join(escx_manifest::index::INDEX_FILE);
    let old = std::fs::read(&index_path)?;
    demo.publish("units", "1.3.0", "")?;
    let policy = demo.client_policy()?;
    let newer = client::load_index(&demo.registry_dir(), &policy, &demo.state(), escx::now_unix())?;
    let current = std::fs::read(&index_path)?;
    // A mirror (or attacker) serves the older, still validly signed index...
    std::fs::write(&index_path, &old)?;
    let outcome = client::load_index(&demo.registry_dir(), &policy, &demo.state(), escx::now_unix());
    // ...and the registry is put back as it was.
    std::fs::write(&index_path, &current)?;
    match outcome {
        Err(error) if error.code() == "index-rollback" => Ok(format!(
            "after accepting index version {}, a validly signed older index is refused ({})",
            newer.index.version,
            error.code()
        )),
        Err(error) => bail!("refused for the wrong reason: {error}"),
        Ok(_) => bail!("an older index was accepted"),
    }
}

fn conflict(demo: &mut Demo) -> anyhow::Result<String> {
    let (_, manifest) = demo.app("pinned-app", "\"demo/units\" = \"=1.0.0\"\n\"demo/plot\" = \"^1\"\n")?;
    let trusted =
        client::load_index(&demo.registry_dir(), &demo.client_policy()?, &demo.state(), escx::now_unix())?;
    let catalog = Catalog::new(&trusted.index);
    match resolve(&manifest, &catalog, &ResolveOptions::default()) {
        Err(error) if error.code() == "unsatisfiable" => {
            let explanation = error.to_string();
            let because = explanation.lines().nth(1).unwrap_or_default().trim().to_owned();
            Ok(format!("units =1.0.0 with plot (needs units ^1.2) is refused: {because}"))
        }
        Err(error) => bail!("failed for the wrong reason: {error}"),
        Ok(_) => bail!("an unsatisfiable requirement resolved"),
    }
}

fn purchase(demo: &mut Demo) -> anyhow::Result<String> {
    let now = escx::now_unix();
    let issuer = Issuer::init(&demo.dir.join("issuer"), "Demo Licensing", &Protection::Unencrypted, now)?;
    // Licensed content: the payload encrypted to the issuer, whose store keeps the key.
    let options =
        PackOptions { overwrite: true, encrypt_for: Some(issuer.kem_key()), ..PackOptions::default() };
    escx::pack::pack_dir(&demo.dir.join("thermal"), &demo.licensed_package, &[demo.publisher()?], &options)?;
    // The issuer verifies a private copy under the publisher's key, takes the offers from
    // its signed [pricing], opens the content key for exactly this package and checks it
    // decrypts the payload; the publisher's key now owns demo/*.
    issuer.register_package(&demo.licensed_package, &demo.trust_publisher()?, now)?;
    let bundle = issuer.bundle(now)?;
    let request = demo.wallet()?.request(&bundle, &thermal()?, "standard", 2, now)?;
    let response = issuer.issue(&request, now)?;
    let count = demo.wallet()?.finalize(&response)?;
    let sale = issuer.sales()?.pop().context("no sale recorded")?;
    demo.issuer = Some(issuer);
    Ok(format!(
        "{} packed with its payload encrypted to the issuer; {count} blind tokens bought (sale recorded: {} x{} = {} {}); the issuer saw only blinded elements, and its DLEQ proof checked against its one published epoch key",
        file_name(&demo.licensed_package),
        sale.package,
        sale.count,
        sale.total_micros,
        sale.currency
    ))
}

fn redeem_license(demo: &mut Demo) -> anyhow::Result<String> {
    let sealed = demo.wallet()?.redeem("demo/thermal")?;
    let answer = demo.issuer()?.redeem(&sealed, escx::now_unix())?;
    let license = demo.wallet()?.install(&answer)?;
    demo.last_redemption = Some((sealed, answer.clone()));
    demo.license_id = Some(license.license_id.to_vec());
    Ok(format!(
        "a token sealed to the issuer's ML-KEM key became license {}… for fresh holder keys; nothing in the issuer's records links it to the purchase",
        &hex::encode(&license.license_id)[..16]
    ))
}

fn verify_license(demo: &mut Demo) -> anyhow::Result<String> {
    let verified = demo.wallet()?.verify(&demo.trust()?, "demo/thermal", None, None, escx::now_unix())?;
    let names: Vec<&str> = verified.checks.iter().map(|c| c.name).collect();
    Ok(format!("verified offline, no network: {}", names.join(", ")))
}

fn decrypt(demo: &mut Demo) -> anyhow::Result<String> {
    let package = &demo.licensed_package;
    let policy = demo.trust_publisher()?;
    let locked = demo.dir.join("licensed-without-key");
    match escx::extract::extract_file(package, &locked, &policy, &VerifyOptions::default()) {
        Err(error) if error.code() == "content-key-required" => {}
        Err(error) => bail!("refused for the wrong reason: {error}"),
        Ok(_) => bail!("an encrypted payload was extracted without a key"),
    }
    let mut reader = PackageReader::open_file(package)?;
    let id = reader.package_id()?;
    let key = demo.wallet()?.content_key(&id.name, &id.version, reader.root(), escx::now_unix())?;
    let target = demo.dir.join("licensed-extracted");
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    let options = VerifyOptions { content_key: Some(&key), ..VerifyOptions::default() };
    escx::extract::extract_file(package, &target, &policy, &options)?;
    let source = demo.dir.join("thermal");
    for (path, _) in SAMPLE.iter().filter(|(p, _)| *p != "notes.txt") {
        if std::fs::read(source.join(path))? != std::fs::read(target.join(path))? {
            bail!("{path} differs after decryption");
        }
    }
    Ok(format!(
        "without a license extraction is refused (content-key-required); the license's wrapped key decrypts {} offline into {}, byte-identical to the source",
        file_name(package),
        file_name(&target)
    ))
}

fn double_spend(demo: &mut Demo) -> anyhow::Result<String> {
    let (sealed, first_answer) = demo.last_redemption.as_ref().context("no redemption yet")?;
    let issuer = demo.issuer()?;
    let now = escx::now_unix();
    // A retry of the same request (its response was lost): the stored answer, nothing spent.
    let again = issuer.redeem(sealed, now)?;
    if again != *first_answer {
        bail!("a retried redemption got a different answer");
    }
    // The same token with other holder keys (a copied token): refused.
    let mut request = issuer.open_redeem_request(sealed)?;
    let thief = SecretKey::generate();
    let thief_kem = escx::kem::KemSecretKey::generate();
    request.holder_key = serde_bytes::ByteBuf::from(thief.public_key().as_bytes().to_vec());
    request.holder_kem_key = serde_bytes::ByteBuf::from(thief_kem.public_key().as_bytes().to_vec());
    let copied = escx::kem::seal(
        issuer.kem_key(),
        escx_licensing::messages::PURPOSE_REDEEM,
        &escx::cbor::encode(&request),
    )?;
    match issuer.redeem(&SealedRedeemRequest::from_bytes(copied), now) {
        Err(error) if error.code() == "token-spent" => Ok(
            "a retried redemption gets the same sealed license back (nothing spent twice); the same token with other holder keys is refused (token-spent)"
                .into(),
        ),
        Err(error) => bail!("refused for the wrong reason: {error}"),
        Ok(_) => bail!("a token was redeemed twice"),
    }
}

fn revoke(demo: &mut Demo) -> anyhow::Result<String> {
    let id = demo.license_id.clone().context("no license yet")?;
    let now = escx::now_unix();
    demo.issuer()?.revoke(&id, "demo revocation", now)?;
    let crl = demo.issuer()?.crl(now)?;
    match demo.wallet()?.verify(&demo.trust()?, "demo/thermal", None, Some(&crl), now) {
        Err(error) if error.code() == "license-revoked" => {}
        Err(error) => bail!("refused for the wrong reason: {error}"),
        Ok(_) => bail!("a revoked license verified"),
    }
    let mut reader = PackageReader::open_file(&demo.licensed_package)?;
    let id = reader.package_id()?;
    match demo.wallet()?.content_key(&id.name, &id.version, reader.root(), now) {
        Err(error) if error.code() == "license-revoked" => Ok(
            "after the issuer revokes it and the wallet takes the new signed CRL, the license is refused (license-revoked) and its content key is no longer released"
                .into(),
        ),
        Err(error) => bail!("content key refused for the wrong reason: {error}"),
        Ok(_) => bail!("a revoked license released its content key"),
    }
}

/// The solution bundle that sells demo/thermal with its own tier.
const SUITE_MANIFEST: &str = "[package]\nname = \"demo/suite\"\nversion = \"1.0.0\"\ndescription = \"Demo engineering suite\"\n\n[solution]\npackages = { \"demo/thermal\" = \"^1\" }\n\n[solution.tier]\nparty = \"suite\"\nshare_of_gross_bps = 1500\n";

fn balances_line(ledger: &Ledger) -> anyhow::Result<String> {
    let parts: Vec<String> = ledger
        .balances(None)?
        .iter()
        .filter(|b| !b.account.starts_with('@'))
        .map(|b| format!("{} {}", b.account, Micros(u64::try_from(b.micros).unwrap_or(0))))
        .collect();
    Ok(parts.join(", "))
}

fn settle(demo: &mut Demo) -> anyhow::Result<String> {
    let dir = demo.settlement_dir();
    std::fs::create_dir_all(dir.join("manifests"))?;
    // The package's own manifest carries its waterfall; the suite adds a solution tier.
    std::fs::copy(demo.dir.join("thermal/manifest.toml"), dir.join("manifests/thermal.toml"))?;
    std::fs::write(dir.join("manifests/suite.toml"), SUITE_MANIFEST)?;

    // A second customer buys one license through the Demo Suite bundle.
    let now = escx::now_unix();
    let issuer = demo.issuer()?;
    let request = demo.wallet()?.request(&issuer.bundle(now)?, &thermal()?, "standard", 1, now)?;
    demo.wallet()?.finalize(&issuer.issue(&request, now)?)?;
    let issuer_id = issuer.signing_key().id().to_string();
    let mut events: Vec<BillingEvent> =
        issuer.sales()?.iter().map(|sale| BillingEvent::from_sale(&issuer_id, sale)).collect();
    if let Some(last) = events.last_mut() {
        last.solution = Some("demo/suite".into());
    }
    let file: Vec<serde_json::Value> = events.iter().map(BillingEvent::to_json).collect();
    std::fs::write(dir.join("events.json"), serde_json::to_string_pretty(&file)?)?;

    let operator = SecretKey::generate();
    keyfile::write_secret_key(&dir.join("operator.key"), &operator, &Protection::Unencrypted, true)?;
    keyfile::write_public_key(&dir.join("operator.pub"), operator.public_key(), true)?;
    let path = dir.join("ledger.db");
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let options = Options {
        platform: Some(PlatformFee { party: "platform".into(), bps: 1000 }),
        payout_threshold: Micros(50_000_000),
    };
    let mut ledger = Ledger::create(&path, &options)?;
    let report = ledger.settle(&events, &demo.manifests()?, BATCH_DEFAULT, &operator, now)?;
    let audit = ledger.audit()?;
    if !audit.ok() || report.settled != events.len() {
        bail!("the ledger does not balance: {audit:?}");
    }
    let gross =
        Micros::checked_sum(events.iter().map(|e| e.gross_micros)).context("the demo sales overflow")?;
    let line = format!(
        "{} sales ({gross} USD, the last through the demo/suite bundle) settled through platform 10 % -> suite tier 15 % -> package waterfall (referrer 10 %, publisher the rest) in one transaction; balances: {}; double entry balances",
        events.len(),
        balances_line(&ledger)?
    );
    demo.operator = Some(operator);
    demo.events = events;
    Ok(line)
}

fn verify_statement(demo: &mut Demo) -> anyhow::Result<String> {
    let ledger = demo.ledger()?;
    let seq = ledger.statements()?.last().map(|s| s.seq).context("no statement was signed")?;
    let bytes = ledger.statement(seq)?;
    let file = demo.settlement_dir().join(format!("statement-{seq}.cbor"));
    std::fs::write(&file, &bytes)?;
    // An auditor with only the operator's public key.
    let operator = keyfile::read_public_key(&demo.settlement_dir().join("operator.pub"))?;
    let verified = statement::verify(&std::fs::read(&file)?, &operator)?;
    // The publisher with only its openings.
    let openings = ledger.openings(seq, "publisher")?;
    let amounts = statement::check_openings(&verified, &openings)?;
    let total =
        Micros::checked_sum(amounts.iter().map(|o| o.amount)).context("the publisher's payouts overflow")?;
    // One altered commitment is caught.
    // An operator who signs payouts that do not add up is caught, even with a correct root.
    let mut altered = verified.payload.clone();
    altered.entries[0].payouts[0].commitment = altered.entries[0].gross.clone();
    altered.entries_root =
        serde_bytes::ByteBuf::from(statement::merkle_root(&statement::leaves(&altered)).to_vec());
    let swapped = escx::envelope::Envelope::seal(
        statement::CONTEXT_STATEMENT,
        escx::cbor::encode(&altered),
        demo.operator()?,
    )
    .to_cbor();
    match statement::verify(&swapped, &operator) {
        Err(error) if error.code() == "statement-unconserved" => {}
        Err(error) => bail!("an altered statement was refused for the wrong reason: {error}"),
        Ok(_) => bail!("an altered statement verified"),
    }
    Ok(format!(
        "{} verified with the operator's public key alone: signature, Merkle root, {} entries whose payout commitments sum to the gross commitment (no amount revealed); the publisher's openings prove its {} USD; a re-signed statement with one payout commitment replaced is refused (statement-unconserved)",
        file_name(&file),
        verified.payload.entries.len(),
        total
    ))
}

fn payout_report(demo: &mut Demo) -> anyhow::Result<String> {
    let period = Period::of(escx::now_unix());
    let mut ledger = demo.ledger()?;
    let report = ledger.payout_report(period, None)?;
    let csv = report.to_csv();
    let file = demo.settlement_dir().join(format!("payouts-{period}.csv"));
    std::fs::write(&file, &csv)?;
    ledger.record_payout_export(&report, "csv", csv.as_bytes(), escx::now_unix())?;
    let lines: Vec<String> = report
        .lines
        .iter()
        .map(|l| {
            if l.payable.0 > 0 {
                format!("{} pays {}", l.party, l.payable)
            } else {
                format!("{} carries {}", l.party, l.carried_out)
            }
        })
        .collect();
    Ok(format!(
        "{} ({} lines, exact decimals, audit-logged): {} (threshold {} USD)",
        file_name(&file),
        report.lines.len(),
        lines.join(", "),
        report.threshold
    ))
}

fn rerun_settlement(demo: &mut Demo) -> anyhow::Result<String> {
    let mut ledger = demo.ledger()?;
    let before = ledger.balances(None)?;
    let statements = ledger.statements()?.len();
    let report =
        ledger.settle(&demo.events, &demo.manifests()?, BATCH_DEFAULT, demo.operator()?, escx::now_unix())?;
    if report.settled != 0 || report.unchanged != demo.events.len() || ledger.balances(None)? != before {
        bail!("re-running settled something: {report:?}");
    }
    if ledger.statements()?.len() != statements {
        bail!("re-running signed a new statement");
    }
    let mut changed = demo.events.clone();
    changed[0].gross_micros.0 += 1;
    match ledger.settle(&changed, &demo.manifests()?, BATCH_DEFAULT, demo.operator()?, escx::now_unix()) {
        Err(error) if error.code() == "settlement-conflict" => {}
        Err(error) => bail!("a changed event was refused for the wrong reason: {error}"),
        Ok(_) => bail!("a changed event under a used id was settled"),
    }
    Ok(format!(
        "settling the same {} events again is a no-op (0 settled, balances and statements unchanged); the same id with another amount is refused (settlement-conflict)",
        demo.events.len()
    ))
}

/// The two metered customers: a private-tier wallet and a share-tier wallet.
const METERED: [(&str, &str, Telemetry); 2] =
    [("wallet-private", "metered", Telemetry::Private), ("wallet-share", "metered-share", Telemetry::Share)];

fn meter(demo: &mut Demo) -> anyhow::Result<String> {
    let now = escx::now_unix();
    let issuer = demo.issuer()?;
    let bundle = issuer.bundle(now)?;
    // Invocations in three hours after the licenses begin; the demo's clock then moves
    // on to the end of the third hour so that the hours can be reported.
    let first = now.floor(HOUR_SECS) + HOUR_SECS;
    let clock = first + 3 * HOUR_SECS + 60;
    let mut reports = Vec::new();
    let mut lines = Vec::new();
    for (index, (name, tier, telemetry)) in METERED.iter().enumerate() {
        let wallet = Wallet::open(&demo.dir.join(name))?;
        let request = wallet.request(&bundle, &thermal()?, tier, 1, now)?;
        wallet.finalize(&issuer.issue(&request, now)?)?;
        let sealed = wallet.redeem_tier("demo/thermal", Some(tier))?;
        wallet.install(&issuer.redeem(&sealed, now)?)?;
        let meter = Meter::open(&wallet)?;
        let verified =
            wallet.verify(&Trust::issuer(issuer.signing_key().id()), "demo/thermal", None, None, first)?;
        let mut recorded = 0;
        for hour in 0..3u64 {
            for minute in [2u64, 17, 18, 41 + index as u64] {
                meter.record(
                    &verified,
                    "invocations",
                    hour + 1,
                    first + hour * HOUR_SECS + minute * 60 + 5,
                )?;
                recorded += 1;
            }
        }
        for hour in 0..3u64 {
            let report = meter.report("demo/thermal", first + hour * HOUR_SECS, *telemetry, clock)?;
            let file = demo.dir.join("reports").join(format!("{name}-{}.cbor", report.seq));
            std::fs::create_dir_all(demo.dir.join("reports"))?;
            std::fs::write(&file, &report.file)?;
            reports.push(file);
        }
        lines.push(format!("{tier} ({}) {recorded} records", telemetry.name()));
    }
    demo.reports = reports;
    demo.meter_clock = clock;
    Ok(format!(
        "two customers bought metered tiers (no charge at purchase); their meters recorded per minute ({}) and closed hours {}..{} into {} signed reports of 60 Pedersen commitments per unit, empty minutes included (the demo clock runs ahead so the hours end)",
        lines.join(", "),
        metering::format_hour(first),
        metering::format_hour(first + 2 * HOUR_SECS),
        demo.reports.len()
    ))
}

fn ingest_reports(demo: &mut Demo) -> anyhow::Result<String> {
    let now = demo.meter_clock;
    let dir = demo.dir.join("operator");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut operator = Operator::init(&dir, &[demo.issuer()?.bundle(escx::now_unix())?])?;
    operator.add_package(&demo.licensed_package, &demo.trust_publisher()?, escx::now_unix())?;
    let files = demo.reports.iter().map(std::fs::read).collect::<Result<Vec<_>, _>>()?;
    let results = operator.ingest(&files, now)?;
    if !results.iter().all(|r| matches!(r.outcome, Outcome::Stored)) {
        bail!(
            "a report was not stored: {:?}",
            results.iter().find(|r| !matches!(r.outcome, Outcome::Stored))
        );
    }
    // A replayed report is a duplicate: nothing new stored.
    let again = operator.ingest(&files[..1], now)?;
    if !matches!(again[0].outcome, Outcome::Duplicate) {
        bail!("a replayed report was not a duplicate");
    }
    Ok(format!(
        "the operator verified {} reports in parallel (issuer-signed license, holder signature, chain, time rules) and stored commitments only; the replayed first report is a duplicate, nothing counted twice",
        results.len()
    ))
}

/// The issuer and the operator as `escx serve` on a free loopback port: one purchase
/// (account token), one anonymous redemption and one hourly report over HTTP, then a stop.
fn over_http(demo: &mut Demo) -> anyhow::Result<String> {
    use escx_licensing::messages::{BundleChain, TokenResponse};
    let now = escx::now_unix();
    let issuer = Issuer::open(&demo.dir.join("issuer"), || None)?;
    let token = issuer.add_account("demo-customer", now)?;
    issuer.bundle(now)?;
    let operator = Operator::open(&demo.dir.join("operator"))?;
    // The operator judges "the hour has ended" on the demo's later meter clock.
    let meter_clock = demo.meter_clock;
    let running = escx_service::start_in_process(
        escx_service::Parts {
            issuer: vec![issuer],
            operator: vec![operator],
            ledger: None,
            registry: None,
            proofs: None,
        },
        std::sync::Arc::new(escx::now_unix),
        std::sync::Arc::new(move || meter_clock),
    )?;
    let addr = running.addr;
    let client = crate::http::Client::new(&format!("http://{addr}"))?;
    let chain = BundleChain::parse(&client.get("/.well-known/escx/issuer")?)?;
    let wallet = Wallet::open(&demo.dir.join("wallet-http"))?;
    let held = wallet.add_issuer(&chain)?;
    let request = wallet.request_at(&held, &thermal()?, "metered", 1, now)?;
    let answer = client.post("/v1/purchase", &request.to_cbor(), Some(&token))?;
    wallet.finalize(&TokenResponse::from_cbor(&answer)?)?;
    let sealed = wallet.redeem_tier("demo/thermal", Some("metered"))?;
    wallet.install(&SealedLicense::from_bytes(client.post("/v1/redeem", sealed.as_bytes(), None)?))?;
    let meter = Meter::open(&wallet)?;
    let first = now.floor(HOUR_SECS) + HOUR_SECS;
    let verified = wallet.verify(&Trust::chain(&chain), "demo/thermal", None, None, first + 300)?;
    meter.record(&verified, "invocations", 3, first + 300)?;
    let report = meter.report("demo/thermal", first, Telemetry::Private, meter_clock)?;
    let outcome = |bytes: Vec<u8>| -> anyhow::Result<String> {
        let answer: serde_json::Value = serde_json::from_slice(&bytes)?;
        Ok(answer["outcome"].as_str().unwrap_or_default().to_owned())
    };
    let stored = outcome(client.post("/v1/reports", &report.file, None)?)?;
    let again = outcome(client.post("/v1/reports", &report.file, None)?)?;
    running.stop()?;
    if (stored.as_str(), again.as_str()) != ("stored", "duplicate") {
        bail!("the report over HTTP was {stored}, its re-send {again}");
    }
    Ok(format!(
        "escx serve on http://{addr}: bought a metered token with an account token, redeemed it anonymously, reported an hour (stored; the re-send a duplicate), stopped"
    ))
}

fn close_period(demo: &mut Demo) -> anyhow::Result<String> {
    let period = metering::Period::of(demo.meter_clock - HOUR_SECS);
    let at = period.end() + 60;
    let mut operator = Operator::open(&demo.dir.join("operator"))?;
    let mut lines = Vec::new();
    let mut closes = Vec::new();
    for (name, tier, _) in METERED {
        let wallet = Wallet::open(&demo.dir.join(name))?;
        let close = Meter::open(&wallet)?.close("demo/thermal", period, None, false, at)?;
        let file = demo.dir.join("reports").join(format!("{name}-close-{period}.cbor"));
        std::fs::write(&file, &close.file)?;
        let closed = operator.close(&close.file, at)?;
        let totals: Vec<String> = closed.totals.iter().map(|(u, t)| format!("{u} {t}")).collect();
        lines.push(format!("{tier}: {}", totals.join(", ")));
        closes.push(file);
    }
    demo.closes = closes;
    Ok(format!(
        "at the end of {period} each meter opened one total per unit; the operator checked them against the sums of the stored hourly commitments ({}); for the private tier these totals are all it learns",
        lines.join("; ")
    ))
}

fn suppressed_cohort(demo: &mut Demo) -> anyhow::Result<String> {
    let hour = demo.meter_clock.floor(HOUR_SECS) - HOUR_SECS;
    let start = hour.floor(86_400);
    let mut operator = Operator::open(&demo.dir.join("operator"))?;
    match operator.aggregate(
        &thermal()?,
        (start, start + 86_400),
        100,
        None,
        &mut rand_core::OsRng,
        escx::now_unix(),
    )? {
        Aggregate::Suppressed { cohort_min_size, decision_micros, .. } => Ok(format!(
            "the share-tier sum for {}/{} is suppressed: no unit's noised count of distinct holders reaches {cohort_min_size}, so nothing is released; deciding that spent epsilon {}",
            metering::format_hour(start),
            metering::format_hour(start + 86_400),
            decision_micros as f64 / 1e6
        )),
        // The cohort count is itself noised (differential privacy, not k, is what protects
        // the holders), so a tiny cohort passes with a small probability.
        Aggregate::Released(release) => Ok(format!(
            "the noised cohort count of the share-tier sum for {}/{} crossed the threshold this time (a noised count does, rarely); the values are released with discrete Laplace noise: {:?}",
            metering::format_hour(start),
            metering::format_hour(start + 86_400),
            release.values
        )),
    }
}

fn settle_usage(demo: &mut Demo) -> anyhow::Result<String> {
    let period = metering::Period::of(demo.meter_clock - HOUR_SECS);
    let operator = Operator::open(&demo.dir.join("operator"))?;
    let billing = operator.billing(period)?;
    if let Some(refused) = billing.refused.first() {
        anyhow::bail!(
            "license {} could not be billed: {} ({})",
            refused.license_id,
            refused.reason,
            refused.code
        );
    }
    let charges = billing.charges;
    let events: Vec<BillingEvent> = charges.iter().map(crate::cmd::operator::usage_event).collect();
    let file: Vec<serde_json::Value> = events.iter().map(BillingEvent::to_json).collect();
    std::fs::write(demo.settlement_dir().join("usage-events.json"), serde_json::to_string_pretty(&file)?)?;
    let mut ledger = demo.ledger()?;
    let report =
        ledger.settle(&events, &demo.manifests()?, BATCH_DEFAULT, demo.operator()?, escx::now_unix())?;
    let audit = ledger.audit()?;
    if !audit.ok() || report.settled != events.len() {
        bail!("usage did not settle cleanly: {audit:?}");
    }
    let parts: Vec<String> = charges
        .iter()
        .map(|c| format!("{} {} min x {}/h = {}", c.tier, c.minutes, c.price_micros, c.gross_micros))
        .collect();
    Ok(format!(
        "usage billed per license and period ({}) as usage events and settled through the same waterfall; balances: {}; double entry balances",
        parts.join("; "),
        balances_line(&ledger)?
    ))
}

/// The auditor's view: statements exported, proofs published, nothing secret.
fn public_dir(demo: &Demo) -> PathBuf {
    demo.dir.join("public")
}

fn prove_statements(demo: &mut Demo) -> anyhow::Result<String> {
    let mut ledger = demo.ledger()?;
    let operator = demo.operator()?.public_key().clone();
    // Revenue proofs need the month closed: the first statement after it (here, signed at
    // the month's end as if it had passed; proofs.md §3.1).
    if let Some(first) = ledger.statements()?.first() {
        let period = Period::of(first.issued_at);
        ledger.close_period(period, demo.operator()?, period.range().1)?;
    }
    let public = public_dir(demo);
    std::fs::create_dir_all(public.join("statements"))?;
    std::fs::create_dir_all(public.join("proofs"))?;
    keyfile::write_public_key(&public.join("operator.pub"), &operator, true)?;
    let (mut payouts, mut ruled) = (0, 0);
    let list = ledger.statements()?;
    for info in &list {
        let bytes = ledger.statement(info.seq)?;
        let verified = statement::verify(&bytes, &operator)?;
        std::fs::write(public.join("statements").join(format!("statement-{}.cbor", info.seq)), &bytes)?;
        let proofs = ledger.prove_statement(info.seq, &operator)?;
        std::fs::write(
            public.join("proofs").join(format!("statement-{}.proofs", info.seq)),
            proofs.to_cbor(),
        )?;
        for entry in &verified.payload.entries {
            payouts += entry.payouts.len();
            ruled += entry.payouts.iter().filter(|p| p.rule.is_some()).count();
        }
    }
    Ok(format!(
        "the operator closed the month (its first statement after it, empty) and published Bulletproofs+ proofs beside its {} statements: all {payouts} payouts lie in [0, 2^64) (none a disguised negative), and the {ruled} with a signed basis-point rule are exactly that share of the hidden gross",
        list.len()
    ))
}

fn prove_revenue(demo: &mut Demo) -> anyhow::Result<String> {
    let ledger = demo.ledger()?;
    let operator = demo.operator()?.public_key().clone();
    let statements: Vec<statement::Verified> = ledger
        .statements()?
        .iter()
        .map(|s| statement::verify(&ledger.statement(s.seq)?, &operator).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    let openings = ledger
        .statements()?
        .iter()
        .map(|s| ledger.openings(s.seq, "publisher").map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let period = Period::of(statements[0].payload.issued_at);
    let claim = escx_settlement::proofs::RevenueClaim {
        operator: operator.id(),
        party: "publisher",
        period,
        currency: "USD",
    };
    let total = escx_settlement::proofs::prove_total(&statements, &openings, &claim)?;
    let floor = u64::try_from(total.amount).unwrap_or(0) / 2 / 1_000_000 * 1_000_000;
    let threshold = escx_settlement::proofs::prove_threshold(&statements, &openings, &claim, floor)?;
    let public = public_dir(demo);
    std::fs::write(public.join("revenue.proof"), total.to_cbor())?;
    std::fs::write(public.join("threshold.proof"), threshold.to_cbor())?;
    Ok(format!(
        "the publisher, holding only its openings, proved its {period} revenue total ({} USD) and, revealing nothing else, that it is at least {} USD",
        Micros(u64::try_from(total.amount).unwrap_or(0)),
        Micros(floor)
    ))
}

fn audit_public(demo: &mut Demo) -> anyhow::Result<String> {
    // Only the public directory: statements, proofs, the operator's public key.
    let public = public_dir(demo);
    let operator = keyfile::read_public_key(&public.join("operator.pub"))?;
    let mut statements = Vec::new();
    for entry in std::fs::read_dir(public.join("statements"))? {
        statements.push(statement::verify(&std::fs::read(entry?.path())?, &operator)?);
    }
    statement::verify_chain(&mut statements)?;
    for s in &statements {
        let proofs = escx_settlement::proofs::StatementProofs::from_cbor(&std::fs::read(
            public.join("proofs").join(format!("statement-{}.proofs", s.payload.seq)),
        )?)?;
        escx_settlement::proofs::verify_statement(&proofs, s, &operator.id())?;
    }
    let mut lines = Vec::new();
    for name in ["revenue.proof", "threshold.proof"] {
        let proof = escx_settlement::proofs::RevenueProof::from_cbor(&std::fs::read(public.join(name))?)?;
        let proven = escx_settlement::proofs::verify_revenue(&proof, &statements, &operator.id())?;
        lines.push(match proven.claim {
            escx_settlement::proofs::Claim::Total(t) => {
                format!("total {} USD", Micros(u64::try_from(t).unwrap_or(0)))
            }
            escx_settlement::proofs::Claim::AtLeast(x) => format!("at least {} USD", Micros(x)),
        });
    }
    // A forged threshold: the proven bound raised by one cent.
    let mut forged =
        escx_settlement::proofs::RevenueProof::from_cbor(&std::fs::read(public.join("threshold.proof"))?)?;
    forged.amount += 10_000;
    match escx_settlement::proofs::verify_revenue(&forged, &statements, &operator.id()) {
        Err(error) if error.code() == "proof-invalid" => {}
        Err(error) => bail!("a forged threshold was refused for the wrong reason: {error}"),
        Ok(_) => bail!("a forged threshold verified"),
    }
    Ok(format!(
        "an auditor with only public files verified the chain of {} statements, every payout's range and split proofs, and the publisher's proofs ({}); a threshold raised by one cent is refused (proof-invalid)",
        statements.len(),
        lines.join(", ")
    ))
}
