//! Attribute matching as an SCP does it (PS3.4 C.2.2.2), for results an
//! origin may have matched only roughly: single values with `*` and `?`,
//! lists of UIDs, and date, time and datetime ranges.

use dicom_core::VR;

/// DICOM wildcard matching: `*` any run, `?` any one character.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Does `value` (its values separated by `\`) match the key `pattern`?
/// An empty pattern matches everything (universal matching).
pub fn matches(vr: VR, pattern: &str, value: &str) -> bool {
    let pattern = pattern.trim();
    if pattern.is_empty() || pattern == "*" {
        return true;
    }
    let mut values = value.split('\\').map(str::trim);
    match vr {
        VR::DA | VR::TM | VR::DT => values.any(|v| in_range(vr, pattern, v)),
        VR::UI => {
            let wanted: Vec<&str> = pattern.split('\\').map(str::trim).collect();
            values.any(|v| wanted.contains(&v.trim_end_matches('\0')))
        }
        VR::PN => values.any(|v| name_matches(pattern, v)),
        _ => values.any(|v| wildcard_match(pattern, v)),
    }
}

/// Person names ignoring case. A name has up to three component groups
/// (alphabetic=ideographic=phonetic): a key with groups is compared group by
/// group (empty groups match anything), one without matches any group.
fn name_matches(pattern: &str, value: &str) -> bool {
    let pattern = pattern.to_lowercase();
    let value = value.to_lowercase();
    let groups: Vec<&str> = value.split('=').collect();
    if pattern.contains('=') {
        pattern
            .split('=')
            .enumerate()
            .all(|(i, p)| p.is_empty() || wildcard_match(p, groups.get(i).copied().unwrap_or("")))
    } else {
        groups.iter().any(|g| wildcard_match(&pattern, g))
    }
}

/// The two bounds of a DA, TM or DT range (`A-B`, `A-`, `-B`), or `None`
/// for a single value. In a DT a `-` may also start a time zone offset
/// (`20261203080000-0500`): such a `-` follows a time of day and is
/// followed by four digits.
pub fn split_range(vr: VR, value: &str) -> Option<(&str, &str)> {
    if vr != VR::DT {
        return value.split_once('-');
    }
    let bytes = value.as_bytes();
    let is_offset = |i: usize| {
        let before = value[..i]
            .rsplit('-')
            .next()
            .map_or(0, |s| s.bytes().take_while(u8::is_ascii_digit).count());
        let after = &bytes[i + 1..];
        before >= 10
            && after.len() >= 4
            && after[..4].iter().all(u8::is_ascii_digit)
            && (after.len() == 4 || after[4] == b'-')
    };
    let at = (0..bytes.len()).find(|&i| bytes[i] == b'-' && !is_offset(i))?;
    Some((&value[..at], &value[at + 1..]))
}

/// Range matching for DA, TM and DT: `A-B`, `A-`, `-B` or a single value,
/// which matches everything it is a prefix of (`0900` matches 09:00:30).
fn in_range(vr: VR, pattern: &str, value: &str) -> bool {
    let value = digits(vr, value);
    if value.is_empty() {
        return false;
    }
    let (low, high) = split_range(vr, pattern).unwrap_or((pattern, pattern));
    let width = value
        .len()
        .max(digits(vr, low).len())
        .max(digits(vr, high).len());
    let pad = |s: &str, fill: char| {
        let mut d = digits(vr, s);
        while d.len() < width {
            d.push(fill);
        }
        d
    };
    let value = pad(&value, '0');
    (low.trim().is_empty() || pad(low, '0') <= value)
        && (high.trim().is_empty() || value <= pad(high, '9'))
}

/// The digits of a DA/TM/DT value in order, without separators, fraction
/// or time zone (`10:30` and `1030` compare alike).
fn digits(vr: VR, value: &str) -> String {
    let value = value.trim();
    let value = match vr {
        // A DT time zone offset (+hhmm / -hhmm after the time) is not compared.
        VR::DT => value.split(['+', '-']).next().unwrap_or(value),
        _ => value,
    };
    let value = value.split('.').next().unwrap_or(value);
    value.chars().filter(|c| c.is_ascii_digit()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(!wildcard_match("a?c", "abcd"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn single_values_lists_and_names() {
        assert!(matches(VR::CS, "CT", "CT"));
        assert!(!matches(VR::CS, "CT", "MR"));
        assert!(matches(VR::CS, "MR", "CT\\MR"));
        assert!(matches(VR::CS, "", "anything"));
        assert!(matches(VR::PN, "doe^*", "DOE^JANE"));
        assert!(matches(VR::PN, "YAMADA^TAROU", "Yamada^Tarou=山田^太郎"));
        assert!(matches(VR::PN, "山田*", "Yamada^Tarou=山田^太郎"));
        assert!(matches(VR::PN, "=山田^太郎", "Yamada^Tarou=山田^太郎"));
        assert!(!matches(VR::PN, "Tanaka*=山田*", "Yamada^Tarou=山田^太郎"));
        assert!(!matches(VR::LO, "doe*", "DOE"));
        assert!(matches(VR::UI, "1.2\\1.3", "1.3"));
        assert!(!matches(VR::UI, "1.2", "1.2.3"));
    }

    #[test]
    fn ranges() {
        assert!(matches(VR::DA, "20261203-20261205", "20261205"));
        assert!(!matches(VR::DA, "20261203-20261205", "20261206"));
        assert!(matches(VR::DA, "20261204-", "20261206"));
        assert!(matches(VR::DA, "-20261204", "20261201"));
        assert!(matches(VR::DA, "20261203", "20261203"));
        assert!(!matches(VR::DA, "20261203", ""));
        assert!(matches(VR::TM, "0800-1000", "0900"));
        assert!(matches(VR::TM, "0800-1000", "100059"));
        assert!(!matches(VR::TM, "0800-1000", "1001"));
        assert!(matches(VR::TM, "09:00", "090030.5"));
        assert!(matches(
            VR::DT,
            "20261203080000-20261203100000",
            "20261203090000"
        ));
        assert!(!matches(
            VR::DT,
            "20261203080000-20261203100000",
            "20261204"
        ));
        assert!(matches(VR::DT, "20261203-20261204", "20261204235959+0100"));
        let zoned = "20261203080000-0500-20261203170000-0500";
        assert_eq!(
            split_range(VR::DT, zoned),
            Some(("20261203080000-0500", "20261203170000-0500"))
        );
        assert!(matches(VR::DT, zoned, "20261203120000-0500"));
        assert!(!matches(VR::DT, zoned, "20261203180000-0500"));
        assert_eq!(split_range(VR::DT, "2026-2027"), Some(("2026", "2027")));
        assert_eq!(split_range(VR::DT, "20261203080000-0500"), None);
    }
}
