//! `Config::validate`: every problem with a configuration, collected at once
//! so that `pons check-config` can print them all.

use super::*;

impl Config {
    /// Every problem with this configuration, empty when it is usable.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        check_ae_title("dimse.ae_title", &self.dimse.ae_title, &mut p);
        if self.dimse.commitment_report_deadline_secs == 0 {
            p.push("dimse.commitment_report_deadline_secs must be at least 1".into());
        }
        if self.dimse.max_sub_operations == 0 {
            p.push("dimse.max_sub_operations must be at least 1".into());
        }
        self.web.limits.validate(&mut p);
        self.web
            .auth
            .validate(self.web.listen, self.web.tls.is_some(), &mut p);
        if let Some(t) = &self.web.tls {
            t.validate("web.tls", &mut p);
        }
        if let Some(url) = &self.web.public_url {
            let path = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .and_then(|rest| rest.find('/').map(|i| rest[i..].trim_end_matches('/')));
            if !path.is_some_and(|p| p.ends_with(&self.web.base_path)) {
                p.push(format!(
                    "web.public_url {url:?} must be an http(s) URL ending with web.base_path, e.g. https://gw.example.org{}",
                    self.web.base_path
                ));
            }
        }
        for proxy in &self.web.trusted_proxies {
            if crate::web::origin::Cidr::parse(proxy).is_none() {
                p.push(format!(
                    "web.trusted_proxies: {proxy:?} is not an address or CIDR (e.g. 10.0.0.0/8)"
                ));
            }
        }
        if let Some(t) = &self.dimse.tls {
            t.server().validate("dimse.tls", &mut p);
            if t.listen == self.dimse.listen {
                p.push("dimse.tls.listen must differ from dimse.listen".into());
            }
        }
        if self.dimse.max_associations == 0 {
            p.push("dimse.max_associations must be at least 1".into());
        }
        if !(4096..=16_777_216).contains(&self.dimse.max_pdu) {
            p.push(format!(
                "dimse.max_pdu is {}; it must be between 4096 and 16777216",
                self.dimse.max_pdu
            ));
        }
        if !self.web.base_path.starts_with('/') || self.web.base_path.ends_with('/') {
            p.push(format!(
                "web.base_path {:?} must start with '/' and not end with '/'",
                self.web.base_path
            ));
        }
        if self.upstream.is_empty() && self.pacs.is_empty() {
            p.push(
                "neither [upstream] (direction A) nor [[pacs]] (direction B) is configured".into(),
            );
        }
        for u in &self.upstream {
            self.validate_upstream(u, &mut p);
        }
        self.validate_routes(&mut p);
        let url = &self.jobs.url;
        if url != "memory" && !url.starts_with("sqlite://") && !crate::jobs::is_postgres_url(url) {
            p.push(format!(
                "jobs.url {:?} must be \"memory\", sqlite:///path or postgres://user@host/db",
                crate::jobs::redact(url)
            ));
        }
        if self.spool.mode == SpoolMode::Spool && url == "memory" {
            p.push("spool.mode = \"spool\" needs a durable job table: jobs.url must be sqlite:// or postgres:// (\"memory\" would lose acknowledged instances on restart)".into());
        }
        if self
            .jobs
            .node
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            p.push("jobs.node must not be empty (leave it out for hostname + spool dir)".into());
        }
        if self.web.commitment_deadline_secs == 0 || self.web.commitment_retention_secs == 0 {
            p.push(
                "web.commitment_deadline_secs and web.commitment_retention_secs must be at least 1"
                    .into(),
            );
        }
        if self.web.commitment_retention_secs > self.jobs.retention_days.saturating_mul(86_400) {
            p.push(format!(
                "web.commitment_retention_secs ({}) is longer than jobs.retention_days ({} days): results would be purged before they expire",
                self.web.commitment_retention_secs, self.jobs.retention_days
            ));
        }
        if self.jobs.retention_days == 0 {
            p.push("jobs.retention_days must be at least 1 (commitment results are read from finished jobs)".into());
        }
        if self.jobs.lease_secs < 3 {
            p.push(
                "jobs.lease_secs must be at least 3: the lease is renewed every third of it".into(),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, ae) in self.ae.iter().enumerate() {
            check_ae_title(&format!("ae[{i}].title"), &ae.title, &mut p);
            if !seen.insert(ae.title.trim()) {
                p.push(format!("ae[{i}].title {:?} is listed twice", ae.title));
            }
            if ae.host.is_empty() {
                p.push(format!("ae[{i}].host is empty"));
            }
            if let Some(tls) = ae.client_tls() {
                self.check_client_tls(&format!("ae[{i}]"), &tls, &mut p);
            }
            if ae.certificate_name.is_some()
                && self
                    .dimse
                    .tls
                    .as_ref()
                    .is_none_or(|t| t.client_ca.is_none())
            {
                p.push(format!("ae[{i}].certificate_name needs [dimse.tls] client_ca: only a verified client certificate can be checked"));
            }
            for dest in ae.move_destinations.iter().flatten() {
                if find_ae(&self.ae, dest).is_none() {
                    p.push(format!(
                        "ae[{i}].move_destinations names {dest:?}, which is not an [[ae]] title"
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, pacs) in self.pacs.iter().enumerate() {
            check_ae_title(&format!("pacs[{i}].ae_title"), &pacs.ae_title, &mut p);
            let url_safe = pacs
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if pacs.name.is_empty() || !url_safe {
                p.push(format!(
                    "pacs[{i}].name {:?} must be non-empty letters, digits, '-' or '_' (it is part of URLs)",
                    pacs.name
                ));
            }
            if pacs.max_associations == 0 {
                p.push(format!("pacs[{i}].max_associations must be at least 1"));
            }
            if !names.insert(pacs.name.as_str()) {
                p.push(format!("pacs[{i}].name {:?} is listed twice", pacs.name));
            }
            if pacs.host.is_empty() {
                p.push(format!("pacs[{i}].host is empty"));
            }
            if pacs.timeout_secs == 0 {
                p.push(format!("pacs[{i}].timeout_secs must be at least 1"));
            }
            if let Some(tls) = pacs.client_tls() {
                self.check_client_tls(&format!("pacs[{i}]"), &tls, &mut p);
            }
        }
        if !self.pacs.is_empty() && self.cache.max_mb == 0 {
            p.push(
                "cache.max_mb must be at least 1 (direction B retrieves through the cache)".into(),
            );
        }
        p
    }

    fn check_client_tls(&self, key: &str, tls: &ClientTls, p: &mut Vec<String>) {
        if tls.ca.is_none() {
            p.push(format!(
                "{key}.tls needs ca: the CA certificates the peer's certificate must chain to"
            ));
        }
        tls.validate(key, p);
    }
}

fn check_ae_title(key: &str, title: &str, problems: &mut Vec<String>) {
    let t = title.trim();
    if t.is_empty()
        || t.len() > 16
        || !t
            .chars()
            .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\')
    {
        problems.push(format!(
            "{key} {title:?} is not a valid AE title (1-16 printable ASCII characters, no backslash)"
        ));
    }
}

impl Config {
    fn validate_upstream(&self, u: &UpstreamConfig, p: &mut Vec<String>) {
        let at = if self.upstream.len() == 1 {
            "upstream.".to_owned()
        } else {
            format!("upstream {:?}: ", u.name)
        };
        if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
            p.push(format!(
                "{at}url {:?} must start with http:// or https://",
                u.url
            ));
        }
        if u.stow_batch == 0 {
            p.push(format!("{at}stow_batch must be at least 1"));
        }
        if u.max_connections == 0 {
            p.push(format!("{at}max_connections must be at least 1"));
        }
        if u.qido_page_size == 0 {
            p.push(format!("{at}qido_page_size must be at least 1"));
        }
        if u.stow_concurrency == 0 {
            p.push(format!("{at}stow_concurrency must be at least 1"));
        }
        if let Some(tls) = u.client_tls() {
            tls.validate("upstream", p);
        }
        let auth_ok = match &u.auth {
            Some(AuthConfig::Bearer { token, token_file }) => {
                token.is_some() != token_file.is_some()
            }
            Some(AuthConfig::Basic {
                password,
                password_file,
                ..
            }) => password.is_some() != password_file.is_some(),
            Some(AuthConfig::Oauth2 { token_url, .. }) => auth::secure_or_loopback(token_url),
            Some(AuthConfig::Google { .. }) | None => true,
        };
        if !auth_ok {
            p.push(format!("{at}auth needs exactly one of token/token_file (bearer) or password/password_file (basic), or an https:// token_url (oauth2; http:// only to this host: the client secret travels in it)"));
        }
    }

    /// Upstream names are unique and fit a directory name; every route names
    /// one; every called AE has a route for its queries; every upstream is used.
    fn validate_routes(&self, p: &mut Vec<String>) {
        let names: Vec<&str> = self.upstream.iter().map(|u| u.name.as_str()).collect();
        for (i, name) in names.iter().enumerate() {
            let ok = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                p.push(format!(
                    "upstream name {name:?} must be 1-32 letters, digits, '-' or '_'"
                ));
            }
            if names[..i].contains(name) {
                p.push(format!("upstream name {name:?} is used twice"));
            }
        }
        if self.upstream.len() > 1 && self.route.is_empty() {
            p.push("several [[upstream]] need [[route]] entries saying which called AE title goes where".into());
        }
        for r in &self.route {
            let title = r.called_ae.trim();
            if title.is_empty() || title.len() > 16 {
                p.push(format!(
                    "route called_ae {:?} must be 1-16 characters",
                    r.called_ae
                ));
            }
            if !names.contains(&r.upstream.as_str()) {
                p.push(format!(
                    "route for {title} names upstream {:?}, which no [[upstream]] has",
                    r.upstream
                ));
            }
            let answered = self
                .route
                .iter()
                .any(|o| o.called_ae.trim() == title && !o.is_conditional());
            if !answered {
                p.push(format!(
                    "called AE {title} needs one [[route]] without calling_ae/modality/sop_class: it answers its C-FIND, C-MOVE, C-GET and worklist queries"
                ));
            }
        }
        for name in &names {
            if !self.route.is_empty() && !self.route.iter().any(|r| r.upstream == *name) {
                p.push(format!("upstream {name:?} is used by no [[route]]"));
            }
        }
    }
}
