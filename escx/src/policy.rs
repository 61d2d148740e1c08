//! Trust policies (spec: trust-policy.md): which keys may sign which packages.
//!
//! A policy lists keys by name, scopes that map package-name globs to a set of key
//! *slots* with a k-of-n threshold, revoked key ids, and rotation statements by which a
//! listed key endorses a successor that then fills the same slot. `--pubkey` verification
//! is the policy "any of these keys, any package, 1 signature" ([`TrustPolicy::from_keys`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::keyfile;
use crate::rotation::RotationStatement;
use crate::sig::{KeyId, PublicKey};
use crate::timestamp;
use crate::{Error, UnixSeconds};

/// Most keys (listed plus rotated) in one policy.
pub const POLICY_KEYS_MAX: usize = 256;
/// Longest chain of rotations from a listed key.
pub const ROTATION_DEPTH_MAX: usize = 8;

/// One key the policy knows: listed, or a successor by rotation.
#[derive(Debug, Clone)]
struct PolicyKey {
    name: String,
    public: PublicKey,
    expires: Option<UnixSeconds>,
    /// Index of the listed key whose slot this key fills.
    slot: usize,
    /// Key ids from the listed key down to this one (a revocation anywhere voids it).
    lineage: Vec<KeyId>,
}

#[derive(Debug, Clone)]
struct Scope {
    pattern: String,
    matcher: globset::GlobMatcher,
    slots: Vec<usize>,
    threshold: usize,
}

/// A loaded and checked trust policy.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    source: PathBuf,
    keys: Vec<PolicyKey>,
    listed_keys: usize,
    scopes: Vec<Scope>,
    revoked: BTreeSet<KeyId>,
    /// `[registry]`: who may sign registry indexes (registry.md §4).
    registry: Option<Scope>,
    /// Built by [`TrustPolicy::from_keys`]: rules read "signed by trusted key ...".
    key_list: bool,
}

/// Why a package was accepted: one sentence per satisfied scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The satisfied rules, e.g. `scope "acme/*": 2 of 3 required, signed by acme-2026, ci`.
    pub rules: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<u32>,
    #[serde(default)]
    key: Vec<RawKey>,
    #[serde(default)]
    rotation: Vec<RawRotation>,
    #[serde(default)]
    scope: Vec<RawScope>,
    #[serde(default)]
    revoked: Vec<Spanned<String>>,
    registry: Option<Spanned<RawRegistry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    keys: Spanned<Vec<Spanned<String>>>,
    threshold: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Spanned<String>,
    public_key: Option<Spanned<String>>,
    public_key_file: Option<Spanned<String>>,
    expires: Option<Spanned<toml::value::Datetime>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    statement: Option<Spanned<String>>,
    statement_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    packages: Spanned<String>,
    keys: Spanned<Vec<Spanned<String>>>,
    threshold: Option<Spanned<u32>>,
}

impl TrustPolicy {
    /// Accept any package with at least one valid signature by one of `keys`.
    pub fn from_keys(keys: Vec<PublicKey>) -> Self {
        let keys: Vec<PolicyKey> = keys
            .into_iter()
            .enumerate()
            .map(|(slot, public)| PolicyKey {
                name: public.id().to_string(),
                lineage: vec![public.id()],
                public,
                expires: None,
                slot,
            })
            .collect();
        let scope = Scope {
            pattern: "**".to_owned(),
            matcher: match_all(),
            slots: (0..keys.len()).collect(),
            threshold: 1,
        };
        Self {
            source: PathBuf::from("--pubkey"),
            listed_keys: keys.len(),
            keys,
            scopes: vec![scope],
            revoked: BTreeSet::new(),
            registry: None,
            key_list: true,
        }
    }

    /// Adds registry index signers: any one of `keys` may sign the index (the shorthand
    /// of `--registry-key`). Keys the policy already lists keep their entry.
    pub fn with_registry_keys(mut self, keys: Vec<PublicKey>) -> Self {
        let mut slots = Vec::new();
        for public in keys {
            let slot = match self.keys.iter().position(|k| k.public.id() == public.id()) {
                Some(existing) => self.keys[existing].slot,
                None => {
                    let slot = self.keys.len();
                    self.keys.push(PolicyKey {
                        name: public.id().to_string(),
                        lineage: vec![public.id()],
                        public,
                        expires: None,
                        slot,
                    });
                    self.listed_keys += 1;
                    slot
                }
            };
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
        self.registry =
            Some(Scope { pattern: "registry index".into(), matcher: match_all(), slots, threshold: 1 });
        self
    }

    /// Loads a policy file; relative `*_file` paths are resolved from its directory.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let base = crate::fsutil::parent_dir(path);
        Self::parse(&text, &base, path)
    }

    /// Parses policy text. `source` names it in errors; `base_dir` resolves file paths.
    pub fn parse(text: &str, base_dir: &Path, source: &Path) -> Result<Self, Error> {
        let fail = |span: Option<std::ops::Range<usize>>, reason: String| {
            let reason = match span {
                Some(span) => {
                    let (line, col) = crate::header::line_col(text, span.start);
                    format!("line {line}, column {col}: {reason}")
                }
                None => reason,
            };
            Error::PolicyInvalid { path: source.to_path_buf(), reason }
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let message = e.message().to_owned();
            fail(e.span(), message)
        })?;
        if *raw.version.get_ref() != 1 {
            return Err(fail(
                Some(raw.version.span()),
                "unsupported policy version; expected version = 1".into(),
            ));
        }

        let mut keys: Vec<PolicyKey> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (index, raw_key) in raw.key.iter().enumerate() {
            let name = raw_key.name.get_ref().clone();
            let public = match (&raw_key.public_key, &raw_key.public_key_file) {
                (Some(inline), None) => keyfile::parse_public_key(inline.get_ref())
                    .map_err(|reason| fail(Some(inline.span()), format!("key {name:?}: {reason}")))?,
                (None, Some(file)) => keyfile::read_public_key(&base_dir.join(file.get_ref()))
                    .map_err(|e| fail(Some(file.span()), format!("key {name:?}: {e}")))?,
                _ => {
                    return Err(fail(
                        Some(raw_key.name.span()),
                        format!("key {name:?}: give exactly one of public_key or public_key_file"),
                    ));
                }
            };
            let expires = raw_key
                .expires
                .as_ref()
                .map(|e| timestamp::from_toml(e.get_ref()).map_err(|reason| fail(Some(e.span()), reason)))
                .transpose()?;
            if by_name.insert(name.clone(), index).is_some() {
                return Err(fail(Some(raw_key.name.span()), format!("key name {name:?} is used twice")));
            }
            if keys.iter().any(|k| k.public.id() == public.id()) {
                return Err(fail(
                    Some(raw_key.name.span()),
                    format!("key {name:?} repeats key {}", public.id()),
                ));
            }
            keys.push(PolicyKey { name, lineage: vec![public.id()], public, expires, slot: index });
        }
        let listed_keys = keys.len();

        let mut revoked = BTreeSet::new();
        for id in &raw.revoked {
            let key_id = id.get_ref().parse::<KeyId>().map_err(|e| fail(Some(id.span()), e.to_string()))?;
            revoked.insert(key_id);
        }

        // Rotations may chain (a successor endorses its own successor) and may be listed
        // in any order, so apply them until no more can be placed.
        let mut pending: Vec<(RotationStatement, std::ops::Range<usize>)> = Vec::new();
        for raw_rotation in &raw.rotation {
            let (statement, span) = match (&raw_rotation.statement, &raw_rotation.statement_file) {
                (Some(inline), None) => (
                    RotationStatement::parse(inline.get_ref()).map_err(|r| fail(Some(inline.span()), r))?,
                    inline.span(),
                ),
                (None, Some(file)) => (
                    RotationStatement::read(&base_dir.join(file.get_ref()))
                        .map_err(|e| fail(Some(file.span()), e.to_string()))?,
                    file.span(),
                ),
                _ => {
                    return Err(fail(
                        None,
                        "each [[rotation]] needs exactly one of statement or statement_file".into(),
                    ));
                }
            };
            pending.push((statement, span));
        }
        while !pending.is_empty() {
            let before = pending.len();
            let mut still_pending = Vec::new();
            for (statement, span) in pending {
                let Some(parent) = keys.iter().position(|k| k.public.id() == statement.signer()) else {
                    still_pending.push((statement, span));
                    continue;
                };
                let rotation = statement
                    .verify(&keys[parent].public)
                    .map_err(|e| fail(Some(span.clone()), e.to_string()))?;
                if keys.iter().any(|k| k.public.id() == rotation.new_key.id()) {
                    return Err(fail(
                        Some(span),
                        format!("rotation to key {} which the policy already knows", rotation.new_key.id()),
                    ));
                }
                let parent_key = &keys[parent];
                if parent_key.lineage.len() > ROTATION_DEPTH_MAX {
                    return Err(fail(Some(span), format!("rotation chain longer than {ROTATION_DEPTH_MAX}")));
                }
                let mut lineage = parent_key.lineage.clone();
                lineage.push(rotation.new_key.id());
                let successor = PolicyKey {
                    name: format!("{} (rotated to {})", keys[parent_key.slot].name, rotation.new_key.id()),
                    slot: parent_key.slot,
                    lineage,
                    public: rotation.new_key,
                    expires: None,
                };
                keys.push(successor);
                if keys.len() > POLICY_KEYS_MAX {
                    return Err(fail(None, format!("more than {POLICY_KEYS_MAX} keys")));
                }
            }
            if still_pending.len() == before {
                let (statement, span) = &still_pending[0];
                return Err(fail(
                    Some(span.clone()),
                    format!(
                        "rotation statement signed by key {}, which the policy does not list",
                        statement.signer()
                    ),
                ));
            }
            pending = still_pending;
        }

        let registry = match &raw.registry {
            None => None,
            Some(raw_registry) => {
                let raw_registry = raw_registry.get_ref();
                let (slots, threshold) =
                    resolve_slots(&raw_registry.keys, raw_registry.threshold.as_ref(), &by_name, &fail)?;
                Some(Scope { pattern: "registry index".into(), matcher: match_all(), slots, threshold })
            }
        };

        if raw.scope.is_empty() {
            return Err(fail(None, "no [[scope]]: the policy would trust nothing".into()));
        }
        let mut scopes = Vec::new();
        for raw_scope in &raw.scope {
            let pattern = raw_scope.packages.get_ref().clone();
            let matcher = globset::GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| fail(Some(raw_scope.packages.span()), format!("invalid glob: {e}")))?
                .compile_matcher();
            let (slots, threshold) =
                resolve_slots(&raw_scope.keys, raw_scope.threshold.as_ref(), &by_name, &fail)?;
            scopes.push(Scope { pattern, matcher, slots, threshold });
        }
        Ok(Self {
            source: source.to_path_buf(),
            keys,
            listed_keys,
            scopes,
            revoked,
            registry,
            key_list: false,
        })
    }

    /// Where the policy came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// A stable identifier for the registry this policy trusts: `derive_key("escx v1
    /// registry state id", sorted key ids of the [registry] slots)`, as 32 hex digits.
    /// Client state (the last index version accepted) is kept per identifier, so a
    /// mirror and its origin share it. `None` without a `[registry]` table.
    pub fn registry_id(&self) -> Option<String> {
        let scope = self.registry.as_ref()?;
        let mut ids: Vec<KeyId> = scope.slots.iter().map(|slot| self.keys[*slot].public.id()).collect();
        ids.sort();
        let bytes: Vec<u8> = ids.iter().flat_map(|id| id.0).collect();
        Some(hex::encode(&blake3::derive_key(crate::hash::CONTEXT_REGISTRY_STATE, &bytes)[..16]))
    }

    /// One state identifier per registry key of the `[registry]` table:
    /// `hex(derive_key("escx v1 registry state id", key id)[0..16])` (registry.md §5). A
    /// client keeps its accepted index version under each, so adding, removing or
    /// rotating some of a registry's keys keeps rollback protection through the keys that
    /// stay. (For a one-key registry this equals [`Self::registry_id`].)
    pub fn registry_key_ids(&self) -> Vec<String> {
        let Some(scope) = self.registry.as_ref() else { return Vec::new() };
        let mut ids: Vec<String> = scope
            .slots
            .iter()
            .map(|slot| {
                let id = self.keys[*slot].public.id();
                hex::encode(&blake3::derive_key(crate::hash::CONTEXT_REGISTRY_STATE, &id.0)[..16])
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The public key with this id, if the policy knows it (listed or rotated, revoked
    /// or not: signatures by known keys are always checked).
    pub fn key(&self, id: KeyId) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.public.id() == id).map(|k| &k.public)
    }

    /// The policy's name for a key id.
    pub fn key_name(&self, id: KeyId) -> Option<&str> {
        self.keys.iter().find(|k| k.public.id() == id).map(|k| k.name.as_str())
    }

    /// Number of keys listed in the policy (not counting rotated successors).
    pub fn listed_key_count(&self) -> usize {
        self.listed_keys
    }

    /// Decides whether valid signatures by `signers` are enough for `package` at `now`
    /// (trust-policy.md §5). Every scope whose glob matches the name must be satisfied.
    pub fn evaluate(&self, package: &str, signers: &[KeyId], now: UnixSeconds) -> Result<Decision, Error> {
        let (usable, mut notes) = self.usable_signers(signers, now);
        let matching: Vec<&Scope> = self.scopes.iter().filter(|s| s.matcher.is_match(package)).collect();
        if matching.is_empty() {
            notes.insert(0, format!("no scope in {} covers package {package:?}", self.source.display()));
            return Err(Error::PolicyRejected { package: package.to_owned(), reasons: notes });
        }
        let mut rules = Vec::new();
        let mut unmet = Vec::new();
        for scope in matching {
            let (met, sentence) = self.judge(scope, &usable);
            if met { rules.push(sentence) } else { unmet.push(sentence) }
        }
        if unmet.is_empty() {
            Ok(Decision { rules })
        } else {
            unmet.extend(notes);
            Err(Error::PolicyRejected { package: package.to_owned(), reasons: unmet })
        }
    }

    /// Decides whether valid signatures by `signers` are enough for a registry index at
    /// `now` (trust-policy.md §6): the `[registry]` keys and threshold, with the same expiry,
    /// revocation and rotation rules as packages.
    pub fn evaluate_registry(&self, signers: &[KeyId], now: UnixSeconds) -> Result<Decision, Error> {
        let subject = "the registry index".to_owned();
        let Some(scope) = &self.registry else {
            return Err(Error::PolicyRejected {
                package: subject,
                reasons: vec![format!(
                    "{} has no [registry] table naming the index signers",
                    self.source.display()
                )],
            });
        };
        let (usable, notes) = self.usable_signers(signers, now);
        let (met, sentence) = self.judge(scope, &usable);
        if met {
            Ok(Decision { rules: vec![sentence] })
        } else {
            Err(Error::PolicyRejected {
                package: subject,
                reasons: std::iter::once(sentence).chain(notes).collect(),
            })
        }
    }

    /// The signers that count at `now`, and why the others do not.
    fn usable_signers(&self, signers: &[KeyId], now: UnixSeconds) -> (Vec<&PolicyKey>, Vec<String>) {
        let mut notes = Vec::new();
        let mut usable = Vec::new();
        for id in signers {
            let Some(key) = self.keys.iter().find(|k| k.public.id() == *id) else { continue };
            if let Some(revoked) = key.lineage.iter().find(|id| self.revoked.contains(id)) {
                notes.push(if revoked == id {
                    format!("key {} is revoked", key.name)
                } else {
                    format!("key {} descends from revoked key {revoked}", key.name)
                });
            } else if let Some(expires) = key.expires.filter(|expires| now >= *expires) {
                notes.push(format!("key {} expired at {}", key.name, timestamp::format_rfc3339(expires)));
            } else {
                usable.push(key);
            }
        }
        (usable, notes)
    }

    /// Whether `usable` fills enough of the scope's slots, and the sentence saying so.
    fn judge(&self, scope: &Scope, usable: &[&PolicyKey]) -> (bool, String) {
        let filled: Vec<&str> = scope
            .slots
            .iter()
            .filter(|slot| usable.iter().any(|k| k.slot == **slot))
            .map(|slot| self.keys[*slot].name.as_str())
            .collect();
        let met = filled.len() >= scope.threshold;
        if self.key_list && scope.threshold == 1 {
            return match filled.as_slice() {
                [] => (false, format!("no valid signature by a trusted key for {}", scope.pattern_text())),
                _ => (true, format!("signed by trusted key {}", filled.join(", "))),
            };
        }
        let names: Vec<&str> = scope.slots.iter().map(|s| self.keys[*s].name.as_str()).collect();
        let sentence = format!(
            "{}: {} of {} required ({}), valid signatures from {}",
            scope.pattern_text(),
            scope.threshold,
            scope.slots.len(),
            names.join(", "),
            if filled.is_empty() { "none".to_owned() } else { filled.join(", ") }
        );
        (met, sentence)
    }
}

impl Scope {
    fn pattern_text(&self) -> String {
        if self.pattern == "registry index" {
            self.pattern.clone()
        } else {
            format!("scope {:?}", self.pattern)
        }
    }
}

/// A matcher for every package name.
fn match_all() -> globset::GlobMatcher {
    match globset::Glob::new("**") {
        Ok(glob) => glob.compile_matcher(),
        Err(_) => unreachable!("\"**\" is a valid glob"),
    }
}

/// Turns a list of key names and an optional threshold into slots, checking both.
fn resolve_slots(
    names: &Spanned<Vec<Spanned<String>>>,
    threshold: Option<&Spanned<u32>>,
    by_name: &HashMap<String, usize>,
    fail: &impl Fn(Option<std::ops::Range<usize>>, String) -> Error,
) -> Result<(Vec<usize>, usize), Error> {
    let mut slots = Vec::new();
    for name in names.get_ref() {
        let slot = *by_name.get(name.get_ref()).ok_or_else(|| {
            fail(Some(name.span()), format!("unknown key {:?}; list it in a [[key]] table", name.get_ref()))
        })?;
        if slots.contains(&slot) {
            return Err(fail(Some(name.span()), format!("key {:?} listed twice", name.get_ref())));
        }
        slots.push(slot);
    }
    if slots.is_empty() {
        return Err(fail(Some(names.span()), "needs at least one key".into()));
    }
    let threshold = match threshold {
        Some(t) => {
            let value = *t.get_ref() as usize;
            if value == 0 || value > slots.len() {
                return Err(fail(
                    Some(t.span()),
                    format!("threshold must be between 1 and {} (the number of keys)", slots.len()),
                ));
            }
            value
        }
        None => 1,
    };
    Ok((slots, threshold))
}
