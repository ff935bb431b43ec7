//! Where each frame of a file lies, and its bytes as stored.

use super::locate::{
    data_set_start, extended_offset_table, group_fragments, locate_pixel_data, read_fragments,
    Found, Fragment,
};
use super::{compressed_media_type, PixelError};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::{Endianness, TransferSyntaxIndex};
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const OCTET_STREAM: &str = "application/octet-stream";

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
