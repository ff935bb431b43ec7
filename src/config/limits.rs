//! `[web.limits]`: what one HTTP client may hold of Pons.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebLimits {
    /// Open connections at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Request line and headers together (431 beyond).
    pub max_header_bytes: usize,
    /// Header fields in one request (431 beyond).
    pub max_headers: usize,
    /// Time to send the request line and headers; also how long a
    /// kept-alive connection may wait idle for its next request.
    pub header_timeout_secs: u64,
    /// Longest pause within a request body before the request fails.
    pub body_idle_secs: u64,
    /// STOW-RS body size in MiB (413 beyond).
    pub stow_max_mb: u64,
    /// STOW-RS parts (instances) in one request (413 beyond).
    pub stow_max_parts: usize,
    /// JSON request bodies (storage commitment requests) in KiB (413 beyond).
    pub json_max_kb: usize,
}

impl Default for WebLimits {
    fn default() -> Self {
        WebLimits {
            max_connections: 512,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_timeout_secs: 30,
            body_idle_secs: 60,
            stow_max_mb: 4096,
            stow_max_parts: 10_000,
            json_max_kb: 16 * 1024,
        }
    }
}

impl WebLimits {
    pub fn validate(&self, p: &mut Vec<String>) {
        let at_least_one = [
            ("max_connections", self.max_connections as u64),
            ("max_headers", self.max_headers as u64),
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_idle_secs", self.body_idle_secs),
            ("stow_max_mb", self.stow_max_mb),
            ("stow_max_parts", self.stow_max_parts as u64),
            ("json_max_kb", self.json_max_kb as u64),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                p.push(format!("web.limits.{key} must be at least 1"));
            }
        }
        // hyper's smallest read buffer.
        if self.max_header_bytes < 8192 {
            p.push(format!(
                "web.limits.max_header_bytes is {}; it must be at least 8192",
                self.max_header_bytes
            ));
        }
    }
}
