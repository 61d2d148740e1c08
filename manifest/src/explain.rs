//! The words of an unsatisfiable resolution (resolution.md §3): PubGrub's derivation,
//! written by a [`ReportFormatter`] in the terms the manifest uses. Requirement bounds are
//! printed as people write them (`<2.0.0`, not the solver's internal `<2.0.0-0`, which
//! keeps pre-releases of 2.0.0 out of `^1`), and the root's incompatibility reads as its
//! requirements not being met rather than as the root being "forbidden".

use std::fmt::Write as _;
use std::ops::Bound;

use pubgrub::{Derived, External, Map, ReportFormatter, Term};
use semver::Version;
use version_ranges::Ranges;

use crate::resolve::Node;

type Set = Ranges<Version>;

/// The formatter for [`pubgrub::DefaultStringReporter::report_with_formatter`].
pub(crate) struct Explainer;

/// A version as a requirement bound names it: the lowest pre-release `-0` that the
/// solver uses to exclude pre-releases is the release itself.
fn bound_version(version: &Version) -> String {
    if version.pre.as_str() == "0" && version.build.is_empty() {
        Version::new(version.major, version.minor, version.patch).to_string()
    } else {
        version.to_string()
    }
}

/// A version set in requirement syntax (`*`, `1.2.0`, `>=1.2.0, <2.0.0`, `... | ...`).
fn set_text(set: &Set) -> String {
    let mut out = String::new();
    for (index, (low, high)) in set.iter().enumerate() {
        if index > 0 {
            out.push_str(" | ");
        }
        let segment = match (low, high) {
            (Bound::Unbounded, Bound::Unbounded) => "*".to_owned(),
            (Bound::Unbounded, Bound::Included(v)) => format!("<={}", bound_version(v)),
            (Bound::Unbounded, Bound::Excluded(v)) => format!("<{}", bound_version(v)),
            (Bound::Included(v), Bound::Unbounded) => format!(">={}", bound_version(v)),
            (Bound::Included(v), Bound::Included(w)) if v == w => bound_version(v),
            (Bound::Included(v), Bound::Included(w)) => {
                format!(">={}, <={}", bound_version(v), bound_version(w))
            }
            (Bound::Included(v), Bound::Excluded(w)) => {
                format!(">={}, <{}", bound_version(v), bound_version(w))
            }
            (Bound::Excluded(v), Bound::Unbounded) => format!(">{}", bound_version(v)),
            (Bound::Excluded(v), Bound::Included(w)) => {
                format!(">{}, <={}", bound_version(v), bound_version(w))
            }
            (Bound::Excluded(v), Bound::Excluded(w)) => {
                format!(">{}, <{}", bound_version(v), bound_version(w))
            }
        };
        out.push_str(&segment);
    }
    if out.is_empty() { "no version".to_owned() } else { out }
}

/// `package` alone when every version is meant, else `package set`.
fn named(package: &Node, set: &Set) -> String {
    if set == &Set::full() { package.to_string() } else { format!("{package} {}", set_text(set)) }
}

fn term_text(package: &Node, term: &Term<Set>) -> String {
    match term {
        Term::Positive(set) => named(package, set),
        Term::Negative(set) => format!("not {}", named(package, set)),
    }
}

impl ReportFormatter<Node, Set, String> for Explainer {
    type Output = String;

    fn format_external(&self, external: &External<Node, Set, String>) -> String {
        match external {
            External::NotRoot(package, version) => format!("we are resolving {package} {version}"),
            External::NoVersions(package, set) if set == &Set::full() => {
                format!("the index has no version of {package}")
            }
            External::NoVersions(package, set) => {
                format!("the index has no version of {package} matching {}", set_text(set))
            }
            External::Custom(package, set, why) => format!("{} is unavailable ({why})", named(package, set)),
            External::FromDependencyOf(package, set, dependency, dependency_set) => {
                format!("{} depends on {}", named(package, set), named(dependency, dependency_set))
            }
        }
    }

    fn format_terms(&self, terms: &Map<Node, Term<Set>>) -> String {
        let terms: Vec<_> = terms.iter().collect();
        match terms.as_slice() {
            [] => "version solving failed".to_owned(),
            [(Node::Root(name), Term::Positive(set))] => {
                format!("the requirements of {name} {} cannot all be met", set_text(set))
            }
            [(package, Term::Positive(set))] => format!("{} cannot be used", named(package, set)),
            [(package, Term::Negative(set))] => format!("{} is required", named(package, set)),
            [(p1, Term::Positive(s1)), (p2, Term::Negative(s2))]
            | [(p2, Term::Negative(s2)), (p1, Term::Positive(s1))] => self.format_external(
                &External::FromDependencyOf((*p1).clone(), s1.clone(), (*p2).clone(), s2.clone()),
            ),
            many => {
                let mut text = String::new();
                for (index, (package, term)) in many.iter().enumerate() {
                    let _ = write!(text, "{}{}", if index > 0 { ", " } else { "" }, term_text(package, term));
                }
                text + " are incompatible"
            }
        }
    }

    fn explain_both_external(
        &self,
        external1: &External<Node, Set, String>,
        external2: &External<Node, Set, String>,
        current_terms: &Map<Node, Term<Set>>,
    ) -> String {
        format!(
            "Because {} and {}, {}.",
            self.format_external(external1),
            self.format_external(external2),
            self.format_terms(current_terms)
        )
    }

    fn explain_both_ref(
        &self,
        ref_id1: usize,
        derived1: &Derived<Node, Set, String>,
        ref_id2: usize,
        derived2: &Derived<Node, Set, String>,
        current_terms: &Map<Node, Term<Set>>,
    ) -> String {
        format!(
            "Because {} ({ref_id1}) and {} ({ref_id2}), {}.",
            self.format_terms(&derived1.terms),
            self.format_terms(&derived2.terms),
            self.format_terms(current_terms)
        )
    }

    fn explain_ref_and_external(
        &self,
        ref_id: usize,
        derived: &Derived<Node, Set, String>,
        external: &External<Node, Set, String>,
        current_terms: &Map<Node, Term<Set>>,
    ) -> String {
        format!(
            "Because {} ({ref_id}) and {}, {}.",
            self.format_terms(&derived.terms),
            self.format_external(external),
            self.format_terms(current_terms)
        )
    }

    fn and_explain_external(
        &self,
        external: &External<Node, Set, String>,
        current_terms: &Map<Node, Term<Set>>,
    ) -> String {
        format!("And because {}, {}.", self.format_external(external), self.format_terms(current_terms))
    }

    fn and_explain_ref(
        &self,
        ref_id: usize,
        derived: &Derived<Node, Set, String>,
        current_terms: &Map<Node, Term<Set>>,
    ) -> String {
        format!(
            "And because {} ({ref_id}), {}.",
            self.format_terms(&derived.terms),
            self.format_terms(current_terms)
        )
    }

    fn and_explain_prior_and_external(
        &self,
        prior_external: &External<Node, Set, String>,
        external: &External<Node, Set, String>,
        current_terms: &Map<Node, Term<Set>>,
    ) -> String {
        format!(
            "And because {} and {}, {}.",
            self.format_external(prior_external),
            self.format_external(external),
            self.format_terms(current_terms)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn bounds_are_written_as_people_write_them() {
        let caret = Set::between(v("1.2.0"), v("2.0.0-0"));
        assert_eq!(set_text(&caret), ">=1.2.0, <2.0.0");
        assert_eq!(set_text(&Set::singleton(v("1.0.0-0.3"))), "1.0.0-0.3");
        assert_eq!(set_text(&Set::full()), "*");
        assert_eq!(set_text(&Set::empty()), "no version");
    }
}
