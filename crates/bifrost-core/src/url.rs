//! Device URLs: `scheme://host:port/path?key=value&...`. Query keys are
//! kebab-case and shared by every protocol; each protocol takes the keys it
//! knows and `finish` rejects the rest, so a typo is an error, not a default.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUrl {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
    /// `user[:password]` given before the host; never shown in messages.
    pub user_info: Option<String>,
    query: Vec<(String, String)>,
}

/// Largest time in milliseconds an option takes: what a Node timer can wait (about 24.8 days).
pub const MAX_MS: u64 = 2_147_483_647;

impl DeviceUrl {
    pub fn parse(text: &str) -> Result<DeviceUrl> {
        let shown = redacted(text);
        let bad = |why: &str| Error::address(format!("{why} in URL '{shown}'"));
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("missing '://'"))?;
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
            return Err(bad("bad scheme"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, query),
            None => (rest, ""),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (user_info, authority) = match authority.rsplit_once('@') {
            Some((user_info, host)) => (Some(percent_decode(user_info)), host),
            None => (None, authority),
        };
        let (host, port) = split_host_port(authority).map_err(|why| bad(&why))?;
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((percent_decode(key), percent_decode(value)));
        }
        Ok(DeviceUrl {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_string(),
            port,
            path: percent_decode(path),
            user_info,
            query: pairs,
        })
    }

    /// Sets a query key, replacing any earlier value (options given beside the URL win).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.query.retain(|(k, _)| k != key);
        self.query.push((key.to_string(), value.into()));
    }

    /// Removes and parses a query key.
    pub fn take<T: FromStr>(&mut self, key: &str) -> Result<Option<T>> {
        let Some(i) = self.query.iter().rposition(|(k, _)| k == key) else { return Ok(None) };
        let (_, value) = self.query.remove(i);
        self.query.retain(|(k, _)| k != key);
        value.parse().map(Some).map_err(|_| Error::invalid_value(format!("bad value '{value}' for URL option '{key}'")))
    }

    /// Removes and parses a numeric query key that must lie in `range`; any
    /// other value is `EINVAL`, naming the key and the range.
    pub fn take_in<T>(&mut self, key: &str, range: RangeInclusive<T>) -> Result<Option<T>>
    where
        T: FromStr + PartialOrd + Display,
    {
        let Some(i) = self.query.iter().rposition(|(k, _)| k == key) else { return Ok(None) };
        let (_, value) = self.query.remove(i);
        self.query.retain(|(k, _)| k != key);
        match value.trim().parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(out_of_range(&format!("URL option '{key}'"), &range, &value)),
        }
    }

    /// Refuses a user name or password before the host, for protocols that take none.
    pub fn refuse_user_info(&self) -> Result<()> {
        match self.user_info {
            None => Ok(()),
            Some(_) => Err(Error::address(format!(
                "{}:// URLs take no user name or password (found 'user@' before the host '{}')",
                self.scheme, self.host
            ))),
        }
    }

    /// Fails on any query key nobody took.
    pub fn finish(&self) -> Result<()> {
        match self.query.first() {
            None => Ok(()),
            Some((key, _)) => Err(Error::address(format!("unknown URL option '{key}' for {}://", self.scheme))),
        }
    }

    /// `host:port`, with the given default port and IPv6 hosts in brackets.
    pub fn socket_address(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// A numeric option given as a JavaScript number: a whole number in `range`,
/// else `EINVAL` naming the option and the range (never wrapped or clamped).
pub fn whole_number(name: &str, value: f64, range: RangeInclusive<u64>) -> Result<u64> {
    let fits = value.fract() == 0.0 && value >= *range.start() as f64 && value <= *range.end() as f64;
    if fits {
        Ok(value as u64)
    } else {
        Err(out_of_range(&format!("option '{name}'"), &range, &value))
    }
}

fn out_of_range<T: Display>(what: &str, range: &RangeInclusive<T>, value: &dyn Display) -> Error {
    Error::invalid_value(format!(
        "{what} must be a whole number from {} to {}, not '{value}'",
        range.start(),
        range.end()
    ))
}

/// The URL with anything between `://` and `@` hidden, for messages.
fn redacted(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else { return text.to_string() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => text.to_string(),
    }
}

fn split_host_port(authority: &str) -> std::result::Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '['")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().map_err(|_| format!("bad port '{p}'"))?),
        None => None,
    };
    Ok((host, port))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_url_with_options() {
        let mut url = DeviceUrl::parse("modbus-tcp://10.0.0.5:502?unit-id=7&request-timeout=250").unwrap();
        assert_eq!(url.scheme, "modbus-tcp");
        assert_eq!(url.host, "10.0.0.5");
        assert_eq!(url.port, Some(502));
        assert_eq!(url.take::<u8>("unit-id").unwrap(), Some(7));
        assert_eq!(url.take::<u64>("request-timeout").unwrap(), Some(250));
        assert_eq!(url.take::<u64>("max-gap").unwrap(), None);
        url.finish().unwrap();
    }

    #[test]
    fn parses_serial_path_and_ipv6() {
        let url = DeviceUrl::parse("modbus-rtu:///dev/ttyUSB0?baud-rate=9600").unwrap();
        assert_eq!(url.host, "");
        assert_eq!(url.path, "/dev/ttyUSB0");
        let url = DeviceUrl::parse("modbus-tcp://[::1]:5020").unwrap();
        assert_eq!(url.socket_address(502), "[::1]:5020");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let mut url = DeviceUrl::parse("modbus-tcp://h?unit-id=x&colour=red").unwrap();
        assert_eq!(url.take::<u8>("unit-id").unwrap_err().code, crate::ErrorCode::InvalidValue);
        let err = url.finish().unwrap_err();
        assert!(err.message.contains("colour"), "{}", err.message);
        assert!(DeviceUrl::parse("nothing").is_err());
        assert!(DeviceUrl::parse("modbus-tcp://h:99999").is_err());
    }

    #[test]
    fn numeric_options_in_range() {
        let mut url = DeviceUrl::parse("modbus-tcp://h?request-timeout=-1&max-gap=4&baud-rate=0&n=4294967396").unwrap();
        let err = url.take_in::<u64>("request-timeout", 1..=MAX_MS).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::InvalidValue);
        assert!(
            err.message.contains("'request-timeout' must be a whole number from 1 to 2147483647, not '-1'"),
            "{}",
            err.message
        );
        assert_eq!(url.take_in::<u16>("max-gap", 0..=100).unwrap(), Some(4));
        assert!(url.take_in::<u32>("baud-rate", 50..=12_000_000).is_err());
        assert!(url.take_in::<u64>("n", 1..=MAX_MS).is_err());
        assert_eq!(url.take_in::<u64>("absent", 1..=2).unwrap(), None);
    }

    #[test]
    fn whole_numbers_from_javascript() {
        assert_eq!(whole_number("port", 502.0, 0..=65535).unwrap(), 502);
        for bad in [-1.0, 1.5, f64::NAN, f64::INFINITY, 65536.0] {
            let err = whole_number("port", bad, 0..=65535).unwrap_err();
            assert_eq!(err.code, crate::ErrorCode::InvalidValue);
            assert!(err.message.starts_with("option 'port' must be a whole number from 0 to 65535"), "{}", err.message);
        }
    }

    #[test]
    fn user_info_is_kept_apart_and_never_shown() {
        let url = DeviceUrl::parse("modbus-tcp://user:secret@10.0.0.5:502").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("10.0.0.5", Some(502)));
        let err = url.refuse_user_info().unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::Address);
        assert!(!err.message.contains("secret"), "{}", err.message);
        let err = DeviceUrl::parse("modbus-tcp://user:secret@h:99999").unwrap_err();
        assert!(!err.message.contains("secret") && err.message.contains("***@h:99999"), "{}", err.message);
    }

    #[test]
    fn set_overrides_the_query() {
        let mut url = DeviceUrl::parse("modbus-tcp://h?unit-id=1").unwrap();
        url.set("unit-id", "9");
        assert_eq!(url.take::<u8>("unit-id").unwrap(), Some(9));
    }
}
