//! The public address of our DICOMweb face, for the absolute URLs Pons
//! writes (BulkDataURI, RetrieveURL, Content-Location, Location):
//! `web.public_url` when set; else, from peers in `web.trusted_proxies`
//! only, what `Forwarded` or `X-Forwarded-Proto/Host/Prefix` say; else the
//! Host the client used, with the port it connected to when Host has none
//! (dicomweb-client and others send `Host: 127.0.0.1` without the port).

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Set by [`resolve`] on every request (a client's own is dropped first):
/// `scheme://host[:port][/prefix]`, to which a base path is appended.
pub const PUBLIC_PREFIX: &str = "x-pons-public-prefix";

pub struct Origins {
    /// From `web.public_url`, without the base path.
    fixed: Option<String>,
    trusted: Vec<Cidr>,
    https: bool,
    port: u16,
}

impl Origins {
    pub fn new(
        public_url: Option<&str>,
        base_path: &str,
        trusted_proxies: &[String],
        https: bool,
        port: u16,
    ) -> Origins {
        Origins {
            fixed: public_url.map(|u| {
                let u = u.trim_end_matches('/');
                u.strip_suffix(base_path).unwrap_or(u).to_owned()
            }),
            trusted: trusted_proxies
                .iter()
                .filter_map(|c| Cidr::parse(c))
                .collect(),
            https,
            port,
        }
    }

    pub fn prefix(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
        peer: Option<IpAddr>,
    ) -> String {
        if let Some(fixed) = &self.fixed {
            return fixed.clone();
        }
        // The last value: proxies that append put theirs after whatever
        // the client sent.
        let header = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let (mut proto, mut host, mut path, mut port) = (None, None, None, None);
        let trusted = peer.is_some_and(|ip| self.trusted.iter().any(|c| c.contains(ip)));
        if trusted {
            if let Some(forwarded) = header("forwarded") {
                for pair in forwarded.split(';') {
                    if let Some((k, v)) = pair.split_once('=') {
                        let v = v.trim().trim_matches('"');
                        match k.trim().to_ascii_lowercase().as_str() {
                            "proto" => proto = Some(v),
                            "host" => host = Some(v),
                            _ => {}
                        }
                    }
                }
            }
            proto = proto.or_else(|| header("x-forwarded-proto"));
            host = host.or_else(|| header("x-forwarded-host"));
            path = header("x-forwarded-prefix");
            port = header("x-forwarded-port").filter(|p| p.parse::<u16>().is_ok());
        }
        let own = if self.https { "https" } else { "http" };
        let scheme = proto
            .filter(|p| *p == "http" || *p == "https")
            .unwrap_or(own);
        let forwarded_host = host.filter(|h| plausible_host(h));
        let host = forwarded_host
            .or_else(|| header(header::HOST.as_str()).or(authority))
            .filter(|h| plausible_host(h))
            .unwrap_or("localhost");
        let default_port = if scheme == "https" { "443" } else { "80" };
        // Behind a trusted proxy the port we listen on is the proxy's
        // business, not the client's: only X-Forwarded-Port says it.
        let port = match port {
            Some(p) => Some(p.to_owned()),
            None if trusted => None,
            None => Some(self.port.to_string()),
        };
        let host = match port.filter(|p| p != default_port && !has_port(host)) {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let path = path
            .filter(|p| {
                p.starts_with('/')
                    && p.chars()
                        .all(|c| c.is_ascii_graphic() && c != '?' && c != '#')
            })
            .map_or("", |p| p.trim_end_matches('/'));
        format!("{scheme}://{host}{path}")
    }
}

fn plausible_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
}

fn has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        Some((h, port)) => {
            !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':')
        }
        None => false,
    }
}

/// The middleware: note the public prefix for the handlers.
pub async fn resolve(
    State(origins): State<Arc<Origins>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    let prefix = origins.prefix(req.headers(), authority.as_deref(), peer);
    req.headers_mut().remove(PUBLIC_PREFIX);
    if let Ok(v) = HeaderValue::from_str(&prefix) {
        req.headers_mut().insert(PUBLIC_PREFIX, v);
    }
    next.run(req).await
}

/// An address range in `web.trusted_proxies`: `10.0.0.0/8`, `::1/128`, or
/// one address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { net: addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, max) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = max - u32::from(self.bits);
        shift >= max || (a >> shift) == (b >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_prefix_follows_config_then_trusted_proxies_then_host() {
        let plain = Origins::new(None, "/dicom-web", &["10.0.0.0/8".into()], false, 8080);
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "192.0.2.7".parse().unwrap();
        let h = headers(&[("host", "127.0.0.1")]);
        assert_eq!(
            plain.prefix(&h, None, Some(stranger)),
            "http://127.0.0.1:8080"
        );
        let h = headers(&[("host", "gw:9000")]);
        assert_eq!(plain.prefix(&h, None, Some(stranger)), "http://gw:9000");
        let fwd = headers(&[
            ("host", "pons:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "pacs.example.org"),
            ("x-forwarded-prefix", "/imaging/"),
        ]);
        assert_eq!(
            plain.prefix(&fwd, None, Some(proxy)),
            "https://pacs.example.org/imaging"
        );
        assert_eq!(plain.prefix(&fwd, None, Some(stranger)), "http://pons:8080");
        // nginx's usual set-up: Host passed on, X-Forwarded-Proto added.
        let nginx = headers(&[("host", "gw.example.org"), ("x-forwarded-proto", "https")]);
        assert_eq!(
            plain.prefix(&nginx, None, Some(proxy)),
            "https://gw.example.org"
        );
        let ported = headers(&[
            ("host", "gw"),
            ("x-forwarded-port", "8443"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(plain.prefix(&ported, None, Some(proxy)), "https://gw:8443");
        // An appending proxy: the client's value first, the proxy's last.
        let appended = headers(&[
            ("host", "gw"),
            ("x-forwarded-host", "evil.example, gw.example.org"),
        ]);
        assert_eq!(
            plain.prefix(&appended, None, Some(proxy)),
            "http://gw.example.org"
        );
        let rfc = headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=https;host=\"gw.example.org\"",
        )]);
        assert_eq!(
            plain.prefix(&rfc, Some("pons:8080"), Some(proxy)),
            "https://gw.example.org"
        );
        let evil = headers(&[("x-forwarded-host", "a/b@evil"), ("host", "gw:1")]);
        assert_eq!(plain.prefix(&evil, None, Some(proxy)), "http://gw:1");
        let fixed = Origins::new(
            Some("https://gw.example.org/dicom-web/"),
            "/dicom-web",
            &[],
            false,
            8080,
        );
        assert_eq!(
            fixed.prefix(&fwd, None, Some(proxy)),
            "https://gw.example.org"
        );
        let tls = Origins::new(None, "/dicom-web", &[], true, 443);
        assert_eq!(
            tls.prefix(&headers(&[("host", "gw")]), None, None),
            "https://gw"
        );
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.255.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.9".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("nonsense"), None);
    }
}
