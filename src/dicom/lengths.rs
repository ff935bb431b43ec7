//! Checks a whole data set held in memory before dicom-rs decodes it:
//! dicom-rs reserves what an element declares before it reads, so a 74-byte
//! command set declaring a 2 GiB value made Pons allocate gigabytes. Here
//! every declared length must fit in what encloses it (the data set, its
//! item, its sequence), every undefined length must end, and nesting is
//! bounded. Nothing is allocated; values are not looked at.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::uids;
use dicom_dictionary_std::StandardDataDictionary;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
/// Sequences within sequences this deep are refused (real data sets nest a
/// handful of levels).
const MAX_DEPTH: usize = 16;

/// Can `data`, encoded in `transfer_syntax_uid`, be decoded without trusting
/// a length it does not back with bytes? Deflated data sets are refused:
/// their bytes say nothing of what they inflate to.
pub fn check(data: &[u8], transfer_syntax_uid: &str) -> Result<(), String> {
    #[allow(deprecated)]
    let (explicit, big_endian) = match crate::dicom::uid::trim(transfer_syntax_uid) {
        uids::IMPLICIT_VR_LITTLE_ENDIAN => (false, false),
        uids::EXPLICIT_VR_BIG_ENDIAN => (true, true),
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => {
            return Err("deflated data sets are not accepted here".into())
        }
        _ => (true, false),
    };
    let walker = Walker {
        explicit,
        big_endian,
    };
    let mut at = 0;
    walker.elements(data, &mut at, 0, false)
}

/// A whole data set held in memory, decoded once [`check`] passed it.
pub fn read_dataset(
    data: &[u8],
    ts: &dicom_encoding::TransferSyntax,
) -> Result<dicom_object::InMemDicomObject, String> {
    check(data, ts.uid())?;
    dicom_object::InMemDicomObject::read_dataset_with_ts(data, ts).map_err(|e| e.to_string())
}

struct Walker {
    explicit: bool,
    big_endian: bool,
}

impl Walker {
    fn u16(&self, b: &[u8]) -> u16 {
        let b = [b[0], b[1]];
        if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn tag(&self, b: &[u8]) -> Tag {
        Tag(self.u16(&b[0..2]), self.u16(&b[2..4]))
    }

    /// Elements from `*at` to the end of `data`, or (`in_item`) to an Item
    /// Delimitation Item, which is consumed.
    fn elements(
        &self,
        data: &[u8],
        at: &mut usize,
        depth: usize,
        in_item: bool,
    ) -> Result<(), String> {
        while *at < data.len() {
            let head = take(data, at, 8)?;
            let tag = self.tag(head);
            if tag == ITEM_END && in_item {
                return Ok(());
            }
            if tag.group() == 0xFFFE {
                return Err(format!("delimiter {tag} out of place"));
            }
            let (vr, len) = if self.explicit {
                let vr = VR::from_binary([head[4], head[5]])
                    .ok_or_else(|| format!("element {tag} has no valid VR"))?;
                if super::scan::has_long_length(&head[4..6]) {
                    (vr, self.u32(take(data, at, 4)?))
                } else {
                    (vr, u32::from(self.u16(&head[6..8])))
                }
            } else {
                let vr = StandardDataDictionary
                    .by_tag(tag)
                    .map_or(VR::UN, |e| e.vr().relaxed());
                (vr, self.u32(&head[4..8]))
            };
            // Encapsulated pixel data and undefined-length UN hold items too.
            let holds_items = vr == VR::SQ || len == UNDEFINED;
            if !holds_items && len % unit(vr) != 0 {
                // dicom-rs sizes some binary values from the length: one that
                // is not a whole number of values made it ask for gigabytes.
                return Err(format!(
                    "element {tag} ({vr:?}) of {len} bytes: not whole values"
                ));
            }
            if !holds_items {
                take(data, at, len as usize).map_err(|_| {
                    let left = data.len() - *at;
                    format!("element {tag} declares {len} bytes where {left} remain")
                })?;
                continue;
            }
            if depth == MAX_DEPTH {
                return Err(format!("sequences nested deeper than {MAX_DEPTH}"));
            }
            // Undefined-length OB/OW is encapsulated pixel data: its items are
            // fragments. Undefined-length UN holds Implicit VR LE items.
            let inner = match vr {
                VR::SQ => Some(self),
                VR::UN => Some(&IMPLICIT_LE),
                _ => None,
            };
            if len == UNDEFINED {
                Self::items(inner, data, at, depth + 1, true)?;
            } else {
                let body = take(data, at, len as usize)
                    .map_err(|_| format!("sequence {tag} declares {len} bytes beyond the data"))?;
                Self::items(inner, body, &mut 0, depth + 1, false)?;
            }
        }
        if in_item {
            return Err("an item ends without its delimiter".into());
        }
        Ok(())
    }

    /// Items from `*at` to the end of `data`, or (`undefined`) to a Sequence
    /// Delimitation Item, which is consumed. Their elements are read by
    /// `elements`, or (None) they are fragments of pixel data.
    fn items(
        elements: Option<&Walker>,
        data: &[u8],
        at: &mut usize,
        depth: usize,
        undefined: bool,
    ) -> Result<(), String> {
        // Item headers are little endian but for Explicit VR Big Endian.
        let reader = elements.unwrap_or(&IMPLICIT_LE);
        while *at < data.len() {
            let head = take(data, at, 8)?;
            let (tag, len) = (reader.tag(head), reader.u32(&head[4..8]));
            match (tag, elements) {
                (SEQUENCE_END, _) if undefined => return Ok(()),
                (ITEM, Some(w)) if len == UNDEFINED => w.elements(data, at, depth, true)?,
                (ITEM, _) if len == UNDEFINED => {
                    return Err("a fragment of undefined length".into())
                }
                (ITEM, w) => {
                    let body = take(data, at, len as usize)
                        .map_err(|_| format!("an item declares {len} bytes beyond the data"))?;
                    if let Some(w) = w {
                        w.elements(body, &mut 0, depth, false)?;
                    }
                }
                (other, _) => return Err(format!("{other} where an item was expected")),
            }
        }
        if undefined {
            return Err("a sequence ends without its delimiter".into());
        }
        Ok(())
    }
}

const IMPLICIT_LE: Walker = Walker {
    explicit: false,
    big_endian: false,
};

/// The size of one value of a binary VR; 1 for the others.
fn unit(vr: VR) -> u32 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::FL | VR::OL | VR::OF | VR::AT => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

/// The next `n` bytes, or an error when fewer remain.
fn take<'a>(data: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let end = at
        .checked_add(n)
        .filter(|e| *e <= data.len())
        .ok_or_else(|| {
            format!(
                "the data set ends {} bytes short",
                at.saturating_add(n) - data.len()
            )
        })?;
    let out = &data[*at..end];
    *at = end;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue};
    use dicom_dictionary_std::tags;
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

    const ILE: &str = uids::IMPLICIT_VR_LITTLE_ENDIAN;
    const ELE: &str = uids::EXPLICIT_VR_LITTLE_ENDIAN;

    fn encode(obj: &InMemDicomObject, ts: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let ts = TransferSyntaxRegistry.get(ts).unwrap();
        obj.write_dataset_with_ts(&mut out, ts).unwrap();
        out
    }

    /// A commitment request: UIDs, a sequence of two items.
    fn nested() -> InMemDicomObject {
        let item = |uid: &str| {
            InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    PrimitiveValue::from("1.2"),
                ),
                DataElement::new(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(uid),
                ),
            ])
        };
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::TRANSACTION_UID, VR::UI, PrimitiveValue::from("1.2.3")),
            DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item("1.2.3.1"), item("1.2.3.2")]),
            ),
        ])
    }

    #[test]
    fn real_data_sets_pass() {
        #[allow(deprecated)]
        let ebe = uids::EXPLICIT_VR_BIG_ENDIAN;
        for ts in [ILE, ELE, ebe] {
            let bytes = encode(&nested(), ts);
            check(&bytes, ts).unwrap_or_else(|e| panic!("{ts}: {e}"));
            let ts = TransferSyntaxRegistry.get(ts).unwrap();
            let back = read_dataset(&bytes, ts).unwrap();
            let items = back
                .get(tags::REFERENCED_SOP_SEQUENCE)
                .unwrap()
                .items()
                .unwrap();
            let uid = items[1].get(tags::REFERENCED_SOP_INSTANCE_UID).unwrap();
            assert_eq!(crate::dicom::uid::trim(&uid.to_str().unwrap()), "1.2.3.2");
        }
    }

    #[test]
    fn a_length_beyond_the_data_is_refused_before_decoding() {
        // A C-ECHO command set whose Affected SOP Class UID declares 2 GiB.
        let mut bytes = Vec::new();
        for (group, element, value) in [(0u16, 0x0100u16, &[0x30u8, 0][..]), (0, 0x0110, &[1, 0])] {
            bytes.extend_from_slice(&group.to_le_bytes());
            bytes.extend_from_slice(&element.to_le_bytes());
            bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
            bytes.extend_from_slice(value);
        }
        bytes.extend_from_slice(&[0, 0, 0x02, 0, 0xFF, 0xFF, 0xFF, 0x7F]);
        bytes.extend_from_slice(b"1.2.840.10008.1.1\0");
        let e = check(&bytes, ILE).unwrap_err();
        assert!(e.contains("2147483647"), "{e}");
        let ts = TransferSyntaxRegistry.get(ILE).unwrap();
        assert!(read_dataset(&bytes, ts).is_err());
    }

    #[test]
    fn binary_values_must_be_whole() {
        // Found by fuzz/command_set: a one-byte UL (and the like) made
        // dicom-rs ask for gigabytes.
        let input = [
            0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 246,
            149, 1, 0, 0, 0, 0,
        ];
        let e = check(&input, ILE).unwrap_err();
        assert!(e.contains("not whole values"), "{e}");
        assert!(crate::dimse::message::Command::decode(&input).is_err());
    }

    #[test]
    fn broken_structures_are_refused() {
        let good = encode(&nested(), ELE);
        // Cut anywhere inside, the data set is refused, never decoded.
        for cut in 1..good.len() {
            if check(&good[..cut], ELE).is_ok() {
                // Only a cut on a top-level element boundary may pass.
                let obj = TransferSyntaxRegistry.get(ELE).unwrap();
                read_dataset(&good[..cut], obj).unwrap();
            }
        }
        // An inner element that claims more than its item holds.
        let mut bad = good.clone();
        let at = bad
            .windows(4)
            .position(|w| w == [0x08, 0, 0x55, 0x11])
            .unwrap();
        bad[at + 6] = 0xF0; // its 16-bit length
        assert!(check(&bad, ELE).is_err());
        // An undefined-length sequence that never ends.
        let mut open = vec![
            0x08, 0, 0x99, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        open.extend_from_slice(&[0xFE, 0xFF, 0, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(check(&open, ELE).is_err());
        assert!(check(&good, uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN).is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let mut obj = nested();
        for _ in 0..40 {
            obj = InMemDicomObject::from_element_iter([DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![obj]),
            )]);
        }
        let e = check(&encode(&obj, ELE), ELE).unwrap_err();
        assert!(e.contains("deeper"), "{e}");
    }
}
