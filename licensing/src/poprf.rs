//! RFC 9497 POPRF (partially-oblivious PRF) with ciphersuite ristretto255-SHA512, as used
//! for blind license tokens (spec: licensing.md §2).
//!
//! A customer blinds random token inputs; the issuer evaluates them under its key for the
//! epoch and the public info (package, tier, epoch), and proves with one batched DLEQ proof
//! that it used the published key; the customer verifies the proof while unblinding. The
//! issuer never sees the inputs or outputs, only blinded elements, which are uniformly
//! random group elements.
//!
//! This module is a thin typed layer over the `voprf` crate: fixed sizes, byte encodings,
//! and the canonical public-info encoding.

use escx::header::PackageName;
use rand_core::OsRng;
use voprf::{BlindedElement, EvaluationElement, PoprfClient, PoprfServer, Proof, Ristretto255};
use zeroize::Zeroizing;

use crate::Error;

type Suite = Ristretto255;

/// Length of a serialized group element (blinded or evaluated) and of a public key.
pub const ELEMENT_BYTES: usize = 32;
/// Length of a serialized secret scalar.
pub const SCALAR_BYTES: usize = 32;
/// Length of a serialized batched DLEQ proof.
pub const PROOF_BYTES: usize = 64;
/// Length of a token output (SHA-512).
pub const OUTPUT_BYTES: usize = 64;
/// Length of a token input (random).
pub const INPUT_BYTES: usize = 32;
/// Most tokens in one issuance batch.
pub const BATCH_MAX: usize = 1000;

fn encoding(what: &str) -> Error {
    Error::PoprfEncoding { what: what.to_owned() }
}

/// Prefix of the public info, naming the format.
pub const INFO_LABEL: &[u8] = b"escx/license-info/v1";

/// What a token is for: the POPRF public info (licensing.md §2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenInfo {
    /// Package name.
    pub package: PackageName,
    /// Pricing tier name.
    pub tier: String,
    /// Issuer key epoch.
    pub epoch: u32,
}

/// The longest tier name a token's info can carry (its `u16` length prefix). A package
/// name is at most 128 bytes by construction ([`PackageName`]).
pub const INFO_FIELD_BYTES_MAX: usize = u16::MAX as usize;

impl TokenInfo {
    /// Refuses a tier too long for the info encoding.
    pub(crate) fn check_tier(tier: &str) -> Result<(), crate::Error> {
        if tier.len() > INFO_FIELD_BYTES_MAX {
            return Err(crate::Error::Malformed {
                what: "token info",
                reason: format!("the tier name is {} bytes, above {INFO_FIELD_BYTES_MAX}", tier.len()),
            });
        }
        Ok(())
    }

    /// `"escx/license-info/v1" || u16be(len(package)) || package || u16be(len(tier)) || tier ||
    /// u32be(epoch)`.
    ///
    /// Messages carrying a package and tier are refused at parsing when the package is not
    /// a package name or the tier is longer than [`INFO_FIELD_BYTES_MAX`], so the length
    /// prefixes never saturate and the encoding is injective.
    pub fn encode(&self) -> Vec<u8> {
        let length = |text: &str| u16::try_from(text.len()).unwrap_or(u16::MAX).to_be_bytes();
        let mut out = Vec::with_capacity(INFO_LABEL.len() + self.package.len() + self.tier.len() + 8);
        out.extend_from_slice(INFO_LABEL);
        out.extend_from_slice(&length(&self.package));
        out.extend_from_slice(self.package.as_bytes());
        out.extend_from_slice(&length(&self.tier));
        out.extend_from_slice(self.tier.as_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out
    }
}

/// An issuer's POPRF key for one epoch. The scalar is zeroized on drop.
pub struct IssuerKey {
    secret: Zeroizing<[u8; SCALAR_BYTES]>,
    public: [u8; ELEMENT_BYTES],
}

impl IssuerKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, Error> {
        let server = PoprfServer::<Suite>::new(&mut OsRng).map_err(|e| Error::Poprf(e.to_string()))?;
        Self::from_server(&server)
    }

    /// RFC 9497 DeriveKeyPair(seed, info), for test vectors.
    pub fn derive(seed: &[u8], key_info: &[u8]) -> Result<Self, Error> {
        let server =
            PoprfServer::<Suite>::new_from_seed(seed, key_info).map_err(|e| Error::Poprf(e.to_string()))?;
        Self::from_server(&server)
    }

    /// Rebuilds a key from its stored scalar.
    pub(crate) fn from_secret(bytes: &[u8]) -> Result<Self, Error> {
        let server = PoprfServer::<Suite>::new_with_key(bytes)
            .map_err(|e| Error::Poprf(format!("bad POPRF key: {e}")))?;
        Self::from_server(&server)
    }

    fn from_server(server: &PoprfServer<Suite>) -> Result<Self, Error> {
        // The voprf server keeps its key private; its serialization is sk || pk.
        let serialized = Zeroizing::new(server.serialize().to_vec());
        let mut secret = Zeroizing::new([0u8; SCALAR_BYTES]);
        secret.copy_from_slice(&serialized[..SCALAR_BYTES]);
        let mut public = [0u8; ELEMENT_BYTES];
        public.copy_from_slice(&serialized[SCALAR_BYTES..SCALAR_BYTES + ELEMENT_BYTES]);
        Ok(Self { secret, public })
    }

    fn server(&self) -> Result<PoprfServer<Suite>, Error> {
        PoprfServer::<Suite>::new_with_key(&*self.secret).map_err(|e| Error::Poprf(e.to_string()))
    }

    /// The secret scalar, for storage.
    pub fn secret_bytes(&self) -> &[u8; SCALAR_BYTES] {
        &self.secret
    }

    /// The public key (published in the issuer bundle).
    pub fn public_key(&self) -> [u8; ELEMENT_BYTES] {
        self.public
    }

    /// Evaluates a batch of blinded elements under `info` with one batched DLEQ proof.
    pub fn evaluate_batch(
        &self,
        blinded: &[[u8; ELEMENT_BYTES]],
        info: &TokenInfo,
    ) -> Result<Evaluated, Error> {
        self.evaluate_batch_with(blinded, &info.encode(), &mut OsRng)
    }

    /// [`Self::evaluate_batch`] with raw info bytes and a chosen RNG for the proof's
    /// random scalar (RFC 9497 test vectors fix it).
    fn evaluate_batch_with<R: rand_core::RngCore + rand_core::CryptoRng>(
        &self,
        blinded: &[[u8; ELEMENT_BYTES]],
        info: &[u8],
        rng: &mut R,
    ) -> Result<Evaluated, Error> {
        if blinded.is_empty() || blinded.len() > BATCH_MAX {
            return Err(Error::BatchSize { count: blinded.len(), max: BATCH_MAX });
        }
        let elements = blinded
            .iter()
            .map(|b| BlindedElement::<Suite>::deserialize(b).map_err(|_| encoding("invalid blinded element")))
            .collect::<Result<Vec<_>, _>>()?;
        let result = self
            .server()?
            .batch_blind_evaluate(rng, &elements, Some(info))
            .map_err(|e| Error::Poprf(e.to_string()))?;
        Ok(Evaluated {
            elements: result.messages.iter().map(|m| to_array(&m.serialize())).collect(),
            proof: to_array(&result.proof.serialize()),
        })
    }

    /// The token output the issuer computes for `input` under `info`, to check a token
    /// presented for redemption (RFC 9497 Evaluate).
    pub fn evaluate(&self, input: &[u8], info: &TokenInfo) -> Result<[u8; OUTPUT_BYTES], Error> {
        self.evaluate_raw(input, &info.encode())
    }

    fn evaluate_raw(&self, input: &[u8], info: &[u8]) -> Result<[u8; OUTPUT_BYTES], Error> {
        let output = self.server()?.evaluate(input, Some(info)).map_err(|e| Error::Poprf(e.to_string()))?;
        Ok(to_array(&output))
    }
}

/// The issuer's answer to a batch: one evaluated element per blinded element and a proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluated {
    /// Evaluated elements, in request order.
    pub elements: Vec<[u8; ELEMENT_BYTES]>,
    /// Batched DLEQ proof.
    pub proof: [u8; PROOF_BYTES],
}

/// An unblinded token: the random input and its POPRF output. Whoever holds it can
/// redeem it once; the input is zeroized on drop.
pub struct TokenSecret {
    /// The random input.
    pub input: Zeroizing<[u8; INPUT_BYTES]>,
    /// The POPRF output for the input under the token's info.
    pub output: [u8; OUTPUT_BYTES],
}

/// One token's saved client state: its input and the serialized client (blind and
/// blinded element), both secret.
pub(crate) type PendingPart = (Zeroizing<[u8; INPUT_BYTES]>, Zeroizing<Vec<u8>>);

/// The client's secret state for a batch: inputs and blinds (zeroized on drop).
pub struct Blinded {
    inputs: Vec<Zeroizing<[u8; INPUT_BYTES]>>,
    clients: Vec<PoprfClient<Suite>>,
    /// The blinded elements to send.
    pub elements: Vec<[u8; ELEMENT_BYTES]>,
}

impl Blinded {
    /// Draws `count` random inputs and blinds them.
    pub fn new(count: usize) -> Result<Self, Error> {
        if count == 0 || count > BATCH_MAX {
            return Err(Error::BatchSize { count, max: BATCH_MAX });
        }
        let mut inputs = Vec::with_capacity(count);
        let mut clients = Vec::with_capacity(count);
        let mut elements = Vec::with_capacity(count);
        for _ in 0..count {
            let mut input = Zeroizing::new([0u8; INPUT_BYTES]);
            rand_core::RngCore::fill_bytes(&mut OsRng, &mut *input);
            let blind =
                PoprfClient::<Suite>::blind(&*input, &mut OsRng).map_err(|e| Error::Poprf(e.to_string()))?;
            elements.push(to_array(&blind.message.serialize()));
            clients.push(blind.state);
            inputs.push(input);
        }
        Ok(Self { inputs, clients, elements })
    }

    /// The secret state to keep until the issuer answers: for each token, its input and
    /// the serialized client (blind and blinded element).
    pub(crate) fn to_parts(&self) -> Vec<PendingPart> {
        self.inputs
            .iter()
            .cloned()
            .zip(self.clients.iter().map(|c| Zeroizing::new(c.serialize().to_vec())))
            .collect()
    }

    /// Rebuilds the state saved by [`Self::to_parts`].
    pub(crate) fn from_parts(parts: &[PendingPart]) -> Result<Self, Error> {
        let mut inputs = Vec::with_capacity(parts.len());
        let mut clients = Vec::with_capacity(parts.len());
        let mut elements = Vec::with_capacity(parts.len());
        for (input, client) in parts {
            let client = PoprfClient::<Suite>::deserialize(client)
                .map_err(|_| encoding("corrupt pending token state"))?;
            let serialized = client.serialize();
            elements.push(to_array(&serialized[SCALAR_BYTES..]));
            clients.push(client);
            inputs.push(input.clone());
        }
        Ok(Self { inputs, clients, elements })
    }

    /// Verifies the issuer's proof against its published key and unblinds: the token
    /// outputs, in order, paired with their inputs.
    pub fn finalize(
        &self,
        evaluated: &Evaluated,
        issuer_public_key: &[u8; ELEMENT_BYTES],
        info: &TokenInfo,
    ) -> Result<Vec<TokenSecret>, Error> {
        let inputs: Vec<&[u8]> = self.inputs.iter().map(|i| &i[..]).collect();
        let outputs = finalize_raw(&inputs, &self.clients, evaluated, issuer_public_key, &info.encode())?;
        Ok(self
            .inputs
            .iter()
            .cloned()
            .zip(outputs)
            .map(|(input, output)| TokenSecret { input, output })
            .collect())
    }
}

/// Checks the proof and unblinds (RFC 9497 BlindEvaluate's client half, batched).
fn finalize_raw(
    inputs: &[&[u8]],
    clients: &Vec<PoprfClient<Suite>>,
    evaluated: &Evaluated,
    issuer_public_key: &[u8; ELEMENT_BYTES],
    info: &[u8],
) -> Result<Vec<[u8; OUTPUT_BYTES]>, Error> {
    {
        if evaluated.elements.len() != clients.len() || inputs.len() != clients.len() {
            return Err(Error::PoprfEncoding {
                what: format!(
                    "the issuer returned {} elements for {} tokens",
                    evaluated.elements.len(),
                    clients.len()
                ),
            });
        }
        let messages = evaluated
            .elements
            .iter()
            .map(|e| {
                EvaluationElement::<Suite>::deserialize(e).map_err(|_| encoding("invalid evaluated element"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let proof =
            Proof::<Suite>::deserialize(&evaluated.proof).map_err(|_| encoding("invalid proof encoding"))?;
        let public = <Ristretto255 as voprf::Group>::deserialize_elem(issuer_public_key)
            .map_err(|_| encoding("invalid issuer POPRF key"))?;
        let outputs = PoprfClient::<Suite>::batch_finalize(
            inputs.iter().copied(),
            clients,
            &messages,
            &proof,
            public,
            Some(info),
        )
        .map_err(|e| match e {
            voprf::Error::ProofVerification => Error::ProofInvalid,
            other => Error::Poprf(other.to_string()),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Poprf(e.to_string()))?;
        Ok(outputs.iter().map(|o| to_array(o)).collect())
    }
}

fn to_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> TokenInfo {
        TokenInfo { package: "acme/thermal".parse().unwrap(), tier: "standard".into(), epoch: 1 }
    }

    #[test]
    fn batch_sizes_and_encodings_are_typed_errors() {
        use escx::Fault as _;
        assert!(matches!(Blinded::new(0), Err(Error::BatchSize { count: 0, max: BATCH_MAX })));
        assert!(matches!(Blinded::new(BATCH_MAX + 1), Err(Error::BatchSize { .. })));
        let key = IssuerKey::generate().unwrap();
        let too_many = vec![[0u8; ELEMENT_BYTES]; BATCH_MAX + 1];
        assert!(matches!(key.evaluate_batch(&too_many, &info()), Err(Error::BatchSize { .. })));
        // Not a ristretto255 encoding: refused before any evaluation, with the old code.
        let err = key.evaluate_batch(&[[0xff; ELEMENT_BYTES]], &info()).unwrap_err();
        assert!(matches!(&err, Error::PoprfEncoding { what } if what == "invalid blinded element"), "{err}");
        assert_eq!(err.code(), "poprf");
        let blinded = Blinded::new(2).unwrap();
        let mut evaluated = key.evaluate_batch(&blinded.elements, &info()).unwrap();
        evaluated.elements.pop();
        let result = blinded.finalize(&evaluated, &key.public_key(), &info());
        assert!(matches!(result, Err(Error::PoprfEncoding { .. })));
    }

    #[test]
    fn issued_tokens_match_the_issuers_own_evaluation() {
        let key = IssuerKey::generate().unwrap();
        let blinded = Blinded::new(5).unwrap();
        let evaluated = key.evaluate_batch(&blinded.elements, &info()).unwrap();
        let tokens = blinded.finalize(&evaluated, &key.public_key(), &info()).unwrap();
        assert_eq!(tokens.len(), 5);
        for token in &tokens {
            assert_eq!(key.evaluate(&token.input[..], &info()).unwrap(), token.output);
        }
    }

    #[test]
    fn a_proof_for_another_key_or_info_is_refused() {
        let key = IssuerKey::generate().unwrap();
        let other = IssuerKey::generate().unwrap();
        let blinded = Blinded::new(3).unwrap();
        let evaluated = key.evaluate_batch(&blinded.elements, &info()).unwrap();
        // Checked against another published key: the proof fails (a tagging issuer using
        // a per-customer key is caught here).
        assert!(matches!(
            blinded.finalize(&evaluated, &other.public_key(), &info()),
            Err(Error::ProofInvalid)
        ));
        let mut other_info = info();
        other_info.tier = "premium".into();
        assert!(matches!(
            blinded.finalize(&evaluated, &key.public_key(), &other_info),
            Err(Error::ProofInvalid)
        ));
    }

    /// Yields the given bytes and then zeros, so `Scalar::random` (64 bytes reduced mod
    /// the group order) returns exactly the given 32-byte scalar, as RFC 9497 fixes it.
    struct FixedScalarRng(Vec<u8>);

    impl rand_core::RngCore for FixedScalarRng {
        fn next_u32(&mut self) -> u32 {
            0
        }
        fn next_u64(&mut self) -> u64 {
            0
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(0);
            let n = self.0.len().min(dest.len());
            dest[..n].copy_from_slice(&self.0[..n]);
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rand_core::CryptoRng for FixedScalarRng {}

    fn unhex(value: &serde_json::Value) -> Vec<u8> {
        hex::decode(value.as_str().unwrap()).unwrap()
    }

    fn unhex_list(value: &serde_json::Value) -> Vec<Vec<u8>> {
        value.as_array().unwrap().iter().map(unhex).collect()
    }

    #[test]
    fn rfc9497_poprf_ristretto255_sha512_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../test-vectors/licensing/rfc9497-poprf-ristretto255-sha512.json"
        );
        let all: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let key = IssuerKey::derive(&unhex(&all["Seed"]), &unhex(&all["KeyInfo"])).unwrap();
        assert_eq!(key.secret_bytes().to_vec(), unhex(&all["skSm"]), "DeriveKeyPair skSm");
        assert_eq!(key.public_key().to_vec(), unhex(&all["pkSm"]), "DeriveKeyPair pkSm");
        let vectors = all["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 3);
        for vector in vectors {
            let name = vector["name"].as_str().unwrap();
            let inputs = unhex_list(&vector["Input"]);
            let info = unhex(&vector["Info"]);
            let mut clients = Vec::new();
            let mut blinded = Vec::new();
            for (input, blind) in inputs.iter().zip(unhex_list(&vector["Blind"])) {
                // The RFC's blind, drawn through the public API: a 64-byte draw of the
                // scalar's 32 bytes and 32 zeros reduces to that scalar (no `danger`
                // feature, so tests and the binary build one voprf).
                let result = PoprfClient::<Suite>::blind(input, &mut FixedScalarRng(blind)).unwrap();
                blinded.push(to_array::<ELEMENT_BYTES>(&result.message.serialize()));
                clients.push(result.state);
            }
            let expected_blinded: Vec<[u8; ELEMENT_BYTES]> =
                unhex_list(&vector["BlindedElement"]).iter().map(|b| to_array(b)).collect();
            assert_eq!(blinded, expected_blinded, "{name}: BlindedElement");

            let mut rng = FixedScalarRng(unhex(&vector["ProofRandomScalar"]));
            let evaluated = key.evaluate_batch_with(&blinded, &info, &mut rng).unwrap();
            let expected_evaluated: Vec<[u8; ELEMENT_BYTES]> =
                unhex_list(&vector["EvaluationElement"]).iter().map(|b| to_array(b)).collect();
            assert_eq!(evaluated.elements, expected_evaluated, "{name}: EvaluationElement");
            assert_eq!(evaluated.proof.to_vec(), unhex(&vector["Proof"]), "{name}: Proof");

            let input_refs: Vec<&[u8]> = inputs.iter().map(|i| &i[..]).collect();
            let outputs = finalize_raw(&input_refs, &clients, &evaluated, &key.public_key(), &info).unwrap();
            let expected_outputs: Vec<[u8; OUTPUT_BYTES]> =
                unhex_list(&vector["Output"]).iter().map(|b| to_array(b)).collect();
            assert_eq!(outputs, expected_outputs, "{name}: Output (client)");
            for (input, expected) in inputs.iter().zip(&expected_outputs) {
                assert_eq!(
                    &key.evaluate_raw(input, &info).unwrap(),
                    expected,
                    "{name}: Output (server Evaluate)"
                );
            }
        }
    }

    #[test]
    fn info_encoding_is_length_prefixed() {
        let encoded = info().encode();
        assert!(encoded.starts_with(b"escx/license-info/v1\x00\x0cacme/thermal\x00\x08standard"));
        assert!(encoded.ends_with(&[0, 0, 0, 1]));
    }
}
