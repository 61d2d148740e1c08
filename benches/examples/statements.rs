//! Writes a chain of signed statements for measuring `escx audit statements` (benches/README.md):
//!
//!     cargo run --release -p escx-benches --example statements -- DIR STATEMENTS ENTRIES
//!
//! DIR gets `statement-<seq>.cbor` (STATEMENTS of them, ENTRIES entries each, three payouts
//! per entry) and `op.pub`, the key that signed them.

use std::path::PathBuf;

use escx::sig::SecretKey;
use escx_manifest::Micros;
use escx_settlement::statement::{self, EntryInput};
use escx_settlement::store::RecordKind;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, count, entries] = args.as_slice() else {
        return Err("usage: statements DIR STATEMENTS ENTRIES".into());
    };
    let dir = PathBuf::from(dir);
    let (count, entries): (u64, u32) = (count.parse()?, entries.parse()?);
    std::fs::create_dir_all(&dir)?;
    let key = SecretKey::generate();
    escx::keyfile::write_public_key(&dir.join("op.pub"), key.public_key(), true)?;
    let mut previous = [0u8; 32];
    for seq in 1..=count {
        let inputs: Vec<EntryInput> = (0..entries)
            .map(|i| {
                let mut settlement = [0u8; 32];
                settlement[..8].copy_from_slice(&seq.to_le_bytes());
                settlement[8..12].copy_from_slice(&i.to_le_bytes());
                let gross = 10_000 + u64::from(i % 1000);
                EntryInput {
                    settlement,
                    kind: RecordKind::Sale,
                    currency: "USD".into(),
                    gross: Micros(gross),
                    payouts: vec![
                        ("platform".into(), Micros(1_500)),
                        ("referrer".into(), Micros(500)),
                        ("acme".into(), Micros(gross - 2_000)),
                    ],
                    rules: Vec::new(),
                }
            })
            .collect();
        let built = statement::build(
            &[7; 16],
            seq,
            &previous,
            escx::UnixSeconds(1_800_000_000 + seq),
            &inputs,
            &key,
        )?;
        previous = built.hash;
        std::fs::write(dir.join(format!("statement-{seq}.cbor")), &built.bytes)?;
    }
    Ok(())
}
