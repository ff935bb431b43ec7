//! Decoding a frame and rendering it as a JPEG or PNG image.

use super::{PixelError, PixelFile};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_pixeldata::image::{codecs::jpeg::JpegEncoder, imageops::FilterType};
use dicom_pixeldata::image::{DynamicImage, ImageFormat, RgbImage};
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
        let mut img = if is_palette(&obj) {
            palette_image(&obj, &decoded)?
        } else {
            decoded
                .to_dynamic_image_with_options(0, &convert)
                .map_err(|e| PixelError::Unsupported(format!("this image for display: {e}")))?
        };
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

fn is_palette(obj: &InMemDicomObject) -> bool {
    obj.element_opt(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .is_some_and(|p| p.trim() == "PALETTE COLOR")
}

/// PALETTE COLOR: each stored value looked up in the red, green and blue
/// tables (PS3.3 C.7.6.3.1.5), narrowed to 8 bits.
fn palette_image(
    obj: &InMemDicomObject,
    decoded: &DecodedPixelData<'_>,
) -> Result<DynamicImage, PixelError> {
    let unsupported =
        |why: &str| PixelError::Unsupported(format!("this PALETTE COLOR image: {why}"));
    let values: Vec<u16> = match decoded.bits_allocated() {
        8 => decoded.data().iter().map(|&v| u16::from(v)).collect(),
        16 => decoded.data_ow(),
        _ => return Err(unsupported("Bits Allocated is neither 8 nor 16")),
    };
    let table = |descriptor, data| -> Result<Vec<u8>, PixelError> {
        let d: Vec<u32> = obj
            .element_opt(descriptor)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_int::<u32>().ok())
            .filter(|d| d.len() == 3)
            .ok_or_else(|| {
                unsupported("no lookup table descriptor (segmented tables are not supported)")
            })?;
        let bytes = obj
            .element_opt(data)
            .ok()
            .flatten()
            .and_then(|e| e.to_bytes().ok())
            .ok_or_else(|| unsupported("no lookup table data"))?;
        // 0 entries means 65536; the first mapped value may be signed.
        let entries = if d[0] == 0 { 65536 } else { d[0] as usize };
        let first = i64::from(d[1] as u16 as i16).max(0) as usize;
        let wide = bytes.len() >= 2 * entries;
        let entry = |i: usize| -> u8 {
            if wide {
                let v = u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]);
                if d[2] > 8 {
                    (v >> 8) as u8
                } else {
                    v as u8
                }
            } else {
                bytes.get(i).copied().unwrap_or(0)
            }
        };
        Ok(values
            .iter()
            .map(|&v| entry((v as usize).saturating_sub(first).min(entries - 1)))
            .collect())
    };
    let r = table(
        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let g = table(
        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let b = table(
        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let rgb: Vec<u8> = (0..values.len()).flat_map(|i| [r[i], g[i], b[i]]).collect();
    RgbImage::from_raw(decoded.columns(), decoded.rows(), rgb)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| PixelError::Malformed("pixel data shorter than Rows × Columns".into()))
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
                crate::dicom::uid::trim(uid)
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
