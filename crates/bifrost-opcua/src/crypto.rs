//! The cryptography of OPC UA's security policies (Part 6, 6.7; Part 7's
//! policy profiles): which algorithms each policy uses, RSA signatures and
//! encryption in the policy's key blocks, the symmetric keys derived from the
//! two nonces, HMAC and AES-CBC. Every operation is aws-lc-rs's.

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey,
    Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{self, RsaKeyPair, UnparsedPublicKey};
use aws_lc_rs::{digest, hmac, rand};
use bifrost_core::{Error, Result};

use crate::status;

/// The security policies we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    None,
    Basic256Sha256,
    Aes128Sha256RsaOaep,
    Aes256Sha256RsaPss,
    /// Deprecated (SHA-1, and PKCS#1 v1.5 encryption): only when asked for explicitly.
    Basic128Rsa15,
    /// Deprecated (SHA-1): only when asked for explicitly.
    Basic256,
}

/// How a policy signs asymmetrically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    Pkcs1Sha1,
    Pkcs1Sha256,
    PssSha256,
}

/// How a policy encrypts asymmetrically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encrypting {
    Pkcs1,
    OaepSha1,
    OaepSha256,
}

/// What a policy is made of (Part 7's profiles): its name, algorithms and sizes.
struct Profile {
    policy: Policy,
    name: &'static str,
    signing: Signing,
    encrypting: Encrypting,
    /// HMAC-SHA1 (20-byte signatures) where not HMAC-SHA256 (32), and P_SHA1 to derive keys.
    sha1: bool,
    signing_key_len: usize,
    encrypting_key_len: usize,
    nonce_len: usize,
}

const PROFILES: [Profile; 6] = [
    Profile {
        policy: Policy::None,
        name: "None",
        signing: Signing::Pkcs1Sha256,
        encrypting: Encrypting::OaepSha1,
        sha1: false,
        signing_key_len: 0,
        encrypting_key_len: 0,
        nonce_len: 0,
    },
    Profile {
        policy: Policy::Basic256Sha256,
        name: "Basic256Sha256",
        signing: Signing::Pkcs1Sha256,
        encrypting: Encrypting::OaepSha1,
        sha1: false,
        signing_key_len: 32,
        encrypting_key_len: 32,
        nonce_len: 32,
    },
    Profile {
        policy: Policy::Aes128Sha256RsaOaep,
        name: "Aes128_Sha256_RsaOaep",
        signing: Signing::Pkcs1Sha256,
        encrypting: Encrypting::OaepSha1,
        sha1: false,
        signing_key_len: 32,
        encrypting_key_len: 16,
        nonce_len: 32,
    },
    Profile {
        policy: Policy::Aes256Sha256RsaPss,
        name: "Aes256_Sha256_RsaPss",
        signing: Signing::PssSha256,
        encrypting: Encrypting::OaepSha256,
        sha1: false,
        signing_key_len: 32,
        encrypting_key_len: 32,
        nonce_len: 32,
    },
    Profile {
        policy: Policy::Basic128Rsa15,
        name: "Basic128Rsa15",
        signing: Signing::Pkcs1Sha1,
        encrypting: Encrypting::Pkcs1,
        sha1: true,
        signing_key_len: 16,
        encrypting_key_len: 16,
        nonce_len: 16,
    },
    Profile {
        policy: Policy::Basic256,
        name: "Basic256",
        signing: Signing::Pkcs1Sha1,
        encrypting: Encrypting::OaepSha1,
        sha1: true,
        signing_key_len: 24,
        encrypting_key_len: 32,
        nonce_len: 32,
    },
];

const URI_PREFIX: &str = "http://opcfoundation.org/UA/SecurityPolicy#";

/// Bytes of an AES block.
pub const BLOCK_LEN: usize = 16;

impl Policy {
    fn profile(self) -> &'static Profile {
        PROFILES.iter().find(|p| p.policy == self).unwrap_or(&PROFILES[0])
    }

    /// A policy from its name or its URI; an unknown one is `EINVAL`, listing those known.
    pub fn parse(text: &str) -> Result<Policy> {
        let name = text.strip_prefix(URI_PREFIX).unwrap_or(text);
        PROFILES.iter().find(|p| p.name.eq_ignore_ascii_case(name)).map(|p| p.policy).ok_or_else(|| {
            let known: Vec<&str> = PROFILES.iter().map(|p| p.name).collect();
            Error::invalid_value(format!("unknown security policy '{text}' (known: {})", known.join(", ")))
        })
    }

    /// The policy a URI names, if we speak it.
    pub fn from_uri(uri: &str) -> Option<Policy> {
        let name = uri.strip_prefix(URI_PREFIX)?;
        PROFILES.iter().find(|p| p.name == name).map(|p| p.policy)
    }

    pub fn name(self) -> &'static str {
        self.profile().name
    }

    pub fn uri(self) -> String {
        format!("{URI_PREFIX}{}", self.name())
    }

    /// Whether the policy is deprecated (SHA-1): used only when asked for explicitly.
    pub fn is_legacy(self) -> bool {
        self.profile().sha1
    }

    /// Bytes of the nonces OpenSecureChannel exchanges.
    pub fn nonce_len(self) -> usize {
        self.profile().nonce_len
    }

    /// Bytes of a symmetric signature (HMAC).
    pub fn symmetric_signature_len(self) -> usize {
        if self.profile().sha1 {
            20
        } else {
            32
        }
    }

    fn oaep(self) -> &'static OaepAlgorithm {
        match self.profile().encrypting {
            Encrypting::OaepSha256 => &OAEP_SHA256_MGF1SHA256,
            _ => &OAEP_SHA1_MGF1SHA1,
        }
    }

    /// Bytes the padding takes of each RSA block: PKCS#1 v1.5, 11; OAEP, twice the hash and two.
    fn encryption_overhead(self) -> usize {
        match self.profile().encrypting {
            Encrypting::Pkcs1 => 11,
            Encrypting::OaepSha1 => 42,
            Encrypting::OaepSha256 => 66,
        }
    }

    /// The URI of the asymmetric signature algorithm, as session signatures name it.
    pub fn signature_uri(self) -> &'static str {
        match self.profile().signing {
            Signing::Pkcs1Sha1 => "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            Signing::Pkcs1Sha256 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            Signing::PssSha256 => "http://opcfoundation.org/UA/security/rsa-pss-sha2-256",
        }
    }

    /// The URI of the asymmetric encryption algorithm, as an encrypted password names it.
    pub fn encryption_uri(self) -> &'static str {
        match self.profile().encrypting {
            Encrypting::Pkcs1 => "http://www.w3.org/2001/04/xmlenc#rsa-1_5",
            Encrypting::OaepSha1 => "http://www.w3.org/2001/04/xmlenc#rsa-oaep",
            Encrypting::OaepSha256 => "http://opcfoundation.org/UA/security/rsa-oaep-sha2-256",
        }
    }
}

/// A deprecated policy not asked for: `EINVAL`, saying how to ask for it.
pub fn deprecated(policy: Policy, what: &str) -> Error {
    Error::invalid_value(format!(
        "{what} {}, a deprecated policy (SHA-1): connect with allowDeprecatedSecurity true to use it",
        policy.name()
    ))
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

/// A CreateSession nonce on a channel that signs nothing (policy None): bytes
/// that differ between sessions, without aws-lc's generator, whose first use
/// seeds itself for about 30 ms. Nothing secret rides on them.
pub fn plain_nonce(len: usize) -> Vec<u8> {
    static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut state = (time as u64) ^ (u64::from(std::process::id()) << 32) ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A certificate's thumbprint: its SHA-1 digest.
pub fn thumbprint(certificate: &[u8]) -> [u8; 20] {
    let digest = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, certificate);
    digest.as_ref().try_into().unwrap_or([0; 20])
}

/// P_hash (RFC 5246, 5) over HMAC: `len` bytes from `secret` and `seed`, as Part 6, 6.7.5 derives keys.
fn p_hash(algorithm: hmac::Algorithm, secret: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
    let key = hmac::Key::new(algorithm, secret);
    let mut a = hmac::sign(&key, seed); // A(1)
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        let mut context = hmac::Context::with_key(&key);
        context.update(a.as_ref());
        context.update(seed);
        out.extend_from_slice(context.sign().as_ref());
        a = hmac::sign(&key, a.as_ref());
    }
    out.truncate(len);
    out
}

/// Our private key: it signs what we send and decrypts what is sent to us.
pub struct PrivateKey {
    signing: RsaKeyPair,
    oaep: OaepPrivateDecryptingKey,
    pkcs1: Pkcs1PrivateDecryptingKey,
    /// The PKCS#8 document, for PKCS#1 v1.5 SHA-1 signatures (deprecated policies), which aws-lc-rs does not make.
    pkcs8: Vec<u8>,
}

impl PrivateKey {
    /// From a PKCS#8 document (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<PrivateKey> {
        let bad = || Error::invalid_value("the private key is not an RSA key in PKCS#8");
        let decrypting = || PrivateDecryptingKey::from_pkcs8(der).map_err(|_| bad());
        Ok(PrivateKey {
            signing: RsaKeyPair::from_pkcs8(der).map_err(|_| bad())?,
            oaep: OaepPrivateDecryptingKey::new(decrypting()?).map_err(|_| bad())?,
            pkcs1: Pkcs1PrivateDecryptingKey::new(decrypting()?).map_err(|_| bad())?,
            pkcs8: der.to_vec(),
        })
    }

    /// Bytes of its modulus: of each signature and each encrypted block.
    pub fn size(&self) -> usize {
        self.signing.public_modulus_len()
    }

    /// Signs `data` as `policy` signs asymmetrically.
    pub fn sign(&self, policy: Policy, data: &[u8]) -> Result<Vec<u8>> {
        let failed = || Error::invalid_value("signing with the application's private key failed");
        let encoding: &'static dyn signature::RsaEncoding = match policy.profile().signing {
            Signing::Pkcs1Sha1 => return legacy::sign_pkcs1_sha1(&self.pkcs8, data, self.size()).ok_or_else(failed),
            Signing::Pkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
            Signing::PssSha256 => &signature::RSA_PSS_SHA256,
        };
        let mut out = vec![0; self.size()];
        self.signing.sign(encoding, &rand::SystemRandom::new(), data, &mut out).map_err(|_| failed())?;
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
            let plain = match policy.profile().encrypting {
                Encrypting::Pkcs1 => self.pkcs1.decrypt(cipher, &mut block),
                _ => self.oaep.decrypt(policy.oaep(), cipher, &mut block, None),
            };
            let plain =
                plain.map_err(|_| checks_failed("a block did not decrypt with the application's private key"))?;
            out.extend_from_slice(plain);
        }
        Ok(out)
    }
}

/// A peer's public key, from its certificate: it checks what the peer signs and encrypts what we send it.
pub struct PublicKey {
    /// PKCS#1 RSAPublicKey, as signature checks take it.
    rsa: Vec<u8>,
    oaep: OaepPublicEncryptingKey,
    pkcs1: Pkcs1PublicEncryptingKey,
}

impl PublicKey {
    /// From a certificate's SubjectPublicKeyInfo (DER) and the RSAPublicKey it holds.
    pub fn new(spki: &[u8], rsa: &[u8]) -> Result<PublicKey> {
        let bad = || Error::invalid_value("the certificate's key is not an RSA key of 2048 bits or more");
        let key = || PublicEncryptingKey::from_der(spki).map_err(|_| bad());
        Ok(PublicKey {
            rsa: rsa.to_vec(),
            oaep: OaepPublicEncryptingKey::new(key()?).map_err(|_| bad())?,
            pkcs1: Pkcs1PublicEncryptingKey::new(key()?).map_err(|_| bad())?,
        })
    }

    /// Bytes of its modulus.
    pub fn size(&self) -> usize {
        self.oaep.key_size_bytes()
    }

    /// Checks `signature` of `data` as `policy` signs asymmetrically.
    pub fn verify(&self, policy: Policy, data: &[u8], signature: &[u8]) -> Result<()> {
        let algorithm: &'static dyn signature::VerificationAlgorithm = match policy.profile().signing {
            Signing::Pkcs1Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Signing::Pkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Signing::PssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(algorithm, &self.rsa)
            .verify(data, signature)
            .map_err(|_| checks_failed("the peer's signature does not match its certificate"))
    }

    /// Plaintext bytes of each encrypted block.
    pub fn plain_block(&self, policy: Policy) -> usize {
        self.size() - policy.encryption_overhead()
    }

    /// Encrypts `data` as `policy` encrypts asymmetrically, in blocks of [`Self::plain_block`].
    pub fn encrypt(&self, policy: Policy, data: &[u8]) -> Result<Vec<u8>> {
        let size = self.size();
        let mut out = vec![0; data.len().div_ceil(self.plain_block(policy)) * size];
        for (plain, cipher) in data.chunks(self.plain_block(policy)).zip(out.chunks_mut(size)) {
            let encrypted = match policy.profile().encrypting {
                Encrypting::Pkcs1 => self.pkcs1.encrypt(plain, cipher),
                _ => self.oaep.encrypt(policy.oaep(), plain, cipher, None),
            };
            encrypted.map_err(|_| Error::invalid_value("encrypting with the server's public key failed"))?;
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
    /// The keys derived with the policy's P_hash from `secret` and `seed`: the client's
    /// own are (server nonce, client nonce), the server's (client nonce, server nonce).
    pub fn derive(policy: Policy, secret: &[u8], seed: &[u8]) -> Result<SymmetricKeys> {
        let profile = policy.profile();
        let algorithm = if profile.sha1 { hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY } else { hmac::HMAC_SHA256 };
        let (signing_len, key_len) = (profile.signing_key_len, profile.encrypting_key_len);
        let bytes = p_hash(algorithm, secret, seed, signing_len + key_len + BLOCK_LEN);
        let (signing, rest) = bytes.split_at(signing_len);
        let (key, iv) = rest.split_at(key_len);
        let failed = |_| checks_failed("the channel's keys could not be derived from the nonces");
        let cipher = if key_len == 16 { &AES_128 } else { &AES_256 };
        let unbound = || UnboundCipherKey::new(cipher, key).map_err(failed);
        Ok(SymmetricKeys {
            signing: hmac::Key::new(algorithm, signing),
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

/// RSA PKCS#1 v1.5 signatures over SHA-1, which aws-lc-rs verifies but does not
/// make: aws-lc's own EVP interface makes them. The one `unsafe` of this crate.
mod legacy {
    use aws_lc_rs::digest;
    use aws_lc_sys as ffi;

    /// Signs `data` with the PKCS#8 RSA key `pkcs8` (of `size` bytes): `None` if aws-lc refuses.
    pub fn sign_pkcs1_sha1(pkcs8: &[u8], data: &[u8], size: usize) -> Option<Vec<u8>> {
        let digest = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data);
        let mut cbs = ffi::CBS { data: pkcs8.as_ptr(), len: pkcs8.len() };
        // SAFETY: `cbs` points into `pkcs8`, alive for the call; aws-lc returns an owned key or null.
        let key = unsafe { ffi::EVP_parse_private_key(&mut cbs) };
        if key.is_null() {
            return None;
        }
        // SAFETY: `key` is a valid key we own; the context takes its own reference to it.
        let context = unsafe { ffi::EVP_PKEY_CTX_new(key, std::ptr::null_mut()) };
        let mut signature = vec![0u8; size];
        let mut len = signature.len();
        // SAFETY: `context` is checked non-null before use; `signature` has `len` writable bytes
        // and `digest` is 20 readable bytes; the context and the key are freed once, here.
        let signed = unsafe {
            let signed = !context.is_null()
                && ffi::EVP_PKEY_sign_init(context) == 1
                && ffi::EVP_PKEY_CTX_set_rsa_padding(context, ffi::RSA_PKCS1_PADDING) == 1
                && ffi::EVP_PKEY_CTX_set_signature_md(context, ffi::EVP_sha1()) == 1
                && ffi::EVP_PKEY_sign(
                    context,
                    signature.as_mut_ptr(),
                    &mut len,
                    digest.as_ref().as_ptr(),
                    digest.as_ref().len(),
                ) == 1;
            ffi::EVP_PKEY_CTX_free(context);
            ffi::EVP_PKEY_free(key);
            signed
        };
        signed.then(|| {
            signature.truncate(len);
            signature
        })
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
    /// (label "test label"), since OPC UA's derivation is that PRF with the label folded into
    /// the seed; and against aws-lc's own TLS PRF, over lengths that end mid-block.
    #[test]
    fn key_derivation_is_p_hash() {
        let secret = hex("9b be 43 6b a9 40 f0 17 b1 76 52 84 9a 71 db 35");
        let mut seed = b"test label".to_vec();
        seed.extend(hex("a0 ba 9f 93 6c da 31 18 27 a6 f7 96 ff d5 19 8c"));
        let out = p_hash(hmac::HMAC_SHA256, &secret, &seed, 16);
        assert_eq!(out, hex("e3 f2 29 ba 72 7b e1 7b 8d 12 26 20 55 7c d4 53"));
        for len in [1, 32, 33, 80, 100] {
            let theirs = aws_lc_rs::tls_prf::Secret::new(&aws_lc_rs::tls_prf::P_SHA256, &secret)
                .unwrap()
                .derive(&[], &seed, len)
                .unwrap();
            assert_eq!(p_hash(hmac::HMAC_SHA256, &secret, &seed, len), theirs.as_ref(), "{len} bytes");
        }
    }

    /// The deprecated policies' SHA-1 signatures (made through aws-lc's EVP interface)
    /// check with aws-lc-rs's verifier, and a changed byte does not.
    #[test]
    fn legacy_pkcs1_sha1_signatures_verify() {
        let made = crate::pki::tests::certificate(&["urn:c"], (-1, 30), false, None, rcgen::RsaKeySize::_2048);
        let key = PrivateKey::from_pkcs8(made.key.serialized_der()).unwrap();
        let public = crate::pki::public_key(made.der()).unwrap();
        for policy in [Policy::Basic128Rsa15, Policy::Basic256] {
            let signature = key.sign(policy, b"certificate and nonce").unwrap();
            assert_eq!(signature.len(), 256);
            public.verify(policy, b"certificate and nonce", &signature).unwrap();
            assert!(public.verify(policy, b"certificate and nonce!", &signature).is_err());
            assert!(public.verify(Policy::Basic256Sha256, b"certificate and nonce", &signature).is_err());
            let encrypted = public.encrypt(policy, &[7; 300]).unwrap();
            assert_eq!(key.decrypt(policy, &encrypted).unwrap(), vec![7; 300]);
        }
    }

    #[test]
    fn symmetric_keys_round_trip_and_refuse_a_changed_byte() {
        let client = random(32);
        let server = random(32);
        for policy in [
            Policy::Basic256Sha256,
            Policy::Aes128Sha256RsaOaep,
            Policy::Aes256Sha256RsaPss,
            Policy::Basic128Rsa15,
            Policy::Basic256,
        ] {
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
