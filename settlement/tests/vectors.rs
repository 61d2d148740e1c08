//! Every waterfall vector in test-vectors/settlement/waterfalls.json pays exactly the
//! listed amounts, in the listed order, and carries recoupment as listed.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::collections::BTreeMap;

use escx_manifest::Micros;
use escx_manifest::schema::Step;
use escx_settlement::waterfall::{Tier, apply};
use serde_json::Value;

fn step(value: &Value) -> Step {
    let party = || value["party"].as_str().unwrap().to_owned();
    let number = |key: &str| value.get(key).and_then(Value::as_u64);
    if let Some(bps) = number("share_of_gross_bps") {
        Step::ShareOfGross { party: party(), bps: bps as u32 }
    } else if let Some(bps) = number("share_of_remaining_bps") {
        Step::ShareOfRemaining { party: party(), bps: bps as u32 }
    } else if let Some(micros) = number("fixed_micros") {
        Step::Fixed { party: party(), amount: Micros(micros) }
    } else if let Some(micros) = number("recoup_cap_micros") {
        Step::Recoup { party: party(), cap: Micros(micros) }
    } else {
        let weights = value["residual_weights"].as_object().unwrap();
        Step::ResidualWeights {
            weights: weights.iter().map(|(p, w)| (p.clone(), w.as_u64().unwrap() as u32)).collect(),
        }
    }
}

fn amounts(value: &Value) -> BTreeMap<String, Micros> {
    value.as_object().unwrap().iter().map(|(p, m)| (p.clone(), Micros(m.as_u64().unwrap()))).collect()
}

#[test]
fn waterfall_vectors_pay_exactly_what_they_list() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../test-vectors/settlement/waterfalls.json");
    let vectors: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let chain: Vec<Tier> = case["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tier| Tier {
                label: tier["label"].as_str().unwrap().to_owned(),
                steps: tier["steps"].as_array().unwrap().iter().map(step).collect(),
                residual: tier["residual"].as_str().map(str::to_owned),
            })
            .collect();
        for (index, settlement) in case["settlements"].as_array().unwrap().iter().enumerate() {
            let before = amounts(&settlement["recouped_before"]);
            let split = apply(&chain, Micros(settlement["gross_micros"].as_u64().unwrap()), &before).unwrap();
            let got: Vec<(String, u64)> =
                split.payouts.iter().map(|p| (p.party.clone(), p.micros.0)).collect();
            let want: Vec<(String, u64)> = settlement["payouts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_u64().unwrap()))
                .collect();
            assert_eq!(got, want, "{name} #{index}");
            assert_eq!(split.recouped, amounts(&settlement["recouped_after"]), "{name} #{index}");
        }
    }
}
