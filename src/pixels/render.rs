//! Decoding a frame and rendering it as a JPEG or PNG image.

use super::{PixelError, PixelFile};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_pixeldata::image::{codecs::jpeg::JpegEncoder, imageops::FilterType};
use dicom_pixeldata::image::{DynamicImage, ImageFormat};
use dicom_pixeldata::{ConvertOptions, DecodedPixelData, PixelDecoder, VoiLutOption, WindowLevel};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

pub use dicom_pixeldata::VoiLutFunction as WindowFunction;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
        }
    }
}

/// A VOI window given by the client instead of the data set's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub function: WindowFunction,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    pub format: Format,
    /// None: the data set's VOI LUT or window, else the full range.
    pub window: Option<Window>,
    /// Fit within (width, height), keeping the aspect ratio.
    pub viewport: Option<(u32, u32)>,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            format: Format::Jpeg,
            window: None,
            viewport: None,
            quality: 90,
        }
    }
}

impl PixelFile {
    /// Frame `frame` (1-based) rendered for display: Modality LUT (Rescale),
    /// VOI (the given window or the data set's), Monochrome1 inverted,
    /// 8 bits per sample, fitted to the viewport.
    pub fn render(&self, frame: u32, opts: &RenderOptions) -> Result<Vec<u8>, PixelError> {
        let obj = self.frame_object(frame)?;
        let decoded = decode(&obj)?;
        let voi = match opts.window {
            Some(w) => VoiLutOption::CustomWithFunction(
                WindowLevel {
                    center: w.center,
                    width: w.width,
                },
                w.function,
            ),
            None => VoiLutOption::First,
        };
        let convert = ConvertOptions::new().with_voi_lut(voi).force_8bit();
        let mut img = decoded
            .to_dynamic_image_with_options(0, &convert)
            .map_err(|e| PixelError::Unsupported(format!("this image for display: {e}")))?;
        if let Some((w, h)) = opts.viewport {
            img = img.resize(w.max(1), h.max(1), FilterType::Triangle);
        }
        let img = if img.color().has_color() {
            DynamicImage::ImageRgb8(img.to_rgb8())
        } else {
            DynamicImage::ImageLuma8(img.to_luma8())
        };
        let mut out = Vec::new();
        let encoded = match opts.format {
            Format::Jpeg => JpegEncoder::new_with_quality(&mut out, opts.quality.clamp(1, 100))
                .encode_image(&img),
            Format::Png => img.write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Png),
        };
        encoded.map_err(|e| PixelError::Malformed(format!("cannot encode the image: {e}")))?;
        Ok(out)
    }
}

/// Decodes a single-frame object to native pixels.
pub(super) fn decode(
    obj: &FileDicomObject<InMemDicomObject>,
) -> Result<DecodedPixelData<'_>, PixelError> {
    let uid = obj.meta().transfer_syntax();
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) if ts.can_decode_all() => {}
        Some(ts) => {
            return Err(PixelError::Unsupported(format!(
                "{} ({}): this build has no codec for it",
                ts.name(),
                uid.trim_end_matches('\0')
            )))
        }
        None => {
            return Err(PixelError::Unsupported(format!(
                "transfer syntax {uid}: unknown to this build"
            )))
        }
    }
    // The codecs' limits (12-bit JPEG, say) are only told deep in the chain.
    obj.decode_pixel_data().map_err(|e| {
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        PixelError::Unsupported(format!("this frame: {why}"))
    })
}
