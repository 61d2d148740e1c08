//! Handing an unspent token to another wallet, sealed to its receive key (licensing.md
//! §8.3).

use super::*;

impl Wallet {
    /// The wallet's receive key (created on first use), for others to transfer tokens to.
    pub fn receive_key(&self) -> Result<KemPublicKey, Error> {
        Ok(self.receive_secret()?.public_key().clone())
    }

    pub(super) fn receive_secret(&self) -> Result<KemSecretKey, Error> {
        let path = self.dir.join("receive.cbor");
        if !path.exists() {
            let kem = KemSecretKey::generate();
            let file = ReceiveFile {
                v: 1,
                kem_public: ByteBuf::from(kem.public_key().as_bytes().to_vec()),
                kem_secret: ByteBuf::from(kem.secret_bytes().to_vec()),
            };
            write_secret(&path, &escx::cbor::encode(&file))?;
        }
        let file: ReceiveFile = crate::messages::decode(&read(&path)?, "receive key")?;
        Ok(KemSecretKey::from_parts(
            Zeroizing::new(file.kem_secret.to_vec()),
            KemPublicKey::from_bytes(&file.kem_public)?,
        )?)
    }

    /// Gives one unspent token for `package` (of `tier` when given) to the wallet whose
    /// receive key is `recipient` (licensing.md §8.3): the token is sealed to that key and
    /// written to `out`, then removed from this wallet. The issuer is not involved.
    pub fn transfer(
        &self,
        package: &str,
        tier: Option<&str>,
        recipient: &KemPublicKey,
        out: &Path,
    ) -> Result<Moved, Error> {
        let (token_path, token) = self.find_token(package, tier)?;
        let issuer_id = messages::key_id(&token.issuer)?;
        let chain = self.chain(issuer_id)?;
        let transfer = messages::TokenTransfer {
            v: 1,
            bundle: ByteBuf::from(chain.to_cbor()),
            package: token.package.clone(),
            tier: token.tier.clone(),
            epoch: token.epoch,
            input: token.input.clone(),
            output: token.output.clone(),
        };
        let plain = Zeroizing::new(escx::cbor::encode(&transfer));
        let sealed = kem::seal(recipient, messages::PURPOSE_TRANSFER, &plain)?;
        escx::fsutil::write_atomic(out, &sealed, escx::fsutil::MODE_SECRET, false)?;
        std::fs::remove_file(&token_path).map_err(|e| escx::Error::io(&token_path, e))?;
        Ok(Moved { package: token.package.clone(), tier: token.tier.clone(), issuer: issuer_id })
    }

    /// Takes a token transferred to this wallet's receive key. Its issuer bundle is
    /// verified and remembered. Whether the token is still unspent only the issuer can
    /// tell, at redemption: redeem received tokens promptly.
    pub fn receive(&self, sealed: &SealedTransfer) -> Result<Moved, Error> {
        let plain = kem::open(&self.receive_secret()?, messages::PURPOSE_TRANSFER, sealed.as_bytes())?;
        let transfer = messages::TokenTransfer::from_cbor(&plain)?;
        let chain = BundleChain::parse(&transfer.bundle)?;
        // The sender's chain may not replace ours: only an extension is taken.
        let bundle = self.add_issuer(&chain)?;
        bundle.epoch(transfer.epoch).ok_or(Error::UnknownEpoch { epoch: transfer.epoch })?;
        let file = TokenFile {
            v: 1,
            issuer: ByteBuf::from(bundle.issuer_id().0.to_vec()),
            package: transfer.package.clone(),
            tier: transfer.tier.clone(),
            epoch: transfer.epoch,
            input: transfer.input.clone(),
            output: transfer.output.clone(),
        };
        let path = self.dir.join("tokens").join(format!("{}.cbor", short_id(&transfer.output)));
        write_secret(&path, &escx::cbor::encode(&file))?;
        Ok(Moved {
            package: transfer.package.clone(),
            tier: transfer.tier.clone(),
            issuer: bundle.issuer_id(),
        })
    }
}
