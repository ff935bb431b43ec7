//! The pixel room on real files: pydicom's samples (every transfer syntax,
//! multiframe JPEG and RLE, Bits Allocated 1, big endian, deflate) and a
//! native multiframe RT Dose, checked against what pydicom reads from the
//! same files (scripts/pixel_frames.py).

mod common;

use common::*;
use pons::pixels::{Format, PixelError, PixelFile, RenderOptions, Window, WindowFunction};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pons::pixels::image as img;

/// pydicom's frames for these files, by path: (transfer syntax, frames).
fn pydicom_frames(files: &[PathBuf], decode: bool) -> BTreeMap<PathBuf, Value> {
    let mut cmd = Command::new(venv_python());
    cmd.arg(repo_root().join("scripts/pixel_frames.py"));
    if decode {
        cmd.arg("--decode");
    }
    let out = cmd.args(files).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (PathBuf::from(v["path"].as_str().unwrap()), v)
        })
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A file shipped inside the pydicom package (not all are in the samples).
fn pydicom_test_file(name: &str) -> PathBuf {
    let out = Command::new(venv_python())
        .args([
            "-c",
            &format!("from pydicom.data import get_testdata_file as f; print(f({name:?}))"),
        ])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Samples (one per SOP instance; the CT-like 16×16 ones only once) plus
/// multiframe files pydicom ships: RT Dose (15 native 32-bit frames), its
/// RLE twin, and 2-frame 16-bit RGB RLE.
fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = testdata()
        .sample_files()
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with("SE0"))
        .collect();
    for name in [
        "rtdose.dcm",
        "rtdose_rle.dcm",
        "SC_rgb_rle_16bit_2frame.dcm",
    ] {
        files.push(pydicom_test_file(name));
    }
    files
}

/// A 3-frame Bits Allocated 1 file of 5×3 pixels: frames 2 and 3 start
/// inside a byte (PS3.5 8.1.1).
fn bits1_file(dir: &Path) -> PathBuf {
    let path = dir.join("bits1.dcm");
    let script = r#"
import sys, numpy as np, pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
ds = Dataset()
ds.file_meta = FileMetaDataset()
ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
ds.PatientID = "BITS1"; ds.StudyInstanceUID = generate_uid(); ds.SeriesInstanceUID = generate_uid()
ds.Rows, ds.Columns, ds.NumberOfFrames = 3, 5, 3
ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
ds.BitsAllocated = ds.BitsStored = 1; ds.HighBit = 0; ds.PixelRepresentation = 0
rng = np.random.default_rng(7)
ds.PixelData = np.packbits(rng.integers(0, 2, 45).astype(np.uint8), bitorder="little").tobytes()
ds.save_as(sys.argv[1], enforce_file_format=True)
"#;
    let out = Command::new(venv_python())
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[test]
fn frames_as_stored_match_pydicom() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = files();
    files.push(bits1_file(dir.path()));
    let expected = pydicom_frames(&files, false);
    let mut checked = BTreeMap::<String, usize>::new();
    for path in &files {
        let want = &expected[path];
        let frames = want["frames"].as_array().unwrap();
        let px = PixelFile::open(path);
        if frames.is_empty() {
            assert!(
                matches!(px, Err(PixelError::NoPixelData)),
                "{}: {:?}",
                path.display(),
                px.err()
            );
            continue;
        }
        let px = px.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            px.number_of_frames() as usize,
            frames.len(),
            "{}",
            path.display()
        );
        for (i, f) in frames.iter().enumerate() {
            let got = px.frame(i as u32 + 1).unwrap();
            assert!(
                got.data == unhex(f.as_str().unwrap()),
                "{} frame {}: {} bytes, pydicom has {}",
                path.display(),
                i + 1,
                got.data.len(),
                f.as_str().unwrap().len() / 2
            );
            assert_eq!(got.media_type, px.media_type());
        }
        let n = px.number_of_frames();
        for bad in [0, n + 1] {
            let e = px.frame(bad).unwrap_err();
            assert!(matches!(e, PixelError::NoSuchFrame { .. }), "{e}");
            let range = if n == 1 {
                "only frame 1".to_owned()
            } else {
                format!("frames 1 to {n}")
            };
            assert!(e.to_string().contains(&range), "{e}");
        }
        *checked.entry(px.media_type().to_owned()).or_default() += 1;
    }
    // Every kind was met, multiframe included.
    for t in [
        "application/octet-stream",
        "image/jpeg",
        "image/jp2",
        "image/jls",
        "image/dicom-rle",
    ] {
        assert!(checked.contains_key(t), "no {t} sample among {checked:?}");
    }
}

#[test]
fn decoded_frames_match_pydicom_when_lossless() {
    let files: Vec<PathBuf> = files()
        .into_iter()
        .filter(|p| {
            let px = PixelFile::open(p);
            px.is_ok_and(|px| px.is_encapsulated())
        })
        .collect();
    let expected = pydicom_frames(&files, true);
    let mut exact = 0;
    for path in &files {
        let px = PixelFile::open(path).unwrap();
        let want = &expected[path];
        let ts = px.transfer_syntax().to_owned();
        let decoded = px.decoded_frame(1);
        if let Some(why) = cannot_decode(&px) {
            let e = decoded.unwrap_err();
            assert!(matches!(e, PixelError::Unsupported(_)), "{e}");
            assert!(e.to_string().contains(why), "{e}");
            continue;
        }
        let got = decoded.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got.media_type, "application/octet-stream");
        let Some(frames) = want["frames"].as_array().filter(|f| !f.is_empty()) else {
            continue; // pydicom cannot decode it here (12-bit JPEG, JPEG lossless)
        };
        let want = unhex(frames[0].as_str().unwrap());
        assert_eq!(got.data.len(), want.len(), "{}", path.display());
        let lossless = ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"].contains(&ts.as_str());
        if lossless {
            assert!(
                got.data == want,
                "{}: decoded frame differs",
                path.display()
            );
            exact += 1;
        }
    }
    assert!(exact >= 3, "only {exact} lossless files compared");
}

/// What the error says for files this build cannot decode: no JPEG-LS codec,
/// no 12-bit JPEG in jpeg-decoder, no 32-bit RLE in dicom-pixeldata.
fn cannot_decode(px: &PixelFile) -> Option<&'static str> {
    match px.transfer_syntax() {
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => Some("JPEG-LS"),
        "1.2.840.10008.1.2.4.51" => Some("SamplePrecision(12)"),
        "1.2.840.10008.1.2.5" if px.bits_allocated() == 32 => Some("BitsAllocated"),
        _ => None,
    }
}

fn render(px: &PixelFile, frame: u32, opts: &RenderOptions) -> img::DynamicImage {
    let bytes = px.render(frame, opts).unwrap();
    let format = match opts.format {
        Format::Jpeg => img::ImageFormat::Jpeg,
        Format::Png => img::ImageFormat::Png,
    };
    assert_eq!(img::guess_format(&bytes).unwrap(), format);
    img::load_from_memory_with_format(&bytes, format).unwrap()
}

#[test]
fn every_decodable_sample_renders_at_its_size_and_fits_a_viewport() {
    let mut rendered = 0;
    for path in files() {
        let Ok(px) = PixelFile::open(&path) else {
            continue;
        };
        let (rows, cols) = (px.rows(), px.columns());
        for format in [Format::Jpeg, Format::Png] {
            let opts = RenderOptions {
                format,
                ..Default::default()
            };
            if cannot_decode(&px).is_some() || path.ends_with("rtdose.dcm") {
                let e = px.render(1, &opts).unwrap_err();
                assert!(matches!(e, PixelError::Unsupported(_)), "{e}");
                continue;
            }
            let last = px.number_of_frames();
            let image = render(&px, last, &opts);
            assert_eq!(
                (image.width(), image.height()),
                (cols, rows),
                "{}",
                path.display()
            );
            let fit = RenderOptions {
                viewport: Some((64, 64)),
                ..opts
            };
            let small = render(&px, 1, &fit);
            let long = cols.max(rows);
            let want = |d: u32| ((d as f64 * 64.0 / long as f64).round() as u32).max(1);
            let (w, h) = (small.width(), small.height());
            assert!(w == 64 || h == 64, "{}: {w}x{h}", path.display());
            assert!(
                w.abs_diff(want(cols)) <= 1 && h.abs_diff(want(rows)) <= 1,
                "{}: {w}x{h}",
                path.display()
            );
            rendered += 1;
        }
    }
    assert!(rendered > 40, "{rendered}");
}

#[test]
fn monochrome1_renders_inverted() {
    let cr = testdata().samples_dir.join("CR1_6154.dcm");
    let px = PixelFile::open(&cr).unwrap();
    let raw: Vec<u16> = px
        .frame(1)
        .unwrap()
        .data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let max = (0..raw.len()).max_by_key(|&i| raw[i]).unwrap();
    let min = (0..raw.len()).min_by_key(|&i| raw[i]).unwrap();
    let opts = RenderOptions {
        format: Format::Png,
        ..Default::default()
    };
    let luma = render(&px, 1, &opts).to_luma8().into_raw();
    assert!(
        luma[max] < luma[min],
        "highest value {} should be darkest: {} vs {}",
        raw[max],
        luma[max],
        luma[min]
    );
}

#[test]
fn window_parameter_is_applied() {
    let ct = testdata().samples_dir.join("CT_small.dcm");
    let px = PixelFile::open(&ct).unwrap();
    let mean = |w: Option<Window>| {
        let opts = RenderOptions {
            format: Format::Png,
            window: w,
            ..Default::default()
        };
        let luma = render(&px, 1, &opts).to_luma8().into_raw();
        luma.iter().map(|&v| v as f64).sum::<f64>() / luma.len() as f64
    };
    let window = |center| {
        Some(Window {
            center,
            width: 1.0,
            function: WindowFunction::Linear,
        })
    };
    // Everything above a window far below the data is white, below one far above it black.
    assert!(mean(window(-30_000.0)) > 254.0);
    assert!(mean(window(30_000.0)) < 1.0);
    let default = mean(None);
    assert!(default > 1.0 && default < 254.0, "{default}");
}

#[test]
fn palette_color_renders_through_its_tables() {
    let path = testdata().samples_dir.join("examples_palette.dcm");
    let script = "import sys, pydicom\nfrom pydicom.pixels import apply_color_lut\n\
        d = pydicom.dcmread(sys.argv[1])\n\
        print((apply_color_lut(d.pixel_array, d) >> 8).astype('uint8').tobytes().hex())";
    let out = Command::new(venv_python())
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = unhex(String::from_utf8(out.stdout).unwrap().trim());
    let px = PixelFile::open(&path).unwrap();
    let opts = RenderOptions {
        format: Format::Png,
        ..Default::default()
    };
    let got = render(&px, 1, &opts).to_rgb8().into_raw();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "palette lookup differs from pydicom's");
}
