//! Jobs as a plain-text table for `pons jobs`.

use super::Job;

const ERROR_WIDTH: usize = 60;

/// One line per job under a header, columns padded to their widest cell.
pub fn table(jobs: &[Job]) -> String {
    let header = [
        "ID",
        "KIND",
        "STATE",
        "ATTEMPTS",
        "UPDATED (UTC)",
        "NODE",
        "OWNER",
        "KEY",
        "ERROR",
    ];
    let rows: Vec<[String; 9]> = jobs
        .iter()
        .map(|j| {
            [
                j.id.to_string(),
                j.kind.clone(),
                j.state.as_str().to_owned(),
                j.attempts.to_string(),
                utc(j.updated_at),
                j.node.clone().unwrap_or_else(|| "-".into()),
                j.owner.clone().unwrap_or_else(|| "-".into()),
                j.key.clone().unwrap_or_else(|| "-".into()),
                j.last_error
                    .as_deref()
                    .map_or_else(|| "-".into(), |e| clip(&e.replace('\n', " "))),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

fn clip(s: &str) -> String {
    if s.chars().count() <= ERROR_WIDTH {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(ERROR_WIDTH - 1).collect();
        c.push('…');
        c
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobState;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20");
    }

    #[test]
    fn table_columns_line_up() {
        let job = |id, state, err: Option<&str>| Job {
            id,
            kind: "stow".into(),
            state,
            payload: serde_json::Value::Null,
            attempts: 3,
            last_error: err.map(str::to_owned),
            key: None,
            node: Some("gw1:/var/lib/pons/spool".into()),
            owner: None,
            lease_until: None,
            created_at: 0,
            updated_at: 1_700_000_000_000,
            next_attempt_at: 0,
        };
        let long = "x".repeat(100);
        let t = table(&[
            job(12, JobState::Failed, Some("upstream said\nno")),
            job(7, JobState::Done, Some(&long)),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  KIND  STATE   ATTEMPTS  UPDATED (UTC)"));
        assert!(lines[1].starts_with("12  stow  failed  3         2023-11-14 22:13:20  gw1:"));
        assert!(
            lines[1].ends_with("-      -    upstream said no"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("7   stow  done"));
        assert!(lines[2].ends_with(&format!("{}…", "x".repeat(59))));
        let error_col = lines[0].find("ERROR").unwrap();
        assert_eq!(lines[1].find("upstream").unwrap(), error_col);
    }
}
