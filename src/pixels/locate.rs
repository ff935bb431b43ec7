//! Finding the pixel data in a PS3.10 file without reading it: where a
//! native value starts, or where each frame's fragments lie.

use super::{compressed_media_type, PixelError};
use crate::dicom::part10::{parse_part10_header, Part10Head};
use crate::dicom::uid;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::StatefulDecode;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// More than this in a file meta group is not a real file.
const MAX_META: usize = 1 << 20;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const SEQUENCE_DELIMITER: (u16, u16) = (0xFFFE, 0xE0DD);

#[derive(Debug, Clone, Copy)]
pub(super) struct Fragment {
    /// From the first byte of the first fragment's item tag (offset tables count so).
    pub item_offset: u64,
    /// Where its value starts in the file.
    pub pos: u64,
    pub len: u32,
}

/// What the walk over the data set found at the top level.
pub(super) enum Found {
    Native { offset: u64, len: u64, vr: VR },
    Encapsulated { first_item: u64 },
    Nothing,
}

/// Where the data set starts (after the file meta group), and its syntax.
pub(super) fn data_set_start(path: &Path) -> Result<(u64, String), PixelError> {
    let mut file = File::open(path)?;
    let mut head = Vec::new();
    let mut chunk = vec![0; 16 * 1024];
    loop {
        let n = file.read(&mut chunk)?;
        head.extend_from_slice(&chunk[..n]);
        match parse_part10_header(&head) {
            Part10Head::Complete(at, meta) => {
                let ts = uid::trim(&meta.transfer_syntax_uid).to_owned();
                return Ok((at as u64, ts));
            }
            Part10Head::Invalid(why) => return Err(PixelError::Malformed(why.to_owned())),
            Part10Head::NeedMore if n == 0 || head.len() > MAX_META => {
                return Err(PixelError::Malformed("file meta group cut short".into()))
            }
            Part10Head::NeedMore => {}
        }
    }
}

/// Walks the data set's top level, skipping values, up to Pixel Data.
pub(super) fn locate_pixel_data(
    path: &Path,
    start: u64,
    ts: &dicom_encoding::TransferSyntax,
) -> Result<Found, PixelError> {
    let malformed = |e: &dyn std::fmt::Display| PixelError::Malformed(e.to_string());
    let mut file = BufReader::new(File::open(path)?);
    file.seek(SeekFrom::Start(start))?;
    let mut reader = LazyDataSetReader::new_with_ts(file, ts).map_err(|e| malformed(&e))?;
    let mut depth = 0usize;
    let mut pixel_header = false;
    loop {
        let token = match reader.advance() {
            None => return Ok(Found::Nothing),
            Some(token) => token.map_err(|e| malformed(&e))?,
        };
        match token {
            LazyDataToken::ElementHeader(h) if depth == 0 => {
                if h.tag > tags::PIXEL_DATA {
                    return Ok(Found::Nothing);
                }
                pixel_header = h.tag == tags::PIXEL_DATA;
            }
            LazyDataToken::SequenceStart { tag, .. } => {
                if depth == 0 && tag > tags::PIXEL_DATA {
                    return Ok(Found::Nothing);
                }
                depth += 1;
            }
            LazyDataToken::PixelSequenceStart if depth == 0 => break,
            LazyDataToken::PixelSequenceStart => depth += 1,
            LazyDataToken::SequenceEnd => depth = depth.saturating_sub(1),
            LazyDataToken::LazyValue { header, decoder } if pixel_header && depth == 0 => {
                return Ok(Found::Native {
                    offset: decoder.position(),
                    len: u64::from(header.len.0),
                    vr: header.vr,
                });
            }
            other => other.skip().map_err(|e| malformed(&e))?,
        }
    }
    // Right after the Pixel Data header: its first item (the Basic Offset Table).
    Ok(Found::Encapsulated {
        first_item: reader.into_decoder().position(),
    })
}

/// The Basic Offset Table and every fragment of an encapsulated Pixel Data
/// whose first item starts at `first_item`. Item headers are always little
/// endian here (encapsulated syntaxes are all Explicit VR LE).
pub(super) fn read_fragments(
    path: &Path,
    first_item: u64,
) -> Result<(Vec<u32>, Vec<Fragment>), PixelError> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut pos = first_item;
    let mut bot = None;
    let mut fragments = Vec::new();
    let mut first_fragment = 0;
    while pos + 8 <= file_len {
        file.seek(SeekFrom::Start(pos))?;
        let mut h = [0u8; 8];
        file.read_exact(&mut h)?;
        let tag = (
            u16::from_le_bytes([h[0], h[1]]),
            u16::from_le_bytes([h[2], h[3]]),
        );
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if tag == SEQUENCE_DELIMITER {
            break;
        }
        if tag != ITEM || len == u32::MAX || pos + 8 + u64::from(len) > file_len {
            return Err(PixelError::Malformed(format!(
                "bad item in encapsulated pixel data at byte {pos}"
            )));
        }
        if bot.is_none() {
            let mut table = vec![0u8; len as usize];
            file.read_exact(&mut table)?;
            let table = table
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            bot = Some(table);
            first_fragment = pos + 8 + u64::from(len);
        } else {
            fragments.push(Fragment {
                item_offset: pos - first_fragment,
                pos: pos + 8,
                len,
            });
        }
        pos += 8 + u64::from(len);
    }
    Ok((bot.unwrap_or_default(), fragments))
}

/// Which fragments make up each frame: from the Extended Offset Table, the
/// Basic Offset Table, one fragment per frame, or the codec's start markers.
pub(super) fn group_fragments(
    frames: u32,
    bot: &[u32],
    eot: Option<(Vec<u64>, Vec<u64>)>,
    fragments: Vec<Fragment>,
    path: &Path,
    ts: &str,
) -> Result<Vec<Vec<Fragment>>, PixelError> {
    let frames = frames as usize;
    let bad = |what: String| PixelError::Malformed(what);
    if let Some((offsets, lengths)) = eot {
        if offsets.len() != frames || lengths.len() != frames {
            return Err(bad(format!(
                "Extended Offset Table has {} entries for {frames} frames",
                offsets.len()
            )));
        }
        return offsets
            .iter()
            .zip(&lengths)
            .map(|(&o, &l)| {
                let i = fragments
                    .binary_search_by_key(&o, |f| f.item_offset)
                    .map_err(|_| bad(format!("no fragment at offset {o}")))?;
                let f = fragments[i];
                Ok(vec![Fragment {
                    len: f.len.min(u32::try_from(l).unwrap_or(u32::MAX)),
                    ..f
                }])
            })
            .collect();
    }
    if fragments.is_empty() {
        return Err(PixelError::NoPixelData);
    }
    let starts: Vec<usize> = if !bot.is_empty() {
        if bot.len() != frames {
            return Err(bad(format!(
                "Basic Offset Table has {} entries for {frames} frames",
                bot.len()
            )));
        }
        bot.iter()
            .map(|&o| {
                fragments
                    .binary_search_by_key(&u64::from(o), |f| f.item_offset)
                    .map_err(|_| bad(format!("no fragment at offset {o}")))
            })
            .collect::<Result<_, _>>()?
    } else if frames == 1 {
        vec![0]
    } else if fragments.len() == frames {
        (0..frames).collect()
    } else {
        // Several fragments per frame and no table: a frame starts with
        // the codec's start-of-image marker.
        let mut file = File::open(path)?;
        let mut starts = Vec::new();
        for (i, f) in fragments.iter().enumerate() {
            let mut magic = [0u8; 2];
            file.seek(SeekFrom::Start(f.pos))?;
            if f.len >= 2 && file.read_exact(&mut magic).is_ok() && starts_frame(ts, magic) {
                starts.push(i);
            }
        }
        if starts.len() != frames || starts.first() != Some(&0) {
            return Err(bad(format!(
                "cannot tell which of {} fragments make up each of {frames} frames",
                fragments.len()
            )));
        }
        starts
    };
    if starts.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad("offset table is not increasing".into()));
    }
    let mut ends = starts[1..].to_vec();
    ends.push(fragments.len());
    Ok(starts
        .iter()
        .zip(ends)
        .map(|(&s, e)| fragments[s..e].to_vec())
        .collect())
}

fn starts_frame(ts: &str, magic: [u8; 2]) -> bool {
    match compressed_media_type(ts) {
        // SOI for JPEG and JPEG-LS; SOC for a JPEG 2000 codestream.
        Some("image/jpeg" | "image/jls") => magic == [0xFF, 0xD8],
        Some("image/jp2" | "image/jpx" | "image/jphc") => magic == [0xFF, 0x4F],
        _ => false,
    }
}

pub(super) fn extended_offset_table(obj: &InMemDicomObject) -> Option<(Vec<u64>, Vec<u64>)> {
    let get = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_int::<u64>().ok())
    };
    Some((
        get(tags::EXTENDED_OFFSET_TABLE)?,
        get(tags::EXTENDED_OFFSET_TABLE_LENGTHS)?,
    ))
}
