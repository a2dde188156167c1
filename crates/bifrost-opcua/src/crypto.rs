//! The cryptography of OPC UA's security policies (Part 6, 6.7; Part 7's
//! policy profiles): which algorithms each policy uses, RSA signatures and
//! encryption in the policy's key blocks, the symmetric keys derived from the
//! two nonces, HMAC and AES-CBC. Every operation is aws-lc-rs's.

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{self, RsaKeyPair, UnparsedPublicKey};
use aws_lc_rs::{digest, hmac, rand, tls_prf};
use bifrost_core::{Error, Result};

use crate::status;

/// The security policies we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    None,
    Basic256Sha256,
    Aes128Sha256RsaOaep,
    Aes256Sha256RsaPss,
}

/// The policies, each with its name (as the `security-policy` URL key takes it).
const POLICIES: [(Policy, &str); 4] = [
    (Policy::None, "None"),
    (Policy::Basic256Sha256, "Basic256Sha256"),
    (Policy::Aes128Sha256RsaOaep, "Aes128_Sha256_RsaOaep"),
    (Policy::Aes256Sha256RsaPss, "Aes256_Sha256_RsaPss"),
];

const URI_PREFIX: &str = "http://opcfoundation.org/UA/SecurityPolicy#";

/// Bytes of each symmetric signature (HMAC-SHA256) and of its key; of an AES block; of a nonce.
pub const SYMMETRIC_SIGNATURE_LEN: usize = 32;
pub const BLOCK_LEN: usize = 16;
pub const NONCE_LEN: usize = 32;

impl Policy {
    /// A policy from its name or its URI; an unknown one is `EINVAL`, listing those known.
    pub fn parse(text: &str) -> Result<Policy> {
        let name = text.strip_prefix(URI_PREFIX).unwrap_or(text);
        POLICIES.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)).map(|(p, _)| *p).ok_or_else(|| {
            let known: Vec<&str> = POLICIES.iter().map(|(_, n)| *n).collect();
            Error::invalid_value(format!("unknown security policy '{text}' (known: {})", known.join(", ")))
        })
    }

    /// The policy a URI names, if we speak it.
    pub fn from_uri(uri: &str) -> Option<Policy> {
        let name = uri.strip_prefix(URI_PREFIX)?;
        POLICIES.iter().find(|(_, n)| *n == name).map(|(p, _)| *p)
    }

    pub fn name(self) -> &'static str {
        POLICIES.iter().find(|(p, _)| *p == self).map(|(_, n)| *n).unwrap_or("None")
    }

    pub fn uri(self) -> String {
        format!("{URI_PREFIX}{}", self.name())
    }

    fn pss(self) -> bool {
        self == Policy::Aes256Sha256RsaPss
    }

    fn oaep(self) -> &'static OaepAlgorithm {
        if self.pss() {
            &OAEP_SHA256_MGF1SHA256
        } else {
            &OAEP_SHA1_MGF1SHA1
        }
    }

    /// Bytes OAEP takes of each RSA block: twice the hash, and two.
    fn oaep_overhead(self) -> usize {
        if self.pss() {
            66
        } else {
            42
        }
    }

    /// The URI of the asymmetric signature algorithm, as session signatures name it.
    pub fn signature_uri(self) -> &'static str {
        if self.pss() {
            "http://opcfoundation.org/UA/security/rsa-pss-sha2-256"
        } else {
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
        }
    }

    /// The URI of the asymmetric encryption algorithm, as an encrypted password names it.
    pub fn encryption_uri(self) -> &'static str {
        if self.pss() {
            "http://opcfoundation.org/UA/security/rsa-oaep-sha2-256"
        } else {
            "http://www.w3.org/2001/04/xmlenc#rsa-oaep"
        }
    }

    /// Bytes of the AES key.
    fn encrypting_key_len(self) -> usize {
        if self == Policy::Aes128Sha256RsaOaep {
            16
        } else {
            32
        }
    }
}

/// A failed check of what a peer sent: `OPCUA_STATUS` BadSecurityChecksFailed.
pub fn checks_failed(what: &str) -> Error {
    crate::secure_channel::status_error(status::BAD_SECURITY_CHECKS_FAILED, what)
}

/// `len` cryptographically random bytes.
pub fn random(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    // aws-lc's generator fails only if the system's entropy source does, which is fatal anyway.
    rand::fill(&mut bytes).expect("the system's random number generator failed");
    bytes
}

/// A certificate's thumbprint: its SHA-1 digest.
pub fn thumbprint(certificate: &[u8]) -> [u8; 20] {
    let digest = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, certificate);
    digest.as_ref().try_into().unwrap_or([0; 20])
}

/// Our private key: it signs what we send and decrypts what is sent to us.
pub struct PrivateKey {
    signing: RsaKeyPair,
    decrypting: OaepPrivateDecryptingKey,
}

impl PrivateKey {
    /// From a PKCS#8 document (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<PrivateKey> {
        let bad = || Error::invalid_value("the private key is not an RSA key in PKCS#8");
        let signing = RsaKeyPair::from_pkcs8(der).map_err(|_| bad())?;
        let decrypting = PrivateDecryptingKey::from_pkcs8(der).map_err(|_| bad())?;
        let decrypting = OaepPrivateDecryptingKey::new(decrypting).map_err(|_| bad())?;
        Ok(PrivateKey { signing, decrypting })
    }

    /// Bytes of its modulus: of each signature and each encrypted block.
    pub fn size(&self) -> usize {
        self.signing.public_modulus_len()
    }

    /// Signs `data` as `policy` signs asymmetrically.
    pub fn sign(&self, policy: Policy, data: &[u8]) -> Result<Vec<u8>> {
        let encoding: &'static dyn signature::RsaEncoding =
            if policy.pss() { &signature::RSA_PSS_SHA256 } else { &signature::RSA_PKCS1_SHA256 };
        let mut out = vec![0; self.size()];
        self.signing
            .sign(encoding, &rand::SystemRandom::new(), data, &mut out)
            .map_err(|_| Error::invalid_value("signing with the application's private key failed"))?;
        Ok(out)
    }

    /// Decrypts `data`, blocks of the key's size each, as `policy` encrypts asymmetrically.
    pub fn decrypt(&self, policy: Policy, data: &[u8]) -> Result<Vec<u8>> {
        let size = self.size();
        if !data.len().is_multiple_of(size) {
            return Err(checks_failed(&format!("{} encrypted bytes are not whole blocks of {size}", data.len())));
        }
        let mut out = Vec::with_capacity(data.len());
        let mut block = vec![0; size];
        for cipher in data.chunks(size) {
            let plain = self
                .decrypting
                .decrypt(policy.oaep(), cipher, &mut block, None)
                .map_err(|_| checks_failed("a block did not decrypt with the application's private key"))?;
            out.extend_from_slice(plain);
        }
        Ok(out)
    }
}

/// A peer's public key, from its certificate: it checks what the peer signs and encrypts what we send it.
pub struct PublicKey {
    /// PKCS#1 RSAPublicKey, as signature checks take it.
    rsa: Vec<u8>,
    encrypting: OaepPublicEncryptingKey,
}

impl PublicKey {
    /// From a certificate's SubjectPublicKeyInfo (DER) and the RSAPublicKey it holds.
    pub fn new(spki: &[u8], rsa: &[u8]) -> Result<PublicKey> {
        let bad = || Error::invalid_value("the certificate's key is not an RSA key of 2048 bits or more");
        let key = PublicEncryptingKey::from_der(spki).map_err(|_| bad())?;
        let encrypting = OaepPublicEncryptingKey::new(key).map_err(|_| bad())?;
        Ok(PublicKey { rsa: rsa.to_vec(), encrypting })
    }

    /// Bytes of its modulus.
    pub fn size(&self) -> usize {
        self.encrypting.key_size_bytes()
    }

    /// Checks `signature` of `data` as `policy` signs asymmetrically.
    pub fn verify(&self, policy: Policy, data: &[u8], signature: &[u8]) -> Result<()> {
        let algorithm: &'static dyn signature::VerificationAlgorithm =
            if policy.pss() { &signature::RSA_PSS_2048_8192_SHA256 } else { &signature::RSA_PKCS1_2048_8192_SHA256 };
        UnparsedPublicKey::new(algorithm, &self.rsa)
            .verify(data, signature)
            .map_err(|_| checks_failed("the peer's signature does not match its certificate"))
    }

    /// Plaintext bytes of each encrypted block.
    pub fn plain_block(&self, policy: Policy) -> usize {
        self.size() - policy.oaep_overhead()
    }

    /// Encrypts `data` as `policy` encrypts asymmetrically, in blocks of [`Self::plain_block`].
    pub fn encrypt(&self, policy: Policy, data: &[u8]) -> Result<Vec<u8>> {
        let size = self.size();
        let mut out = vec![0; data.len().div_ceil(self.plain_block(policy)) * size];
        for (plain, cipher) in data.chunks(self.plain_block(policy)).zip(out.chunks_mut(size)) {
            self.encrypting
                .encrypt(policy.oaep(), plain, cipher, None)
                .map_err(|_| Error::invalid_value("encrypting with the server's public key failed"))?;
        }
        Ok(out)
    }
}

/// The keys one side of a secure channel uses for one token (Part 6, 6.7.5).
pub struct SymmetricKeys {
    signing: hmac::Key,
    encrypting: EncryptingKey,
    decrypting: DecryptingKey,
    iv: [u8; BLOCK_LEN],
}

impl SymmetricKeys {
    /// The keys derived with P_SHA256 from `secret` and `seed`: the client's own
    /// are (server nonce, client nonce), the server's (client nonce, server nonce).
    pub fn derive(policy: Policy, secret: &[u8], seed: &[u8]) -> Result<SymmetricKeys> {
        let key_len = policy.encrypting_key_len();
        let len = SYMMETRIC_SIGNATURE_LEN + key_len + BLOCK_LEN;
        let failed = |_| checks_failed("the channel's keys could not be derived from the nonces");
        let bytes =
            tls_prf::Secret::new(&tls_prf::P_SHA256, secret).and_then(|s| s.derive(&[], seed, len)).map_err(failed)?;
        let bytes = bytes.as_ref();
        let (signing, rest) = bytes.split_at(SYMMETRIC_SIGNATURE_LEN);
        let (key, iv) = rest.split_at(key_len);
        let cipher = if key_len == 16 { &AES_128 } else { &AES_256 };
        let unbound = || UnboundCipherKey::new(cipher, key).map_err(failed);
        Ok(SymmetricKeys {
            signing: hmac::Key::new(hmac::HMAC_SHA256, signing),
            encrypting: EncryptingKey::cbc(unbound()?).map_err(failed)?,
            decrypting: DecryptingKey::cbc(unbound()?).map_err(failed)?,
            iv: iv.try_into().map_err(|_| failed(aws_lc_rs::error::Unspecified))?,
        })
    }

    pub fn sign(&self, data: &[u8]) -> hmac::Tag {
        hmac::sign(&self.signing, data)
    }

    /// Checks an HMAC in constant time.
    pub fn verify(&self, data: &[u8], signature: &[u8]) -> Result<()> {
        hmac::verify(&self.signing, data, signature).map_err(|_| checks_failed("a chunk's signature does not match"))
    }

    /// Encrypts whole blocks in place (AES-CBC, the token's IV, as the policy has it).
    pub fn encrypt(&self, data: &mut [u8]) -> Result<()> {
        let context = EncryptionContext::Iv128(FixedLength::from(self.iv));
        self.encrypting
            .less_safe_encrypt(data, context)
            .map(drop)
            .map_err(|_| Error::invalid_value("a chunk to encrypt is not whole blocks"))
    }

    /// Decrypts whole blocks in place.
    pub fn decrypt(&self, data: &mut [u8]) -> Result<()> {
        if !data.len().is_multiple_of(BLOCK_LEN) {
            return Err(checks_failed("an encrypted chunk is not whole blocks"));
        }
        let context = DecryptionContext::Iv128(FixedLength::from(self.iv));
        self.decrypting.decrypt(data, context).map(drop).map_err(|_| checks_failed("a chunk did not decrypt"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn policies_parse_by_name_or_uri() {
        assert_eq!(Policy::parse("Basic256Sha256").unwrap(), Policy::Basic256Sha256);
        assert_eq!(
            Policy::parse("http://opcfoundation.org/UA/SecurityPolicy#Aes256_Sha256_RsaPss").unwrap(),
            Policy::Aes256Sha256RsaPss
        );
        assert_eq!(
            Policy::Aes128Sha256RsaOaep.uri(),
            "http://opcfoundation.org/UA/SecurityPolicy#Aes128_Sha256_RsaOaep"
        );
        let e = Policy::parse("Basic512").unwrap_err();
        assert!(e.message.contains("Basic256Sha256"), "{}", e.message);
    }

    /// P_SHA256 as RFC 5246 defines it, checked against the TLS 1.2 PRF test vector
    /// (label "test label"), since OPC UA's derivation is that PRF with the label folded into the seed.
    #[test]
    fn key_derivation_is_p_sha256() {
        let secret = hex("9b be 43 6b a9 40 f0 17 b1 76 52 84 9a 71 db 35");
        let mut seed = b"test label".to_vec();
        seed.extend(hex("a0 ba 9f 93 6c da 31 18 27 a6 f7 96 ff d5 19 8c"));
        let out = tls_prf::Secret::new(&tls_prf::P_SHA256, &secret).unwrap().derive(&[], &seed, 16).unwrap();
        assert_eq!(out.as_ref(), &hex("e3 f2 29 ba 72 7b e1 7b 8d 12 26 20 55 7c d4 53")[..]);
    }

    #[test]
    fn symmetric_keys_round_trip_and_refuse_a_changed_byte() {
        let client = random(NONCE_LEN);
        let server = random(NONCE_LEN);
        for policy in [Policy::Basic256Sha256, Policy::Aes128Sha256RsaOaep, Policy::Aes256Sha256RsaPss] {
            let ours = SymmetricKeys::derive(policy, &server, &client).unwrap();
            let same = SymmetricKeys::derive(policy, &server, &client).unwrap();
            let theirs = SymmetricKeys::derive(policy, &client, &server).unwrap();
            let mut data = b"sixteen bytes..!thirty-two bytes".to_vec();
            ours.encrypt(&mut data).unwrap();
            assert_ne!(&data[..], b"sixteen bytes..!thirty-two bytes");
            same.decrypt(&mut data).unwrap();
            assert_eq!(&data[..], b"sixteen bytes..!thirty-two bytes");
            let tag = ours.sign(&data);
            same.verify(&data, tag.as_ref()).unwrap();
            assert!(theirs.verify(&data, tag.as_ref()).is_err(), "the two directions' keys differ");
            data[3] ^= 1;
            assert_eq!(same.verify(&data, tag.as_ref()).unwrap_err().opcua.unwrap().name, "BadSecurityChecksFailed");
            assert!(ours.encrypt(&mut [0; 15]).is_err());
        }
    }
}
