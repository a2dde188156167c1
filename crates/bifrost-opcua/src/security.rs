//! A signed (and encrypted) secure channel (Part 6, 6.7.2 to 6.7.5): what a
//! signing policy adds to each chunk. OpenSecureChannel travels signed with our
//! private key and encrypted with the server's public key, in Sign mode too; the
//! other chunks are signed with HMAC and, in SignAndEncrypt, padded to whole
//! blocks and encrypted with AES-CBC, under keys derived from the nonces that
//! OpenSecureChannel exchanged for the chunk's token.

use std::borrow::Cow;
use std::sync::Arc;

use bifrost_core::{Error, Result};
use bytes::Bytes;

use crate::crypto::{self, checks_failed, Policy, PublicKey, SymmetricKeys, BLOCK_LEN};
use crate::pki::Own;
use crate::session::{IdentityToken, SignatureData, UserTokenPolicy};
use crate::transport::{SecurityPolicy, HEADER_LEN, SYMMETRIC_HEADERS};

/// Message security modes, as OPC UA numbers them.
pub const MODE_NONE: u32 = 1;
pub const MODE_SIGN: u32 = 2;
pub const MODE_SIGN_AND_ENCRYPT: u32 = 3;

/// Bytes before a symmetric chunk's encrypted part: the message header, the channel id and the token id.
const UNENCRYPTED: usize = HEADER_LEN + 8;
/// RSA keys above 2048 bits take a second padding-size byte.
const EXTRA_PADDING_ABOVE: usize = 256;

/// Both ends of a secured connection: our application instance, the server's certificate and key.
pub struct Ends {
    pub own: Own,
    /// As the endpoint gave it: the leaf, maybe followed by its chain.
    pub server_certificate: Vec<u8>,
    pub server: PublicKey,
}

/// The keys of one token: ours for what we send, the server's for what it sends.
struct TokenKeys {
    token_id: u32,
    ours: SymmetricKeys,
    theirs: SymmetricKeys,
}

/// A secure channel under a signing policy, in Sign or SignAndEncrypt.
pub struct Secured {
    policy: Policy,
    uri: String,
    mode: u32,
    ends: Arc<Ends>,
    thumbprint: [u8; 20],
    client_nonce: Vec<u8>,
    /// The newest token's keys last; the one before it stays for chunks the server sent under it.
    tokens: Vec<TokenKeys>,
}

impl Secured {
    pub fn new(policy: Policy, mode: u32, ends: Arc<Ends>) -> Secured {
        let thumbprint = crypto::thumbprint(leaf(&ends.server_certificate));
        Secured { policy, uri: policy.uri(), mode, ends, thumbprint, client_nonce: Vec::new(), tokens: Vec::new() }
    }

    fn encrypts(&self) -> bool {
        self.mode == MODE_SIGN_AND_ENCRYPT
    }

    fn keys(&self, chunk: &[u8]) -> Result<&TokenKeys> {
        let token_id = u32::from_le_bytes(chunk[HEADER_LEN + 4..HEADER_LEN + 8].try_into().unwrap_or_default());
        self.tokens.iter().rev().find(|k| k.token_id == token_id).ok_or_else(|| {
            crate::secure_channel::status_error(
                0x8087_0000, // BadSecureChannelTokenUnknown
                &format!("a chunk under token {token_id}, which this channel was not granted"),
            )
        })
    }
}

/// The first certificate of a chain: what a thumbprint names.
pub fn leaf(chain: &[u8]) -> &[u8] {
    // A DER SEQUENCE with a long-form length: 0x30, 0x8N, then N length bytes.
    let len = match chain {
        [0x30, n @ 0x81..=0x84, rest @ ..] => {
            let count = usize::from(n & 0x7F);
            rest.get(..count).map(|b| b.iter().fold(0usize, |acc, &x| acc << 8 | usize::from(x)) + 2 + count)
        }
        [0x30, n, ..] if *n < 0x80 => Some(usize::from(*n) + 2),
        _ => None,
    };
    len.and_then(|len| chain.get(..len)).unwrap_or(chain)
}

/// Padding bytes (PaddingSize, the padding, ExtraPaddingSize when the key is large) making
/// `content` plus the padding and a signature of `signature_len` a whole number of `block` bytes.
fn padding(content: usize, signature_len: usize, block: usize, extra: bool) -> Vec<u8> {
    let fixed = content + 1 + usize::from(extra) + signature_len;
    let size = (block - fixed % block) % block;
    let mut bytes = vec![size as u8; size + 1];
    if extra {
        bytes.push((size >> 8) as u8);
    }
    bytes
}

/// The end of the content before padding that ends at `end`; the padding is checked.
fn unpad(plain: &[u8], end: usize, start: usize, extra: bool) -> Result<usize> {
    let bad = || checks_failed("a chunk's padding is malformed");
    let (size, markers) = if extra {
        let high = usize::from(*plain.get(end.checked_sub(1).ok_or_else(bad)?).ok_or_else(bad)?);
        let low = usize::from(*plain.get(end.checked_sub(2).ok_or_else(bad)?).ok_or_else(bad)?);
        (high << 8 | low, 2)
    } else {
        (usize::from(*plain.get(end.checked_sub(1).ok_or_else(bad)?).ok_or_else(bad)?), 1)
    };
    let content_end = end.checked_sub(size + markers).filter(|&e| e >= start).ok_or_else(bad)?;
    let low = size as u8;
    if plain[content_end..content_end + size + 1].iter().any(|&b| b != low) {
        return Err(bad());
    }
    Ok(content_end)
}

fn set_size(chunk: &mut [u8], size: usize) -> Result<()> {
    let size = u32::try_from(size).map_err(|_| Error::invalid_value("a chunk over 4 GiB"))?;
    chunk[4..8].copy_from_slice(&size.to_le_bytes());
    Ok(())
}

impl SecurityPolicy for Secured {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn mode(&self) -> u32 {
        self.mode
    }

    fn certificates(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        (Some(&self.ends.own.certificate), Some(&self.thumbprint))
    }

    fn new_nonce(&mut self) -> Option<Vec<u8>> {
        self.client_nonce = crypto::random(self.policy.nonce_len());
        Some(self.client_nonce.clone())
    }

    fn granted(&mut self, token_id: u32, server_nonce: &[u8]) -> Result<()> {
        let needed = self.policy.nonce_len();
        if server_nonce.len() < needed {
            return Err(checks_failed(&format!(
                "the server's nonce has {} bytes; {} needs {needed}",
                server_nonce.len(),
                self.policy.name()
            )));
        }
        let ours = SymmetricKeys::derive(self.policy, server_nonce, &self.client_nonce)?;
        let theirs = SymmetricKeys::derive(self.policy, &self.client_nonce, server_nonce)?;
        self.tokens.retain(|k| k.token_id != token_id);
        self.tokens.push(TokenKeys { token_id, ours, theirs });
        if self.tokens.len() > 2 {
            self.tokens.remove(0);
        }
        Ok(())
    }

    fn body_room(&self, chunk_size: usize) -> usize {
        let signature = self.policy.symmetric_signature_len();
        if self.encrypts() {
            let blocks = chunk_size.saturating_sub(UNENCRYPTED) / BLOCK_LEN * BLOCK_LEN;
            blocks.saturating_sub(8 + signature + 1)
        } else {
            chunk_size.saturating_sub(HEADER_LEN + 4 + SYMMETRIC_HEADERS + signature)
        }
    }

    fn secure(&self, chunk: &mut Vec<u8>) -> Result<()> {
        let keys = self.keys(chunk)?;
        let signature_len = self.policy.symmetric_signature_len();
        if self.encrypts() {
            let content = chunk.len() - UNENCRYPTED;
            chunk.extend(padding(content, signature_len, BLOCK_LEN, false));
        }
        let size = chunk.len() + signature_len;
        set_size(chunk, size)?;
        let signature = keys.ours.sign(chunk);
        chunk.extend_from_slice(signature.as_ref());
        if self.encrypts() {
            keys.ours.encrypt(&mut chunk[UNENCRYPTED..])?;
        }
        Ok(())
    }

    fn open(&self, chunk: Bytes) -> Result<Bytes> {
        let signature = self.policy.symmetric_signature_len();
        if chunk.len() < HEADER_LEN + 4 + SYMMETRIC_HEADERS + signature {
            return Err(checks_failed(&format!("a secured chunk of {} bytes", chunk.len())));
        }
        let mut plain = chunk.to_vec();
        let keys = self.keys(&plain)?;
        if self.encrypts() {
            keys.theirs.decrypt(&mut plain[UNENCRYPTED..])?;
        }
        let signed_end = plain.len() - signature;
        keys.theirs.verify(&plain[..signed_end], &plain[signed_end..])?;
        let end = if self.encrypts() {
            unpad(&plain, signed_end, HEADER_LEN + 4 + SYMMETRIC_HEADERS, false)?
        } else {
            signed_end
        };
        plain.truncate(end);
        set_size(&mut plain, end)?;
        Ok(Bytes::from(plain))
    }

    fn secure_asymmetric(&self, chunk: &mut Vec<u8>, header_end: usize) -> Result<()> {
        let server = &self.ends.server;
        let block = server.plain_block(self.policy);
        let signature_len = self.ends.own.key.size();
        let content = chunk.len() - header_end;
        chunk.extend(padding(content, signature_len, block, server.size() > EXTRA_PADDING_ABOVE));
        let encrypted_len = (chunk.len() - header_end + signature_len) / block * server.size();
        set_size(chunk, header_end + encrypted_len)?;
        let signature = self.ends.own.key.sign(self.policy, chunk)?;
        chunk.extend_from_slice(&signature);
        let encrypted = server.encrypt(self.policy, &chunk[header_end..])?;
        chunk.truncate(header_end);
        chunk.extend_from_slice(&encrypted);
        Ok(())
    }

    fn open_asymmetric<'a>(&self, chunk: &'a [u8], header_end: usize, sender: Option<&[u8]>) -> Result<Cow<'a, [u8]>> {
        if sender.map(leaf) != Some(leaf(&self.ends.server_certificate)) {
            return Err(checks_failed("OpenSecureChannel was answered under another certificate than the server's"));
        }
        let own = &self.ends.own.key;
        let mut plain = chunk[..header_end].to_vec();
        plain.extend(own.decrypt(self.policy, &chunk[header_end..])?);
        let signature_len = self.ends.server.size();
        let signed_end = plain
            .len()
            .checked_sub(signature_len)
            .filter(|&e| e >= header_end + 8)
            .ok_or_else(|| checks_failed("an OpenSecureChannel response too short for its signature"))?;
        self.ends.server.verify(self.policy, &plain[..signed_end], &plain[signed_end..])?;
        let end = unpad(&plain, signed_end, header_end + 8, own.size() > EXTRA_PADDING_ABOVE)?;
        Ok(Cow::Owned(plain[header_end..end].to_vec()))
    }
}

/// Who a session acts for (Part 4, 7.40).
pub enum Identity {
    Anonymous,
    UserName {
        user: String,
        password: String,
    },
    /// A user certificate (DER) and its private key.
    Certificate {
        certificate: Vec<u8>,
        key: crypto::PrivateKey,
    },
}

/// Never shows a password or a key.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Anonymous => write!(f, "Anonymous"),
            Identity::UserName { user, .. } => write!(f, "UserName({user}, ***)"),
            Identity::Certificate { .. } => write!(f, "Certificate(***)"),
        }
    }
}

impl Identity {
    /// The user token type a server's policy must offer: 0 anonymous, 1 user name, 2 certificate.
    pub fn token_type(&self) -> u32 {
        match self {
            Identity::Anonymous => 0,
            Identity::UserName { .. } => 1,
            Identity::Certificate { .. } => 2,
        }
    }

    fn name(&self) -> &'static str {
        ["an anonymous", "a user name", "a certificate"][self.token_type() as usize]
    }

    /// The token for ActivateSession, and the user's signature, under the first of
    /// `policies` (the endpoint's, for our policy and mode) that takes this identity.
    /// A password is encrypted with the server's key unless the token's policy is None.
    pub fn token(
        &self,
        policies: &[&UserTokenPolicy],
        (channel, allow_deprecated): (Policy, bool),
        server: Option<&PublicKey>,
        (server_certificate, server_nonce): (&[u8], &[u8]),
    ) -> Result<(IdentityToken, SignatureData)> {
        let token = policies.iter().find(|t| t.token_type == self.token_type()).ok_or_else(|| {
            Error::invalid_value(format!("the server takes no {} identity on this endpoint", self.name()))
        })?;
        let policy_id = token.policy_id.clone().unwrap_or_default();
        let policy = match token.security_policy_uri.as_deref().filter(|u| !u.is_empty()) {
            None => channel,
            Some(uri) => Policy::from_uri(uri).ok_or_else(|| {
                Error::invalid_value(format!(
                    "the server secures {} identity with '{uri}', which we do not speak",
                    self.name()
                ))
            })?,
        };
        if policy.is_legacy() && !allow_deprecated {
            return Err(crypto::deprecated(policy, &format!("the server secures {} identity with", self.name())));
        }
        let server_key = || {
            server.ok_or_else(|| {
                Error::invalid_value("the identity needs the server's certificate, which it did not send")
            })
        };
        Ok(match self {
            Identity::Anonymous => (IdentityToken::Anonymous { policy_id }, SignatureData::default()),
            Identity::UserName { user, password } => {
                let (password, encryption_algorithm) = if policy == Policy::None {
                    (password.as_bytes().to_vec(), None)
                } else {
                    let len = u32::try_from(password.len() + server_nonce.len())
                        .map_err(|_| Error::invalid_value("a password over 4 GiB"))?;
                    let mut plain = len.to_le_bytes().to_vec();
                    plain.extend_from_slice(password.as_bytes());
                    plain.extend_from_slice(server_nonce);
                    (server_key()?.encrypt(policy, &plain)?, Some(policy.encryption_uri().to_string()))
                };
                let token = IdentityToken::UserName { policy_id, user: user.clone(), password, encryption_algorithm };
                (token, SignatureData::default())
            }
            Identity::Certificate { certificate, key } => {
                if policy == Policy::None {
                    return Err(Error::invalid_value(
                        "a certificate identity needs a security policy to sign with: connect with one",
                    ));
                }
                let mut data = server_certificate.to_vec();
                data.extend_from_slice(server_nonce);
                let signature = SignatureData {
                    algorithm: Some(policy.signature_uri().into()),
                    signature: Some(key.sign(policy, &data)?),
                };
                (IdentityToken::X509 { policy_id, certificate: certificate.clone() }, signature)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::tests::{certificate, Made};
    use crate::transport::{self, kind, Acknowledge, Channel, Limits};

    fn ends(own: &Made, server: &Made) -> Arc<Ends> {
        Arc::new(Ends {
            own: Own {
                certificate: own.der().to_vec(),
                key: crypto::PrivateKey::from_pkcs8(own.key.serialized_der()).unwrap(),
                application_uri: "urn:c".into(),
            },
            server_certificate: server.der().to_vec(),
            server: crate::pki::public_key(server.der()).unwrap(),
        })
    }

    /// A client and, with the roles swapped, the server it talks to (RSA 2048 and 4096,
    /// so both paddings are used), under token 7 from each other's nonces.
    fn pair(policy: Policy, mode: u32) -> (Secured, Secured, Made) {
        let client_cert = certificate(&["urn:c"], (-1, 30), false, None, rcgen::RsaKeySize::_2048);
        let server_cert = certificate(&["urn:s"], (-1, 30), false, None, rcgen::RsaKeySize::_4096);
        let mut client = Secured::new(policy, mode, ends(&client_cert, &server_cert));
        let mut server = Secured::new(policy, mode, ends(&server_cert, &client_cert));
        let client_nonce = client.new_nonce().unwrap();
        let server_nonce = server.new_nonce().unwrap();
        client.granted(7, &server_nonce).unwrap();
        server.granted(7, &client_nonce).unwrap();
        (client, server, client_cert)
    }

    #[test]
    fn every_policy_and_mode_round_trips_and_refuses_a_changed_byte() {
        let policies = [
            Policy::Basic256Sha256,
            Policy::Aes128Sha256RsaOaep,
            Policy::Aes256Sha256RsaPss,
            Policy::Basic128Rsa15,
            Policy::Basic256,
        ];
        for (policy, mode) in policies.iter().flat_map(|p| [(*p, MODE_SIGN), (*p, MODE_SIGN_AND_ENCRYPT)]) {
            let (client, server, client_cert) = pair(policy, mode);
            // OpenSecureChannel: signed with our key, encrypted with the server's (in Sign mode too).
            let header = crate::secure_channel::RequestHeader {
                authentication_token: crate::node_id::NodeId::null(),
                timestamp: 0,
                request_handle: 1,
                timeout_hint: 0,
            };
            let mut opn = Vec::new();
            let request = crate::secure_channel::TokenRequest::Issue;
            let lifetime = std::time::Duration::from_secs(60);
            crate::secure_channel::open_request(
                &mut opn,
                0,
                &client,
                (1, 1),
                &header,
                request,
                Some(&[9; 32]),
                lifetime,
            )
            .unwrap();
            let header_end = HEADER_LEN + 4 + (4 + policy.uri().len()) + (4 + client_cert.der().len()) + (4 + 20);
            assert_eq!(u32::from_le_bytes(opn[4..8].try_into().unwrap()) as usize, opn.len());
            assert!(!opn.windows(32).any(|w| w == [9; 32]), "{policy:?}: the nonce travels encrypted");
            let content = server.open_asymmetric(&opn, header_end, Some(client_cert.der())).unwrap();
            assert_eq!(&content[..12], &[1, 0, 0, 0, 1, 0, 0, 0, 0x01, 0x00, 0xBE, 0x01], "{policy:?}");
            assert!(content.ends_with(&[9; 32].iter().chain(&60_000u32.to_le_bytes()).copied().collect::<Vec<_>>()));
            opn[header_end + 5] ^= 1;
            assert!(server.open_asymmetric(&opn, header_end, Some(client_cert.der())).is_err());

            // A message in several chunks, each signed (and encrypted), opened by the other end.
            let limits = Acknowledge {
                protocol_version: 0,
                limits: Limits { receive_buffer: 8192, send_buffer: 8192, max_message: 0, max_chunks: 0 },
            }
            .negotiate(&Limits { receive_buffer: 8192, send_buffer: 8192, max_message: 0, max_chunks: 0 });
            let body: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
            let mut channel = Channel { channel_id: 3, token_id: 7, sequence: 1 };
            let mut out = Vec::new();
            transport::write_chunks(&mut out, kind::MESSAGE, &mut channel, 5, &body, &limits, &client).unwrap();
            let (mut at, mut received, mut chunks) = (0, Vec::new(), Vec::new());
            while at < out.len() {
                let len = transport::frame_len(&out[at..], 8192).unwrap().unwrap();
                assert!(len <= 8192, "{policy:?} {mode}: a chunk of {len} bytes");
                chunks.push(out[at..at + len].to_vec());
                let opened = server.open(Bytes::copy_from_slice(&out[at..at + len])).unwrap();
                received.extend_from_slice(transport::parse_chunk(&opened).unwrap().body);
                at += len;
            }
            assert_eq!(received, body, "{policy:?} {mode}");
            assert!(chunks.len() >= 3);
            let plain_visible = chunks[0].windows(16).any(|w| w == &body[..16]);
            assert_eq!(plain_visible, mode == MODE_SIGN, "{policy:?} {mode}: encrypted only in SignAndEncrypt");
            let mut changed = chunks[1].clone();
            let last = changed.len() - 40;
            changed[last] ^= 0x80;
            let e = server.open(Bytes::from(changed)).unwrap_err();
            assert_eq!(e.opcua.unwrap().name, "BadSecurityChecksFailed");
            // The client cannot open its own chunks: each direction has its keys.
            assert!(client.open(Bytes::from(chunks[0].clone())).is_err());
            let mut other_token = chunks[0].clone();
            other_token[12] = 8;
            assert_eq!(
                server.open(Bytes::from(other_token)).unwrap_err().opcua.unwrap().name,
                "BadSecureChannelTokenUnknown"
            );
        }
    }

    #[test]
    fn padding_fills_whole_blocks_and_unpads() {
        for content in 0..40 {
            for extra in [false, true] {
                let pad = padding(content, 32, 16, extra);
                assert_eq!((content + pad.len() + 32) % 16, 0);
                let mut plain = vec![0xEE; content];
                plain.extend(&pad);
                assert_eq!(unpad(&plain, plain.len(), 0, extra).unwrap(), content);
            }
        }
        let mut bad = vec![0; 8];
        bad.extend([3, 3, 2, 3]); // one padding byte wrong
        assert!(unpad(&bad, bad.len(), 0, false).is_err());
        assert!(unpad(&[200], 1, 0, false).is_err(), "padding longer than the chunk");
    }

    #[test]
    fn a_chain_leaf_is_its_first_certificate() {
        let mut cert = vec![0x30, 0x82, 0x01, 0x00];
        cert.extend(vec![7; 256]);
        let mut chain = cert.clone();
        chain.extend([0x30, 0x03, 1, 2, 3]);
        assert_eq!(leaf(&chain), &cert[..]);
    }
}
