//! Pixel data of one PS3.10 file: its frames as stored (native slices or
//! compressed fragments) and rendered images (JPEG/PNG), for WADO-RS frames,
//! rendered and thumbnail, and WADO-URI. No HTTP here.
//!
//! A file is opened without reading its pixel data: only where each frame
//! lies is noted, and a frame's bytes are read when asked for, so memory
//! stays at one frame whatever the size of the instance.
//!
//! Codecs (dicom-pixeldata, pure Rust): JPEG baseline/extended/lossless,
//! RLE, JPEG 2000 and deflate. JPEG-LS frames are served as stored
//! (image/jls) but cannot be decoded or rendered: its codec (CharLS) needs
//! cmake and a C++ build.

mod frames;
mod locate;
mod render;

/// The `image` crate the renderer encodes with (tests decode with it).
pub use dicom_pixeldata::image;
pub use frames::{Frame, PixelFile};
pub use render::{Format, RenderOptions, Window, WindowFunction};

use dicom_dictionary_std::uids;

#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    #[error("the instance has no pixel data")]
    NoPixelData,
    #[error("frame {requested} does not exist: the instance has {}", frame_range(*.frames))]
    NoSuchFrame { requested: u32, frames: u32 },
    /// The pixel data is fine but this build cannot decode it.
    #[error("cannot decode {0}")]
    Unsupported(String),
    /// The file is not what it claims to be.
    #[error("unreadable pixel data: {0}")]
    Malformed(String),
    #[error("cannot read the instance file: {0}")]
    Io(#[from] std::io::Error),
}

fn frame_range(frames: u32) -> String {
    match frames {
        1 => "only frame 1".to_owned(),
        n => format!("frames 1 to {n}"),
    }
}

/// The media type of a frame compressed with this transfer syntax
/// (PS3.18 Table 8.7.3-2); `None` for native (uncompressed) syntaxes.
pub fn compressed_media_type(transfer_syntax: &str) -> Option<&'static str> {
    Some(match transfer_syntax {
        uids::JPEG_BASELINE8_BIT
        | uids::JPEG_EXTENDED12_BIT
        | uids::JPEG_LOSSLESS
        | uids::JPEG_LOSSLESS_SV1 => "image/jpeg",
        uids::JPEGLS_LOSSLESS | uids::JPEGLS_NEAR_LOSSLESS => "image/jls",
        uids::JPEG2000_LOSSLESS | uids::JPEG2000 => "image/jp2",
        uids::JPEG2000MC_LOSSLESS | uids::JPEG2000MC => "image/jpx",
        uids::HTJ2K_LOSSLESS | uids::HTJ2K_LOSSLESS_RPCL | uids::HTJ2K => "image/jphc",
        uids::RLE_LOSSLESS => "image/dicom-rle",
        uids::JPEGXL_LOSSLESS | uids::JPEGXLJPEG_RECOMPRESSION | uids::JPEGXL => "image/jxl",
        uids::MPEG2MPML | uids::MPEG2MPMLF | uids::MPEG2MPHL | uids::MPEG2MPHLF => "video/mpeg",
        uids::MPEG4HP41
        | uids::MPEG4HP41F
        | uids::MPEG4HP41BD
        | uids::MPEG4HP41BDF
        | uids::MPEG4HP422D
        | uids::MPEG4HP422DF
        | uids::MPEG4HP423D
        | uids::MPEG4HP423DF
        | uids::MPEG4HP42STEREO
        | uids::MPEG4HP42STEREOF => "video/mp4",
        uids::HEVCMP51 | uids::HEVCM10P51 => "video/H265",
        _ => return None,
    })
}
