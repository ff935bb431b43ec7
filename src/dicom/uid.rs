//! UIDs (PS3.5 9.1) as peers send them: padded, and not always valid.

/// Digits and dots, no empty component, at most 64 characters: safe as a
/// file name and in a URL path. PS3.5 forbids leading zeros in a component,
/// but archives in the field hold such UIDs; refusing them would make those
/// studies unreachable, so they pass.
pub fn is_valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

/// A UID (or any short text value) without its padding: the NUL or space
/// that makes a value even-length, and the blanks sloppy peers add.
pub fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_uids() {
        for good in ["1.2.840.10008.1.2.1", "1.0.3", "1.02", "2.25.1"] {
            assert!(is_valid(good), "{good}");
        }
        let long = "1.".repeat(40);
        for bad in ["", "1..2", ".1", "1.", "1.2.abc", "1.2,1.3", "1.2.*", &long] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn trims_padding() {
        assert_eq!(trim("1.2.3\0"), "1.2.3");
        assert_eq!(trim(" 1.2.3 \0"), "1.2.3");
        assert_eq!(trim("AE_TITLE  "), "AE_TITLE");
    }
}
