//! The application's certificate store, laid out as other OPC UA clients lay
//! theirs out (Part 12, F.1):
//!
//! - `own/certs/bifrost.der` and `own/private/bifrost.pem`: our application
//!   certificate and its key, made on first use;
//! - `trusted/certs/`: the servers (or the CAs) we trust, DER or PEM;
//! - `issuers/certs/`: CAs that complete a chain but are not trusted themselves;
//! - `rejected/certs/`: server certificates refused, to copy into `trusted/certs`.
//!
//! A server certificate passes when its chain leads to a trusted certificate
//! (each signature checked), every certificate on it is within its validity,
//! its application URI is the server's, and the host we dialled is among its names.

use std::path::{Path, PathBuf};

use bifrost_core::{Error, Result};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::crypto::{self, PrivateKey, PublicKey};
use crate::secure_channel::status_error;
use crate::status;

/// How long the application certificate we make is valid.
const OWN_VALIDITY_DAYS: i64 = 5 * 365;

/// The longest chain we follow from a server certificate to a trusted one.
const MAX_CHAIN: usize = 6;

/// Our application instance: its certificate, key and application URI.
pub struct Own {
    pub certificate: Vec<u8>,
    pub key: PrivateKey,
    /// The URI the certificate names, which CreateSession must name too.
    pub application_uri: String,
}

/// What a server's certificate must show.
#[derive(Debug, Clone, Copy)]
pub struct ServerCheck<'a> {
    /// The host dialled, which the certificate must name; `None`: not checked.
    pub host: Option<&'a str>,
    /// The application URI the server gave, which the certificate must name.
    pub application_uri: Option<&'a str>,
    /// Accept it for this connection though no trusted certificate vouches for it.
    pub accept_once: bool,
}

/// A certificate store rooted at one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pki {
    root: PathBuf,
}

/// The default store: `bifrost/pki` under the user's configuration folder
/// (`$XDG_CONFIG_HOME` or `~/.config`; `%APPDATA%` on Windows; `~/Library/Application Support` on macOS).
pub fn default_root() -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    let config = if cfg!(windows) {
        std::env::var_os("APPDATA").map(PathBuf::from).unwrap_or_else(home)
    } else if cfg!(target_os = "macos") {
        home().join("Library").join("Application Support")
    } else {
        std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).unwrap_or_else(|| home().join(".config"))
    };
    config.join("bifrost").join("pki")
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::invalid_value(format!("{what} '{}': {e}", path.display()))
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>> {
    X509Certificate::from_der(der).map(|(_, cert)| cert).map_err(|e| {
        status_error(status::BAD_CERTIFICATE_INVALID, &format!("a certificate that does not parse as X.509 ({e})"))
    })
}

/// The certificates in a ByteString that may hold a chain: DER certificates one after another.
fn split_chain(bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let mut chain = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (after, _) = X509Certificate::from_der(rest).map_err(|e| {
            status_error(status::BAD_CERTIFICATE_INVALID, &format!("a certificate that does not parse as X.509 ({e})"))
        })?;
        chain.push(&rest[..rest.len() - after.len()]);
        rest = after;
    }
    if chain.is_empty() {
        return Err(status_error(status::BAD_CERTIFICATE_INVALID, "the server sent no certificate"));
    }
    Ok(chain)
}

/// A certificate's public key, for signatures and encryption.
pub fn public_key(certificate: &[u8]) -> Result<PublicKey> {
    let leaf = split_chain(certificate)?[0];
    let cert = parse(leaf)?;
    let spki = cert.public_key();
    PublicKey::new(spki.raw, &spki.subject_public_key.data)
}

fn names<'a>(cert: &'a X509Certificate<'a>) -> Vec<&'a GeneralName<'a>> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().collect(),
        _ => Vec::new(),
    }
}

/// The certificate's common name and thumbprint, as messages show it.
fn describe(cert: &X509Certificate<'_>, der: &[u8]) -> String {
    let thumbprint: String = crypto::thumbprint(der).iter().map(|b| format!("{b:02x}")).collect();
    format!("'{}' (SHA-1 {thumbprint})", cert.subject())
}

/// Certificates in a folder (DER or PEM files); a missing folder holds none.
fn certificates_in(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found = Vec::new();
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        if bytes.starts_with(b"-----BEGIN") {
            for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes).filter_map(|p| p.ok()) {
                found.push(pem.contents);
            }
        } else {
            found.push(bytes);
        }
    }
    found
}

impl Pki {
    pub fn new(root: PathBuf) -> Pki {
        Pki { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn trusted(&self) -> PathBuf {
        self.root.join("trusted").join("certs")
    }

    fn rejected(&self) -> PathBuf {
        self.root.join("rejected").join("certs")
    }

    /// Our certificate and key, made (RSA 2048, SHA-256, valid five years) if missing or expired.
    pub fn own(&self) -> Result<Own> {
        let certs = self.root.join("own").join("certs");
        let private = self.root.join("own").join("private");
        let (cert_path, key_path) = (certs.join("bifrost.der"), private.join("bifrost.pem"));
        if let (Ok(certificate), Ok(pem)) = (std::fs::read(&cert_path), std::fs::read_to_string(&key_path)) {
            let cert = parse(&certificate)?;
            if cert.validity().is_valid() {
                let key = rcgen::KeyPair::from_pem(&pem)
                    .map_err(|e| Error::invalid_value(format!("the key in '{}': {e}", key_path.display())))?;
                let application_uri = names(&cert)
                    .iter()
                    .find_map(|n| match n {
                        GeneralName::URI(uri) => Some(uri.to_string()),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        Error::invalid_value(format!("'{}' names no application URI", cert_path.display()))
                    })?;
                let key = PrivateKey::from_pkcs8(key.serialized_der())?;
                return Ok(Own { certificate, key, application_uri });
            }
        }
        let host = std::env::var("HOSTNAME")
            .or_else(|_| std::env::var("COMPUTERNAME"))
            .ok()
            .filter(|h| !h.is_empty() && h.is_ascii())
            .unwrap_or_else(|| "localhost".into());
        let application_uri = format!("urn:{host}:bifrost");
        let failed = |e: rcgen::Error| Error::invalid_value(format!("making the application certificate: {e}"));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(failed)?;
        let mut params = rcgen::CertificateParams::new(vec![host]).map_err(failed)?;
        let uri = rcgen::string::Ia5String::try_from(application_uri.clone()).map_err(failed)?;
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
        params.distinguished_name.push(rcgen::DnType::CommonName, "Bifrost");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Bifrost");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(OWN_VALIDITY_DAYS);
        use rcgen::KeyUsagePurpose as Usage;
        params.key_usages = vec![
            Usage::DigitalSignature,
            Usage::ContentCommitment,
            Usage::KeyEncipherment,
            Usage::DataEncipherment,
            Usage::KeyCertSign,
        ];
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.self_signed(&key).map_err(failed)?;
        let certificate = cert.der().to_vec();
        write_new(&private, &key_path, key.serialize_pem().as_bytes(), true)?;
        write_new(&certs, &cert_path, &certificate, false)?;
        Ok(Own { certificate, key: PrivateKey::from_pkcs8(key.serialized_der())?, application_uri })
    }

    /// Checks a server's certificate (a chain, leaf first) as `check` has it: its
    /// public key when it passes. An untrusted one is saved to `rejected/certs`
    /// and refused, unless `check.accept_once`.
    pub fn check_server(&self, certificate: &[u8], check: &ServerCheck<'_>) -> Result<PublicKey> {
        let ServerCheck { host, application_uri, accept_once } = *check;
        let chain = split_chain(certificate)?;
        let leaf = parse(chain[0])?;
        let who = describe(&leaf, chain[0]);
        let fail = |code: u32, why: String| status_error(code, &format!("the server's certificate {who} {why}"));

        let trusted = certificates_in(&self.trusted());
        let mut pool: Vec<Vec<u8>> = chain[1..].iter().map(|c| c.to_vec()).collect();
        pool.extend(certificates_in(&self.root.join("issuers").join("certs")));
        pool.extend(trusted.iter().cloned());

        // Walk from the leaf to a trusted certificate, checking each signature and validity.
        let mut current = chain[0].to_vec();
        let mut is_trusted = false;
        for _ in 0..MAX_CHAIN {
            let issuer = {
                let cert = parse(&current)?;
                if !cert.validity().is_valid() {
                    let v = cert.validity();
                    return Err(fail(
                        status::BAD_CERTIFICATE_TIME_INVALID,
                        format!("or its issuer is valid from {} to {}, not now", v.not_before, v.not_after),
                    ));
                }
                if trusted.contains(&current) {
                    is_trusted = true;
                    break;
                }
                pool.iter()
                    .find(|candidate| {
                        parse(candidate).is_ok_and(|parsed| {
                            parsed.subject().as_raw() == cert.issuer().as_raw()
                                && cert.verify_signature(Some(parsed.public_key())).is_ok()
                        })
                    })
                    .cloned()
            };
            match issuer {
                Some(next) if next != current => current = next,
                _ => break,
            }
        }
        if cert_self_signed(&leaf) && leaf.verify_signature(None).is_err() {
            return Err(fail(status::BAD_SECURITY_CHECKS_FAILED, "is not signed by its own key".into()));
        }
        if let Some(expected) = application_uri.filter(|u| !u.is_empty()) {
            let uris: Vec<&str> = names(&leaf)
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect();
            if !uris.contains(&expected) {
                return Err(fail(
                    status::BAD_CERTIFICATE_URI_INVALID,
                    format!("names the application URI {uris:?}, but the server says it is '{expected}'"),
                ));
            }
        }
        if let Some(host) = host.filter(|host| !host_matches(&leaf, host)) {
            return Err(fail(
                status::BAD_CERTIFICATE_HOST_NAME_INVALID,
                format!(
                    "does not name the host '{host}' (it names {}): connect by one of those names, or with checkHostName false",
                    host_names(&leaf).join(", ")
                ),
            ));
        }
        if !is_trusted && !accept_once {
            let rejected = self.rejected();
            let name: String = crypto::thumbprint(chain[0]).iter().map(|b| format!("{b:02x}")).collect();
            let path = rejected.join(format!("{name}.der"));
            let saved = match write_new(&rejected, &path, chain[0], false) {
                Ok(()) => format!("it was saved to '{}'", path.display()),
                Err(e) => format!("saving it failed ({})", e.message),
            };
            return Err(fail(
                status::BAD_CERTIFICATE_UNTRUSTED,
                format!(
                    "is not trusted: {saved}; copy it into '{}' to trust the server, or connect with acceptServerCertificate for this connection alone",
                    self.trusted().display()
                ),
            ));
        }
        public_key(chain[0])
    }
}

fn cert_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw()
}

fn host_names(cert: &X509Certificate<'_>) -> Vec<String> {
    names(cert)
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => Some(name.to_string()),
            GeneralName::IPAddress(ip) => ip_of(ip).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect()
}

fn ip_of(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Whether `host` (a name or an address, as dialled) is among the certificate's names.
fn host_matches(cert: &X509Certificate<'_>, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    names(cert).iter().any(|n| match n {
        GeneralName::DNSName(name) => name.eq_ignore_ascii_case(host),
        GeneralName::IPAddress(bytes) => ip.is_some() && ip_of(bytes) == ip,
        _ => false,
    })
}

/// Writes a file by way of a temporary one, so a reader never sees half of it;
/// a private key is readable by its owner alone.
fn write_new(dir: &Path, path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("cannot make the folder", dir, e))?;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = private;
    let written = options.open(&temporary).and_then(|mut file| std::io::Write::write_all(&mut file, bytes));
    written.and_then(|()| std::fs::rename(&temporary, path)).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        io_error("cannot write", path, e)
    })
}

/// A certificate identity from its files: the user's certificate (DER or PEM)
/// and its private key (PKCS#8, PEM or DER).
pub fn user_identity(certificate: &Path, key: &Path) -> Result<crate::security::Identity> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| io_error("cannot read", path, e));
    let bytes = read(certificate)?;
    let certificate_der = if bytes.starts_with(b"-----BEGIN") {
        let pem = x509_parser::pem::Pem::iter_from_buffer(&bytes).next().and_then(|p| p.ok());
        pem.map(|p| p.contents)
            .ok_or_else(|| Error::invalid_value(format!("'{}' holds no PEM certificate", certificate.display())))?
    } else {
        bytes
    };
    parse(&certificate_der)?;
    let bytes = read(key)?;
    let key_der = if bytes.starts_with(b"-----BEGIN") {
        let text = String::from_utf8_lossy(&bytes);
        let pair = rcgen::KeyPair::from_pem(&text)
            .map_err(|e| Error::invalid_value(format!("the key in '{}': {e}", key.display())))?;
        pair.serialized_der().to_vec()
    } else {
        bytes
    };
    Ok(crate::security::Identity::Certificate { certificate: certificate_der, key: PrivateKey::from_pkcs8(&key_der)? })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A certificate made for a test, its key, and what it was made from.
    pub(crate) struct Made {
        pub cert: rcgen::Certificate,
        pub key: rcgen::KeyPair,
        params: rcgen::CertificateParams,
    }

    impl Made {
        pub(crate) fn der(&self) -> &[u8] {
            self.cert.der()
        }
    }

    /// A certificate for `names` (DNS names, IP addresses or `urn:` URIs), self-signed
    /// or signed by `issuer`, valid from `days.0` to `days.1` days from now.
    pub(crate) fn certificate(
        names: &[&str],
        days: (i64, i64),
        ca: bool,
        issuer: Option<&Made>,
        bits: rcgen::RsaKeySize,
    ) -> Made {
        let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, bits).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for name in names {
            params.subject_alt_names.push(if let Ok(ip) = name.parse() {
                rcgen::SanType::IpAddress(ip)
            } else if name.starts_with("urn:") {
                rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*name).unwrap())
            } else {
                rcgen::SanType::DnsName(rcgen::string::Ia5String::try_from(*name).unwrap())
            });
        }
        params.distinguished_name.push(rcgen::DnType::CommonName, names.first().copied().unwrap_or("ca"));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days.0);
        params.not_after = now + time::Duration::days(days.1);
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let cert = match issuer {
            None => params.self_signed(&key).unwrap(),
            Some(issuer) => params.signed_by(&key, &rcgen::Issuer::from_params(&issuer.params, &issuer.key)).unwrap(),
        };
        Made { cert, key, params }
    }

    fn store() -> (Pki, PathBuf) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("bifrost-pki-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        (Pki::new(root.clone()), root)
    }

    fn check<'a>(host: &'a str, uri: &'a str) -> ServerCheck<'a> {
        ServerCheck { host: Some(host), application_uri: Some(uri), accept_once: false }
    }

    fn status_name(result: Result<PublicKey>) -> &'static str {
        result.err().and_then(|e| e.opcua).map_or("passed", |s| s.name)
    }

    #[test]
    fn the_own_certificate_is_made_once_and_names_its_application_uri() {
        let (pki, root) = store();
        let own = pki.own().unwrap();
        assert!(own.application_uri.starts_with("urn:") && own.application_uri.ends_with(":bifrost"));
        assert_eq!(own.key.size(), 256, "RSA 2048");
        let again = pki.own().unwrap();
        assert_eq!(again.certificate, own.certificate, "made on first use, then kept");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(root.join("own/private/bifrost.pem")).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is its owner's alone");
        }
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn an_untrusted_server_is_saved_to_rejected_and_trusted_once_copied() {
        let (pki, root) = store();
        let cert = certificate(&["urn:s", "plc.local"], (-1, 30), false, None, rcgen::RsaKeySize::_2048);
        let e = pki.check_server(cert.der(), &check("plc.local", "urn:s")).err().unwrap();
        assert_eq!(e.opcua.unwrap().name, "BadCertificateUntrusted");
        let thumbprint: String = crypto::thumbprint(cert.der()).iter().map(|b| format!("{b:02x}")).collect();
        let rejected = root.join("rejected/certs").join(format!("{thumbprint}.der"));
        assert!(e.message.contains(&rejected.display().to_string()), "{}", e.message);
        assert_eq!(std::fs::read(&rejected).unwrap(), cert.der().to_vec());
        let once = ServerCheck { accept_once: true, ..check("plc.local", "urn:s") };
        assert_eq!(status_name(pki.check_server(cert.der(), &once)), "passed");
        std::fs::create_dir_all(root.join("trusted/certs")).unwrap();
        std::fs::copy(&rejected, root.join("trusted/certs/plc.der")).unwrap();
        assert_eq!(status_name(pki.check_server(cert.der(), &check("plc.local", "urn:s"))), "passed");
        // Trusted, but not for another host or another application.
        assert_eq!(
            status_name(pki.check_server(cert.der(), &check("10.0.0.9", "urn:s"))),
            "BadCertificateHostNameInvalid"
        );
        let anywhere = ServerCheck { host: None, ..check("", "urn:s") };
        assert_eq!(status_name(pki.check_server(cert.der(), &anywhere)), "passed");
        assert_eq!(status_name(pki.check_server(cert.der(), &check("plc.local", "urn:x"))), "BadCertificateUriInvalid");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_chain_is_followed_to_a_trusted_ca_with_each_signature_and_validity_checked() {
        let (pki, root) = store();
        let ca = certificate(&["Plant CA"], (-1, 365), true, None, rcgen::RsaKeySize::_2048);
        let server = certificate(&["urn:s", "10.0.0.5"], (-1, 30), false, Some(&ca), rcgen::RsaKeySize::_2048);
        std::fs::create_dir_all(root.join("trusted/certs")).unwrap();
        std::fs::write(root.join("trusted/certs/ca.der"), ca.der()).unwrap();
        assert_eq!(status_name(pki.check_server(server.der(), &check("10.0.0.5", "urn:s"))), "passed");
        // The server may send its chain: the leaf is what is checked.
        let mut chain = server.der().to_vec();
        chain.extend_from_slice(ca.der());
        assert_eq!(status_name(pki.check_server(&chain, &check("10.0.0.5", "urn:s"))), "passed");
        // A certificate of the same name signed by another key is not vouched for.
        let impostor = certificate(&["Plant CA"], (-1, 365), true, None, rcgen::RsaKeySize::_2048);
        let forged = certificate(&["urn:s", "10.0.0.5"], (-1, 30), false, Some(&impostor), rcgen::RsaKeySize::_2048);
        assert_eq!(status_name(pki.check_server(forged.der(), &check("10.0.0.5", "urn:s"))), "BadCertificateUntrusted");
        // Expired, though trusted.
        let old = certificate(&["urn:s", "10.0.0.5"], (-60, -1), false, Some(&ca), rcgen::RsaKeySize::_2048);
        assert_eq!(status_name(pki.check_server(old.der(), &check("10.0.0.5", "urn:s"))), "BadCertificateTimeInvalid");
        assert_eq!(status_name(pki.check_server(b"not a certificate", &check("h", "u"))), "BadCertificateInvalid");
        let _ = std::fs::remove_dir_all(root);
    }
}
