//! An incremental structural check of a data set as its bytes stream past.
//!
//! It walks element headers and skips values, so it costs almost nothing and
//! holds no data: at the end it knows whether the data set ended on an element
//! boundary (not truncated, no open sequence) and what its SOP Class, SOP
//! Instance, Study and Series Instance UIDs are, without a second pass over a
//! file that may be gigabytes.

use dicom_dictionary_std::uids;

const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIMITER: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_DELIMITER: (u16, u16) = (0xFFFE, 0xE0DD);
const SOP_CLASS_UID: (u16, u16) = (0x0008, 0x0016);
const SOP_INSTANCE_UID: (u16, u16) = (0x0008, 0x0018);
const STUDY_INSTANCE_UID: (u16, u16) = (0x0020, 0x000D);
const SERIES_INSTANCE_UID: (u16, u16) = (0x0020, 0x000E);
const MODALITY: (u16, u16) = (0x0008, 0x0060);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
const UNDEFINED: u32 = 0xFFFF_FFFF;
/// UIDs are at most 64 bytes; anything longer is not worth capturing.
const MAX_CAPTURE: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Inside an undefined-length sequence (or encapsulated pixel data): items follow.
    Sequence { explicit: bool },
    /// Inside an undefined-length item: elements follow until the item delimiter.
    Item { explicit: bool },
}

/// What the scan found once the data set is complete.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanResult {
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub study_instance_uid: Option<String>,
    pub series_instance_uid: Option<String>,
    /// For routing by modality.
    pub modality: Option<String>,
    /// The VR of top-level Pixel Data, once its header went past (OW in
    /// Implicit VR, where the stream names none).
    pub pixel_data_vr: Option<[u8; 2]>,
}

pub struct DatasetScanner {
    explicit: bool,
    big_endian: bool,
    inflater: Option<flate2::Decompress>,
    /// Inflated bytes of the current chunk (deflated data sets only).
    inflated: Vec<u8>,
    stack: Vec<Frame>,
    header: [u8; 12],
    header_len: usize,
    skip: u64,
    capture: Option<((u16, u16), Vec<u8>)>,
    /// The last top-level element whose header was read.
    last_top_level: (u16, u16),
    result: ScanResult,
    error: Option<String>,
}

impl DatasetScanner {
    /// A scanner for a data set in the given transfer syntax; `None` when the
    /// transfer syntax is unknown (then nothing can be checked).
    pub fn new(transfer_syntax_uid: &str) -> Option<DatasetScanner> {
        #[allow(deprecated)]
        let (explicit, big_endian, deflated) = match super::uid::trim(transfer_syntax_uid) {
            uids::IMPLICIT_VR_LITTLE_ENDIAN => (false, false, false),
            uids::EXPLICIT_VR_BIG_ENDIAN => (true, true, false),
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => (true, false, true),
            // Every other standard transfer syntax (compressed ones included)
            // encodes the data set as Explicit VR Little Endian.
            ts if ts.starts_with("1.2.840.10008.1.2.") => (true, false, false),
            _ => return None,
        };
        Some(DatasetScanner {
            explicit,
            big_endian,
            inflater: deflated.then(|| flate2::Decompress::new(false)),
            inflated: if deflated {
                vec![0; 64 * 1024]
            } else {
                Vec::new()
            },
            stack: Vec::new(),
            header: [0; 12],
            header_len: 0,
            skip: 0,
            capture: None,
            last_top_level: (0, 0),
            result: ScanResult::default(),
            error: None,
        })
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        match self.inflater.take() {
            None => self.walk(data),
            Some(mut inflater) => {
                let mut input = data;
                let mut out = std::mem::take(&mut self.inflated);
                while !input.is_empty() && self.error.is_none() {
                    let before_in = inflater.total_in();
                    let before_out = inflater.total_out();
                    if let Err(e) =
                        inflater.decompress(input, &mut out, flate2::FlushDecompress::None)
                    {
                        self.error = Some(format!("deflated data set cannot be inflated: {e}"));
                        break;
                    }
                    let consumed = (inflater.total_in() - before_in) as usize;
                    let produced = (inflater.total_out() - before_out) as usize;
                    self.walk(&out[..produced]);
                    input = &input[consumed..];
                    if consumed == 0 && produced == 0 {
                        break; // end of the deflate stream; trailing bytes are ignored
                    }
                }
                self.inflater = Some(inflater);
                self.inflated = out;
            }
        }
    }

    /// True once the scan has read past the Series Instance UID: the UIDs
    /// in [`DatasetScanner::uids`] are then final (an absent one is absent).
    pub fn uids_known(&self) -> bool {
        self.last_top_level > SERIES_INSTANCE_UID
    }

    /// What is wrong with the data set, as soon as it shows.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The UIDs found so far.
    pub fn uids(&self) -> &ScanResult {
        &self.result
    }

    /// The verdict once the last byte has been fed.
    pub fn finish(self) -> Result<ScanResult, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.skip > 0 || self.header_len > 0 {
            return Err("data set is truncated: it ends inside an element".into());
        }
        if !self.stack.is_empty() {
            return Err(
                "data set is truncated: it ends inside an undefined-length sequence".into(),
            );
        }
        Ok(self.result)
    }

    fn explicit_here(&self) -> bool {
        match self.stack.last() {
            Some(Frame::Sequence { explicit } | Frame::Item { explicit }) => *explicit,
            None => self.explicit,
        }
    }

    fn u16_at(&self, i: usize) -> u16 {
        let b = [self.header[i], self.header[i + 1]];
        if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, i: usize) -> u32 {
        let b = [
            self.header[i],
            self.header[i + 1],
            self.header[i + 2],
            self.header[i + 3],
        ];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn walk(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.error.is_none() {
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                if let Some((_, buf)) = &mut self.capture {
                    buf.extend_from_slice(&data[..n]);
                }
                self.skip -= n as u64;
                data = &data[n..];
                if self.skip == 0 {
                    self.end_capture();
                }
                continue;
            }
            let need = self.header_need();
            let n = (need - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == self.header_need() {
                self.header_len = 0;
                self.on_header();
            }
        }
    }

    /// Bytes of header needed in the current state, given what is buffered.
    fn header_need(&self) -> usize {
        let in_elements = !matches!(self.stack.last(), Some(Frame::Sequence { .. }));
        if self.header_len < 8 || !in_elements || !self.explicit_here() {
            return 8;
        }
        let tag = (self.u16_at(0), self.u16_at(2));
        if tag.0 == 0xFFFE {
            return 8;
        }
        if has_long_length(&self.header[4..6]) {
            12
        } else {
            8
        }
    }

    fn on_header(&mut self) {
        let tag = (self.u16_at(0), self.u16_at(2));
        match self.stack.last().copied() {
            Some(Frame::Sequence { explicit }) => {
                let len = self.u32_at(4);
                match tag {
                    ITEM if len == UNDEFINED => self.stack.push(Frame::Item { explicit }),
                    ITEM => self.skip = len as u64,
                    SEQUENCE_DELIMITER => {
                        self.stack.pop();
                    }
                    _ => {
                        self.error = Some(format!(
                        "malformed sequence: element ({:04X},{:04X}) where an item was expected",
                        tag.0, tag.1
                    ))
                    }
                }
            }
            frame => {
                if tag == ITEM_DELIMITER && matches!(frame, Some(Frame::Item { .. })) {
                    self.stack.pop();
                    return;
                }
                if tag.0 == 0xFFFE {
                    self.error = Some(format!(
                        "malformed data set: delimiter ({:04X},{:04X}) out of place",
                        tag.0, tag.1
                    ));
                    return;
                }
                if self.stack.is_empty() {
                    self.last_top_level = tag;
                }
                let explicit = self.explicit_here();
                let (vr, len) = if explicit {
                    let vr = [self.header[4], self.header[5]];
                    if !vr.iter().all(|b| b.is_ascii_uppercase()) {
                        self.error = Some(format!(
                            "malformed data set: element ({:04X},{:04X}) has no valid VR",
                            tag.0, tag.1
                        ));
                        return;
                    }
                    let len = if has_long_length(&vr) {
                        self.u32_at(8)
                    } else {
                        self.u16_at(6) as u32
                    };
                    (Some(vr), len)
                } else {
                    (None, self.u32_at(4))
                };
                if self.stack.is_empty() && tag == PIXEL_DATA {
                    self.result.pixel_data_vr = Some(vr.unwrap_or(*b"OW"));
                }
                if len == UNDEFINED {
                    // An undefined-length UN holds a sequence in Implicit VR LE (PS3.5 §6.2.2).
                    let inner_explicit = explicit && vr != Some(*b"UN");
                    self.stack.push(Frame::Sequence {
                        explicit: inner_explicit,
                    });
                    return;
                }
                if self.stack.is_empty()
                    && matches!(
                        tag,
                        SOP_CLASS_UID
                            | SOP_INSTANCE_UID
                            | STUDY_INSTANCE_UID
                            | SERIES_INSTANCE_UID
                            | MODALITY
                    )
                    && len <= MAX_CAPTURE
                {
                    self.capture = Some((tag, Vec::with_capacity(len as usize)));
                    if len == 0 {
                        self.end_capture();
                    }
                }
                self.skip = len as u64;
            }
        }
    }

    fn end_capture(&mut self) {
        if let Some((tag, bytes)) = self.capture.take() {
            let value = String::from_utf8_lossy(&bytes)
                .trim_end_matches(['\0', ' '])
                .to_owned();
            let slot = match tag {
                SOP_CLASS_UID => &mut self.result.sop_class_uid,
                SOP_INSTANCE_UID => &mut self.result.sop_instance_uid,
                STUDY_INSTANCE_UID => &mut self.result.study_instance_uid,
                MODALITY => &mut self.result.modality,
                _ => &mut self.result.series_instance_uid,
            };
            *slot = Some(value);
        }
    }
}

/// PS3.5 7.1.2: these VRs have 2 reserved bytes and a 32-bit length.
pub(crate) fn has_long_length(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"SV"
            | b"UV"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::{DataSetSequence, PixelFragmentSequence};
    use dicom_core::{DataElement, Length, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

    fn sample(encapsulated: bool) -> InMemDicomObject {
        let mut item = InMemDicomObject::new_empty();
        item.put(DataElement::new(
            tags::CODE_VALUE,
            VR::SH,
            PrimitiveValue::from("123"),
        ));
        let mut obj = InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7"),
            ),
            DataElement::new(
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3.4.5"),
            ),
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("P1")),
            DataElement::new(
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3"),
            ),
            DataElement::new(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3.4"),
            ),
            DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from("7")),
        ]);
        obj.put(DataElement::new(
            tags::PROCEDURE_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::new(vec![item], Length::UNDEFINED),
        ));
        if encapsulated {
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new(vec![], vec![vec![1u8; 100], vec![2u8; 50]]),
            ));
        } else {
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(vec![7u16; 500].into()),
            ));
        }
        obj
    }

    fn encode(obj: &InMemDicomObject, ts: &str) -> Vec<u8> {
        // dicom-object writes "deflated" data sets uncompressed: deflate here.
        let deflate = ts == uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
        let write_ts = if deflate {
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        } else {
            ts
        };
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, TransferSyntaxRegistry.get(write_ts).unwrap())
            .unwrap();
        if deflate {
            use std::io::Write;
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&out).unwrap();
            out = e.finish().unwrap();
        }
        out
    }

    fn scan_in_chunks(bytes: &[u8], ts: &str, chunk: usize) -> Result<ScanResult, String> {
        let mut s = DatasetScanner::new(ts).unwrap();
        for c in bytes.chunks(chunk) {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    #[allow(deprecated)]
    fn finds_uids_in_every_encoding_and_chunking() {
        for (ts, encapsulated) in [
            (uids::IMPLICIT_VR_LITTLE_ENDIAN, false),
            (uids::EXPLICIT_VR_LITTLE_ENDIAN, false),
            (uids::EXPLICIT_VR_BIG_ENDIAN, false),
            (uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, false),
            (uids::JPEG_BASELINE8_BIT, true),
        ] {
            let bytes = encode(&sample(encapsulated), ts);
            for chunk in [1, 3, 7, 64, 100_000] {
                let r = scan_in_chunks(&bytes, ts, chunk).unwrap_or_else(|e| panic!("{ts}: {e}"));
                assert_eq!(r.sop_instance_uid.as_deref(), Some("1.2.3.4.5"), "{ts}");
                assert_eq!(
                    r.sop_class_uid.as_deref(),
                    Some("1.2.840.10008.5.1.4.1.1.7")
                );
                assert_eq!(r.study_instance_uid.as_deref(), Some("1.2.3"));
                assert_eq!(r.series_instance_uid.as_deref(), Some("1.2.3.4"));
                let vr = if ts == uids::IMPLICIT_VR_LITTLE_ENDIAN || !encapsulated {
                    *b"OW"
                } else {
                    *b"OB"
                };
                assert_eq!(r.pixel_data_vr, Some(vr), "{ts}");
            }
        }
    }

    #[test]
    fn uids_are_known_once_the_series_uid_is_behind() {
        let bytes = encode(&sample(false), uids::EXPLICIT_VR_LITTLE_ENDIAN);
        let mut s = DatasetScanner::new(uids::EXPLICIT_VR_LITTLE_ENDIAN).unwrap();
        let mut known_at = None;
        for (i, b) in bytes.iter().enumerate() {
            s.feed(std::slice::from_ref(b));
            if s.uids_known() {
                known_at = Some(i);
                break;
            }
        }
        // Known right after the next element's header, long before the pixel data.
        let at = known_at.expect("never known");
        assert!(at < bytes.len() - 1000, "{at} of {}", bytes.len());
        assert_eq!(s.uids().series_instance_uid.as_deref(), Some("1.2.3.4"));
        assert_eq!(s.uids().study_instance_uid.as_deref(), Some("1.2.3"));
    }

    #[test]
    fn detects_truncation_anywhere() {
        for (ts, encapsulated) in [
            (uids::EXPLICIT_VR_LITTLE_ENDIAN, false),
            (uids::IMPLICIT_VR_LITTLE_ENDIAN, false),
            (uids::JPEG_BASELINE8_BIT, true),
        ] {
            let bytes = encode(&sample(encapsulated), ts);
            for cut in [1, 5, 20, bytes.len() / 2, bytes.len() - 1] {
                assert!(
                    scan_in_chunks(&bytes[..cut], ts, 13).is_err(),
                    "{ts}: cut at {cut} of {} passed",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        let r = scan_in_chunks(
            &[0x08, 0x00, 0x18, 0x00, 0x01, 0x02, 0, 0],
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            8,
        );
        assert!(r.is_err());
        assert!(DatasetScanner::new("1.2.3").is_none());
    }
}
