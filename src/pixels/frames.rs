//! Where each frame of a file lies, and its bytes as stored.

use super::{compressed_media_type, PixelError};
use crate::web::part10::{parse_part10_header, Part10Head};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::{Endianness, TransferSyntaxIndex};
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::StatefulDecode;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const OCTET_STREAM: &str = "application/octet-stream";
/// More than this in a file meta group is not a real file.
const MAX_META: usize = 1 << 20;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const SEQUENCE_DELIMITER: (u16, u16) = (0xFFFE, 0xE0DD);

/// One frame's bytes and how to label them.
#[derive(Debug, Clone)]
pub struct Frame {
    pub data: Vec<u8>,
    /// `application/octet-stream` for native pixels, else the codec's type.
    pub media_type: &'static str,
    /// The syntax `data` is in (Explicit VR LE for native pixels).
    pub transfer_syntax: String,
}

/// A PS3.10 file whose frames can be read one at a time.
pub struct PixelFile {
    path: PathBuf,
    /// Every attribute but Pixel Data.
    pub(super) header: FileDicomObject<InMemDicomObject>,
    transfer_syntax: String,
    frames: u32,
    layout: Layout,
}

enum Layout {
    Native(Native),
    /// Per frame, its fragments.
    Encapsulated(Vec<Vec<Fragment>>),
}

enum Native {
    /// `word`: the VR's word size, what big endian swaps (OW packs even
    /// 8-bit samples in swapped pairs).
    InFile { offset: u64, len: u64, word: u64 },
    /// Deflated data sets: inflated once, pixels kept.
    InMemory(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
struct Fragment {
    /// From the first byte of the first fragment's item tag (offset tables count so).
    item_offset: u64,
    /// Where its value starts in the file.
    pos: u64,
    len: u32,
}

/// What the walk over the data set found at the top level.
enum Found {
    Native { offset: u64, len: u64, vr: VR },
    Encapsulated { first_item: u64 },
    Nothing,
}

impl PixelFile {
    pub fn open(path: &Path) -> Result<PixelFile, PixelError> {
        let (start, ts_uid) = data_set_start(path)?;
        let ts = TransferSyntaxRegistry.get(&ts_uid).ok_or_else(|| {
            PixelError::Unsupported(format!("transfer syntax {ts_uid}: unknown to this build"))
        })?;
        let deflated = ts_uid == uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
        let mut header = OpenFileOptions::new()
            .read_until(if deflated {
                Tag(0xFFFF, 0xFFFF)
            } else {
                tags::PIXEL_DATA
            })
            .open_file(path)
            .map_err(|e| PixelError::Malformed(e.to_string()))?;
        let found = if deflated {
            // The data set is one deflate stream: no offsets into the file.
            match header.take_element(tags::PIXEL_DATA) {
                Ok(e) => {
                    let bytes = e
                        .to_bytes()
                        .map_err(|e| PixelError::Malformed(e.to_string()))?;
                    if bytes.is_empty() {
                        return Err(PixelError::NoPixelData);
                    }
                    let layout = Layout::Native(Native::InMemory(bytes.into_owned()));
                    return PixelFile::new(path, header, ts_uid, layout);
                }
                Err(_) => Found::Nothing,
            }
        } else {
            locate_pixel_data(path, start, ts)?
        };
        let layout = match found {
            Found::Nothing | Found::Native { len: 0, .. } => return Err(PixelError::NoPixelData),
            Found::Native { offset, len, vr } => {
                let word = match vr {
                    VR::OW => 2,
                    VR::OL | VR::OF => 4,
                    VR::OV | VR::OD => 8,
                    _ => 1,
                };
                let word = if ts.endianness() == Endianness::Big {
                    word
                } else {
                    1
                };
                Layout::Native(Native::InFile { offset, len, word })
            }
            Found::Encapsulated { first_item } => {
                let (bot, fragments) = read_fragments(path, first_item)?;
                let frames = number_of_frames(&header);
                let eot = extended_offset_table(&header);
                Layout::Encapsulated(group_fragments(
                    frames, &bot, eot, fragments, path, &ts_uid,
                )?)
            }
        };
        PixelFile::new(path, header, ts_uid, layout)
    }

    fn new(
        path: &Path,
        header: FileDicomObject<InMemDicomObject>,
        transfer_syntax: String,
        layout: Layout,
    ) -> Result<PixelFile, PixelError> {
        Ok(PixelFile {
            path: path.to_owned(),
            frames: number_of_frames(&header),
            header,
            transfer_syntax,
            layout,
        })
    }

    pub fn number_of_frames(&self) -> u32 {
        self.frames
    }

    pub fn rows(&self) -> u32 {
        rows(&self.header)
    }

    pub fn columns(&self) -> u32 {
        columns(&self.header)
    }

    pub fn bits_allocated(&self) -> u32 {
        bits_allocated(&self.header)
    }

    pub fn transfer_syntax(&self) -> &str {
        &self.transfer_syntax
    }

    pub fn is_encapsulated(&self) -> bool {
        matches!(self.layout, Layout::Encapsulated(_))
    }

    /// The media type frames have as stored.
    pub fn media_type(&self) -> &'static str {
        match self.layout {
            Layout::Native(_) => OCTET_STREAM,
            Layout::Encapsulated(_) => {
                compressed_media_type(&self.transfer_syntax).unwrap_or(OCTET_STREAM)
            }
        }
    }

    /// An error unless `frame` (1-based) exists.
    pub fn check_frame(&self, frame: u32) -> Result<(), PixelError> {
        if frame == 0 || frame > self.frames {
            return Err(PixelError::NoSuchFrame {
                requested: frame,
                frames: self.frames,
            });
        }
        Ok(())
    }

    /// Frame `frame` (1-based) as stored: native pixels in little endian,
    /// or the frame's compressed bitstream.
    pub fn frame(&self, frame: u32) -> Result<Frame, PixelError> {
        self.check_frame(frame)?;
        match &self.layout {
            Layout::Native(native) => Ok(Frame {
                data: self.native_frame(native, frame)?,
                media_type: OCTET_STREAM,
                transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            }),
            Layout::Encapsulated(frames) => {
                let fragments = self.read_fragments(&frames[frame as usize - 1])?;
                Ok(Frame {
                    data: fragments.concat(),
                    media_type: self.media_type(),
                    transfer_syntax: self.transfer_syntax.clone(),
                })
            }
        }
    }

    /// Frame `frame` (1-based) as native pixels (decoded when compressed).
    pub fn decoded_frame(&self, frame: u32) -> Result<Frame, PixelError> {
        if !self.is_encapsulated() {
            return self.frame(frame);
        }
        let obj = self.frame_object(frame)?;
        let decoded = super::render::decode(&obj)?;
        Ok(Frame {
            data: decoded.into_data(),
            media_type: OCTET_STREAM,
            transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
        })
    }

    /// A single-frame object holding just this frame's pixels (and its
    /// per-frame attributes), for the decoder.
    pub(super) fn frame_object(
        &self,
        frame: u32,
    ) -> Result<FileDicomObject<InMemDicomObject>, PixelError> {
        self.check_frame(frame)?;
        let mut obj = self.header.clone();
        if obj
            .element_opt(tags::NUMBER_OF_FRAMES)
            .ok()
            .flatten()
            .is_some()
        {
            obj.put(DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                PrimitiveValue::from("1"),
            ));
        }
        if let Ok(Some(groups)) = obj.element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE) {
            if let Some(item) = groups.items().and_then(|i| i.get(frame as usize - 1)) {
                let seq = DataElement::new(
                    tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
                    VR::SQ,
                    dicom_core::value::DataSetSequence::from(vec![item.clone()]),
                );
                obj.put(seq);
            }
        }
        obj.remove_element(tags::EXTENDED_OFFSET_TABLE);
        obj.remove_element(tags::EXTENDED_OFFSET_TABLE_LENGTHS);
        match &self.layout {
            Layout::Native(native) => {
                let data = self.native_frame(native, frame)?;
                let vr = if bits_allocated(&obj) > 8 {
                    VR::OW
                } else {
                    VR::OB
                };
                obj.put(DataElement::new(
                    tags::PIXEL_DATA,
                    vr,
                    PrimitiveValue::from(data),
                ));
                // The frame is little endian and not deflated whatever the file was.
                obj.meta_mut().transfer_syntax = uids::EXPLICIT_VR_LITTLE_ENDIAN.to_owned();
            }
            Layout::Encapsulated(frames) => {
                let fragments = self.read_fragments(&frames[frame as usize - 1])?;
                obj.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OB,
                    dicom_core::value::Value::PixelSequence(
                        dicom_core::value::PixelFragmentSequence::new(Vec::new(), fragments),
                    ),
                ));
            }
        }
        Ok(obj)
    }

    fn native_frame(&self, native: &Native, frame: u32) -> Result<Vec<u8>, PixelError> {
        let frame_bits = u64::from(rows(&self.header))
            * u64::from(columns(&self.header))
            * u64::from(samples_per_pixel(&self.header))
            * u64::from(bits_allocated(&self.header));
        if frame_bits == 0 {
            return Err(PixelError::Malformed(
                "Rows, Columns, Samples per Pixel or Bits Allocated missing or zero".into(),
            ));
        }
        // Frames are not byte aligned when Bits Allocated is 1 (PS3.5 8.1.1).
        let first_bit = (u64::from(frame) - 1) * frame_bits;
        let (start, end) = (first_bit / 8, (first_bit + frame_bits).div_ceil(8));
        let available = match native {
            Native::InFile { len, .. } => *len,
            Native::InMemory(bytes) => bytes.len() as u64,
        };
        if end > available {
            return Err(PixelError::Malformed(format!(
                "frame {frame} would end at byte {end} but the pixel data holds {available}"
            )));
        }
        let mut data = match native {
            Native::InFile { offset, len, word } => {
                // Whole words, so that big endian ones can be swapped.
                let (from, to) = (start - start % word, end.div_ceil(*word) * word);
                let to = to.min(*len);
                let mut file = File::open(&self.path)?;
                file.seek(SeekFrom::Start(offset + from))?;
                let mut buf = vec![0; (to - from) as usize];
                file.read_exact(&mut buf)?;
                for w in buf.chunks_exact_mut(*word as usize) {
                    w.reverse();
                }
                buf.drain(..(start - from) as usize);
                buf
            }
            Native::InMemory(bytes) => bytes[start as usize..end as usize].to_vec(),
        };
        let shift = (first_bit % 8) as u32;
        if shift != 0 {
            for i in 0..data.len() {
                let next = data.get(i + 1).copied().unwrap_or(0);
                data[i] = (data[i] >> shift) | (next << (8 - shift));
            }
        }
        data.truncate(frame_bits.div_ceil(8) as usize);
        if frame_bits % 8 != 0 {
            // The last byte's high bits belong to the next frame.
            if let Some(last) = data.last_mut() {
                *last &= (1u8 << (frame_bits % 8)) - 1;
            }
        }
        Ok(data)
    }

    fn read_fragments(&self, fragments: &[Fragment]) -> Result<Vec<Vec<u8>>, PixelError> {
        let mut file = File::open(&self.path)?;
        fragments
            .iter()
            .map(|f| {
                file.seek(SeekFrom::Start(f.pos))?;
                let mut buf = vec![0; f.len as usize];
                file.read_exact(&mut buf)?;
                Ok(buf)
            })
            .collect()
    }
}

/// Where the data set starts (after the file meta group), and its syntax.
fn data_set_start(path: &Path) -> Result<(u64, String), PixelError> {
    let mut file = File::open(path)?;
    let mut head = Vec::new();
    let mut chunk = vec![0; 16 * 1024];
    loop {
        let n = file.read(&mut chunk)?;
        head.extend_from_slice(&chunk[..n]);
        match parse_part10_header(&head) {
            Part10Head::Complete(at, meta) => {
                let ts = meta.transfer_syntax_uid.trim_end_matches('\0').to_owned();
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
fn locate_pixel_data(
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
fn read_fragments(path: &Path, first_item: u64) -> Result<(Vec<u32>, Vec<Fragment>), PixelError> {
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
fn group_fragments(
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

fn extended_offset_table(obj: &InMemDicomObject) -> Option<(Vec<u64>, Vec<u64>)> {
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

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    obj.element_opt(tag).ok().flatten()?.to_int::<u32>().ok()
}

pub(super) fn number_of_frames(obj: &InMemDicomObject) -> u32 {
    int(obj, tags::NUMBER_OF_FRAMES)
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

fn rows(obj: &InMemDicomObject) -> u32 {
    int(obj, tags::ROWS).unwrap_or(0)
}

fn columns(obj: &InMemDicomObject) -> u32 {
    int(obj, tags::COLUMNS).unwrap_or(0)
}

fn samples_per_pixel(obj: &InMemDicomObject) -> u32 {
    int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1)
}

fn bits_allocated(obj: &InMemDicomObject) -> u32 {
    int(obj, tags::BITS_ALLOCATED).unwrap_or(0)
}
