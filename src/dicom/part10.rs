//! The head of a PS3.10 file as WADO-RS sends it in each part: 128-byte
//! preamble, "DICM", then the file meta group (0002,xxxx), always Explicit
//! VR Little Endian. A DIMSE C-STORE needs the three UIDs before the data
//! set, and must send the data set bytes only, so we find where it starts
//! without parsing it.

/// Our Implementation Class UID, written into every file meta header.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.90214102523473284214069447646047322179";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("PONS_", env!("CARGO_PKG_VERSION"));

/// Preamble, "DICM" and the file meta group for a data set kept as received
/// (from a C-STORE: its command names the UIDs, its context the syntax).
pub fn file_header(
    class: &str,
    instance: &str,
    transfer_syntax: &str,
    source_ae: &str,
) -> Result<Vec<u8>, String> {
    let meta = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(instance)
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(source_ae)
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = vec![0u8; PREAMBLE];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The UIDs of a PS3.10 file meta group that a C-STORE-RQ needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMetaInfo {
    /// Media Storage SOP Class UID (0002,0002).
    pub sop_class_uid: String,
    /// Media Storage SOP Instance UID (0002,0003).
    pub sop_instance_uid: String,
    /// Transfer Syntax UID (0002,0010): the data set's encoding.
    pub transfer_syntax_uid: String,
}

/// What the first bytes of a part tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part10Head {
    /// The data set starts at this offset.
    Complete(usize, FileMetaInfo),
    /// So far so good: give more bytes.
    NeedMore,
    /// Not a PS3.10 file, or its meta group is unusable.
    Invalid(&'static str),
}

const PREAMBLE: usize = 128;
const MAGIC_END: usize = PREAMBLE + 4;

/// Where the data set starts and the meta group's UIDs, or None if more
/// bytes are needed or the bytes are not a PS3.10 file (see
/// [`parse_part10_header`] to tell the two apart).
pub fn split_part10_header(first_bytes: &[u8]) -> Option<(usize, FileMetaInfo)> {
    match parse_part10_header(first_bytes) {
        Part10Head::Complete(at, meta) => Some((at, meta)),
        Part10Head::NeedMore | Part10Head::Invalid(_) => None,
    }
}

/// Parses the preamble and file meta group from the first bytes of a file.
///
/// The meta group ends where (0002,0000) Group Length says; when that is
/// absent or wrong (it happens), at the first element of another group.
pub fn parse_part10_header(b: &[u8]) -> Part10Head {
    if b.len() < MAGIC_END {
        // A prefix that already differs from "DICM" can be refused early.
        if b.len() > PREAMBLE && !b"DICM".starts_with(&b[PREAMBLE..]) {
            return Part10Head::Invalid("no DICM prefix");
        }
        return Part10Head::NeedMore;
    }
    if &b[PREAMBLE..MAGIC_END] != b"DICM" {
        return Part10Head::Invalid("no DICM prefix");
    }
    let mut pos = MAGIC_END;
    let mut group_end: Option<usize> = None;
    let (mut class, mut instance, mut syntax) = (None, None, None);
    loop {
        if group_end == Some(pos) {
            // Trust the group length unless the bytes at hand show that
            // group 0002 goes on (a short group length).
            let goes_on = b.len() >= pos + 2 && b[pos..pos + 2] == [0x02, 0x00];
            if !goes_on {
                break;
            }
            group_end = None;
        }
        if b.len() < pos + 4 {
            return Part10Head::NeedMore;
        }
        let group = u16::from_le_bytes([b[pos], b[pos + 1]]);
        let element = u16::from_le_bytes([b[pos + 2], b[pos + 3]]);
        if group != 0x0002 {
            if pos == MAGIC_END {
                return Part10Head::Invalid("no file meta group");
            }
            break;
        }
        if b.len() < pos + 8 {
            return Part10Head::NeedMore;
        }
        let vr = [b[pos + 4], b[pos + 5]];
        if !vr.iter().all(u8::is_ascii_uppercase) {
            return Part10Head::Invalid("file meta group is not explicit VR");
        }
        let long = crate::dicom::scan::has_long_length(&vr);
        let (len, header) = if long {
            if b.len() < pos + 12 {
                return Part10Head::NeedMore;
            }
            let len = u32::from_le_bytes([b[pos + 8], b[pos + 9], b[pos + 10], b[pos + 11]]);
            if len == u32::MAX {
                return Part10Head::Invalid("undefined length in file meta group");
            }
            (len as usize, 12)
        } else {
            (u16::from_le_bytes([b[pos + 6], b[pos + 7]]) as usize, 8)
        };
        let start = pos + header;
        let Some(end) = start.checked_add(len) else {
            return Part10Head::Invalid("element length overflows");
        };
        if b.len() < end {
            return Part10Head::NeedMore;
        }
        let value = &b[start..end];
        match element {
            0x0000 if vr == *b"UL" && len == 4 => {
                let gl = u32::from_le_bytes([value[0], value[1], value[2], value[3]]) as usize;
                group_end = end.checked_add(gl);
            }
            0x0002 => class = Some(uid(value)),
            0x0003 => instance = Some(uid(value)),
            0x0010 => syntax = Some(uid(value)),
            _ => {}
        }
        pos = end;
        // A group length that points inside an element is wrong: ignore it
        // and fall back to the group change.
        if group_end.is_some_and(|g| g < pos) {
            group_end = None;
        }
    }
    match (class, instance, syntax) {
        (Some(sop_class_uid), Some(sop_instance_uid), Some(transfer_syntax_uid))
            if !sop_class_uid.is_empty()
                && !sop_instance_uid.is_empty()
                && !transfer_syntax_uid.is_empty() =>
        {
            Part10Head::Complete(
                pos,
                FileMetaInfo {
                    sop_class_uid,
                    sop_instance_uid,
                    transfer_syntax_uid,
                },
            )
        }
        _ => Part10Head::Invalid(
            "file meta group lacks a SOP class, SOP instance or transfer syntax UID",
        ),
    }
}

/// UI values are padded with NUL to an even length; some writers pad with spaces.
fn uid(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_end_matches(['\0', ' '])
        .trim_start()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(out: &mut Vec<u8>, elem: u16, vr: &[u8; 2], value: &[u8]) {
        out.extend_from_slice(&0x0002u16.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OB" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
    }

    /// A PS3.10 head; `group_length` None leaves (0002,0000) out, Some(d)
    /// writes the true length plus d.
    fn head(group_length: Option<i64>) -> (Vec<u8>, usize) {
        let mut meta = Vec::new();
        element(&mut meta, 0x0001, b"OB", &[0, 1]);
        element(&mut meta, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0");
        element(&mut meta, 0x0003, b"UI", b"1.2.3.4\0");
        element(&mut meta, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0");
        element(&mut meta, 0x0012, b"UI", b"1.2.3\0");
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        if let Some(d) = group_length {
            let gl = (meta.len() as i64 + d) as u32;
            element(&mut out, 0x0000, b"UL", &gl.to_le_bytes());
        }
        out.extend_from_slice(&meta);
        let at = out.len();
        // Data set: (0008,0005) CS "ISO_IR 100", explicit VR LE.
        out.extend_from_slice(&[0x08, 0, 0x05, 0, b'C', b'S', 10, 0]);
        out.extend_from_slice(b"ISO_IR 100");
        (out, at)
    }

    fn expected() -> FileMetaInfo {
        FileMetaInfo {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: "1.2.3.4".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        }
    }

    #[test]
    fn finds_the_data_set_with_and_without_group_length() {
        for gl in [Some(0), None] {
            let (bytes, at) = head(gl);
            assert_eq!(
                split_part10_header(&bytes),
                Some((at, expected())),
                "{gl:?}"
            );
        }
    }

    #[test]
    fn group_length_alone_ends_the_group() {
        // With a right group length, the data set's first bytes are not needed.
        let (bytes, at) = head(Some(0));
        assert_eq!(split_part10_header(&bytes[..at]), Some((at, expected())));
        // Without it, we must see the next tag.
        let (bytes, at) = head(None);
        assert_eq!(parse_part10_header(&bytes[..at]), Part10Head::NeedMore);
        assert!(split_part10_header(&bytes[..at + 4]).is_some());
    }

    #[test]
    fn wrong_group_length_falls_back_to_group_change() {
        for d in [-3, -14, 7] {
            let (bytes, at) = head(Some(d));
            assert_eq!(split_part10_header(&bytes), Some((at, expected())), "{d}");
        }
    }

    #[test]
    fn every_prefix_needs_more() {
        let (bytes, at) = head(None);
        for n in 0..at + 4 {
            assert_eq!(
                parse_part10_header(&bytes[..n]),
                Part10Head::NeedMore,
                "{n}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_part10() {
        assert!(matches!(
            parse_part10_header(&[0u8; 200]),
            Part10Head::Invalid(_)
        ));
        let mut not_dicm = vec![0u8; 129];
        not_dicm[128] = b'X';
        assert!(matches!(
            parse_part10_header(&not_dicm),
            Part10Head::Invalid(_)
        ));
        // "DICM" followed directly by a data set.
        let mut no_meta = vec![0u8; 128];
        no_meta.extend_from_slice(b"DICM\x08\x00\x05\x00CS\x00\x00");
        assert!(matches!(
            parse_part10_header(&no_meta),
            Part10Head::Invalid(_)
        ));
        // Meta group without a transfer syntax.
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        element(&mut out, 0x0002, b"UI", b"1.2\0");
        element(&mut out, 0x0003, b"UI", b"1.3\0");
        out.extend_from_slice(&[0x08, 0, 0x05, 0]);
        assert!(matches!(parse_part10_header(&out), Part10Head::Invalid(_)));
    }

    #[test]
    fn garbage_never_panics() {
        // Huge and undefined lengths, non-ASCII VRs, truncated everything.
        let mut seed = 0x2545F491u32;
        for _ in 0..2000 {
            let (mut bytes, _) = head(Some(0));
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let i = 128 + (seed as usize % (bytes.len() - 128));
                bytes[i] = (seed >> 8) as u8;
            }
            let cut = seed as usize % (bytes.len() + 1);
            let _ = parse_part10_header(&bytes[..cut]);
        }
        let mut long = vec![0u8; 128];
        long.extend_from_slice(b"DICM");
        long.extend_from_slice(&[2, 0, 1, 0, b'O', b'B', 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(parse_part10_header(&long), Part10Head::Invalid(_)));
        long.truncate(132);
        long.extend_from_slice(&[2, 0, 1, 0, b'O', b'B', 0, 0, 0xfe, 0xff, 0xff, 0xff]);
        assert_eq!(parse_part10_header(&long), Part10Head::NeedMore);
    }
}
