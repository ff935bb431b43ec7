//! Direction B pixels against a real PACS: Orthanc (DIMSE only) holds a
//! native multiframe RT Dose, a 30-frame JPEG baseline ultrasound, a JPEG-LS
//! MR and a CT series; through Pons come WADO-RS frames (as stored, decoded,
//! refused), rendered and thumbnail images, WADO-URI, and dicomweb-client.

mod common;

use common::*;
use pons::pixels::image as img;
use std::path::{Path, PathBuf};
use std::process::Command;

const NATIVE: &str = "rtdose.dcm";
const JPEG: &str = "examples_ybr_color.dcm";
const JLS: &str = "MR_small_jpeg_ls_lossless.dcm";

struct Setup {
    orthanc: Orthanc,
    _pons: Pons,
    base: String,
    ct: Vec<PathBuf>,
    _state: tempfile::TempDir,
}

fn sample(name: &str) -> PathBuf {
    let local = testdata().samples_dir.join(name);
    if local.exists() {
        return local;
    }
    let out = Command::new(venv_python())
        .args([
            "-c",
            "import sys; from pydicom.data import get_testdata_file as f; print(f(sys.argv[1]))",
        ])
        .arg(name)
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Orthanc loaded over DIMSE with the samples and 3 CT slices of one
/// series; Pons in front of it.
fn setup() -> Setup {
    let orthanc = Orthanc::start();
    let ct = testdata().ct(100).files(3);
    let mut files: Vec<PathBuf> = [NATIVE, JPEG, JLS].iter().map(|n| sample(n)).collect();
    files.extend(ct.iter().cloned());
    storescu("LOADER", orthanc.aet(), orthanc.dicom_port(), &files, &[]).assert_success();
    assert_eq!(
        orthanc.wait_for_instances(files.len(), std::time::Duration::from_secs(30)),
        files.len()
    );
    let state = tempfile::tempdir().unwrap();
    let mut cfg = PonsConfig::new("http://127.0.0.1:9/dicom-web", state.path());
    cfg.pacs = vec![PacsEntry::new("main", orthanc.aet(), orthanc.dicom_port())];
    let pons = Pons::start(&cfg.to_toml());
    let base = format!("{}/dicom-web", pons.web_url().unwrap());
    Setup {
        orthanc,
        _pons: pons,
        base,
        ct,
        _state: state,
    }
}

/// (study, series, instance) UIDs of a file.
fn uids(path: &Path) -> [String; 3] {
    let (study, series, instance, _) = common::file_uids(path);
    [study, series, instance]
}

fn instance_url(s: &Setup, file: &Path) -> String {
    let [st, se, i] = uids(file);
    format!("{}/studies/{st}/series/{se}/instances/{i}", s.base)
}

fn get(url: &str, accept: Option<&str>) -> HttpResponse {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    http("GET", url, &headers, b"").unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The parts of a multipart/related body: (Content-Type, content).
fn parts(rsp: &HttpResponse) -> Vec<(String, Vec<u8>)> {
    let ct = rsp.header("content-type").expect("content-type");
    assert!(ct.starts_with("multipart/related"), "{ct}");
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap();
    let delim = format!("--{}", boundary.trim_matches('"'));
    let body = &rsp.body;
    let find = |from: usize, pat: &[u8]| {
        body[from..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|i| i + from)
    };
    let mut out = Vec::new();
    let mut at = find(0, delim.as_bytes()).expect("first boundary");
    loop {
        at += delim.len();
        if body[at..].starts_with(b"--") {
            return out;
        }
        let head_end = find(at, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&body[at..head_end]).to_string();
        let content_type = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("Content-Type:")
                    .or_else(|| l.strip_prefix("content-type:"))
            })
            .unwrap()
            .trim()
            .to_owned();
        let next = find(head_end, format!("\r\n{delim}").as_bytes()).unwrap();
        out.push((content_type, body[head_end + 4..next].to_vec()));
        at = next + 2;
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The frames of the file Orthanc holds, as pydicom reads them.
fn orthanc_frames(s: &Setup, file: &Path, decode: bool) -> Vec<Vec<u8>> {
    let [_, _, sop] = uids(file);
    let dir = tempfile::tempdir().unwrap();
    let held = dir.path().join("held.dcm");
    std::fs::write(&held, s.orthanc.instance_file(&sop)).unwrap();
    let mut cmd = Command::new(venv_python());
    cmd.arg(repo_root().join("scripts/pixel_frames.py"));
    if decode {
        cmd.arg("--decode");
    }
    let out = cmd.arg(&held).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    line["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| unhex(f.as_str().unwrap()))
        .collect()
}

fn image(rsp: &HttpResponse, format: img::ImageFormat) -> img::DynamicImage {
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(img::guess_format(&rsp.body).unwrap(), format);
    img::load_from_memory_with_format(&rsp.body, format).unwrap()
}

fn assert_error(rsp: &HttpResponse, status: u16, says: &str) {
    assert_eq!(rsp.status, status, "{}", rsp.text());
    assert!(rsp.text().contains(says), "{:?} lacks {says:?}", rsp.text());
}

const OCTETS: &str = "multipart/related; type=\"application/octet-stream\"";

#[test]
fn frames_as_stored_decoded_or_refused() {
    let s = setup();
    let (native, jpeg, jls) = (sample(NATIVE), sample(JPEG), sample(JLS));

    // Native multiframe: frames 1 and 3 are the slices of Orthanc's pixel data.
    let want = orthanc_frames(&s, &native, false);
    assert_eq!(want.len(), 15);
    for accept in [Some(OCTETS), None, Some("multipart/related; type=\"*/*\"")] {
        let rsp = get(&format!("{}/frames/1,3", instance_url(&s, &native)), accept);
        assert_eq!(rsp.status, 200, "{}", rsp.text());
        let got = parts(&rsp);
        assert_eq!(got.len(), 2);
        for ((ct, data), want) in got.iter().zip([&want[0], &want[2]]) {
            assert!(ct.starts_with("application/octet-stream"), "{ct}");
            assert!(
                data == want,
                "native frame: {} bytes vs {}",
                data.len(),
                want.len()
            );
        }
    }

    // JPEG baseline multiframe: each frame's own JPEG bitstream …
    let want = orthanc_frames(&s, &jpeg, false);
    assert_eq!(want.len(), 30);
    let url = format!("{}/frames/1,3,30", instance_url(&s, &jpeg));
    for accept in [
        "multipart/related; type=\"image/jpeg\"",
        "multipart/related; type=\"image/jpeg\"; transfer-syntax=1.2.840.10008.1.2.4.50",
        "multipart/related; type=\"*/*\"",
    ] {
        let rsp = get(&url, Some(accept));
        assert_eq!(rsp.status, 200, "{accept}: {}", rsp.text());
        assert!(rsp
            .header("content-type")
            .unwrap()
            .contains("type=\"image/jpeg\""));
        let got = parts(&rsp);
        assert_eq!(got.len(), 3);
        for ((ct, data), want) in got.iter().zip([&want[0], &want[2], &want[29]]) {
            assert_eq!(ct, "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50");
            assert!(
                data == want,
                "JPEG frame: {} bytes vs {}",
                data.len(),
                want.len()
            );
        }
    }
    // … or decoded when only octet-stream is accepted: RGB close to what
    // pydicom (libjpeg via Pillow) decodes.
    let decoded = orthanc_frames(&s, &jpeg, true);
    let rsp = get(
        &format!("{}/frames/2", instance_url(&s, &jpeg)),
        Some(OCTETS),
    );
    let got = parts(&rsp);
    assert!(
        got[0].0.starts_with("application/octet-stream"),
        "{}",
        got[0].0
    );
    assert_eq!(got[0].1.len(), 240 * 320 * 3);
    let diff: f64 = got[0]
        .1
        .iter()
        .zip(&decoded[1])
        .map(|(a, b)| a.abs_diff(*b) as f64)
        .sum::<f64>()
        / got[0].1.len() as f64;
    assert!(
        diff < 2.0,
        "decoded frame differs from pydicom's by {diff} on average"
    );

    // JPEG-LS: as stored it is image/jls; this build cannot decode it.
    let url = format!("{}/frames/1", instance_url(&s, &jls));
    let rsp = get(&url, Some("multipart/related; type=\"image/jls\""));
    assert_eq!(parts(&rsp)[0].1, orthanc_frames(&s, &jls, false)[0]);
    assert_error(&get(&url, Some(OCTETS)), 406, "JPEG-LS");
    assert_error(
        &get(&url, Some("multipart/related; type=\"image/jp2\"")),
        406,
        "image/jls",
    );

    // Frame numbers.
    let inst = instance_url(&s, &jpeg);
    assert_error(
        &get(&format!("{inst}/frames/31"), None),
        404,
        "frames 1 to 30",
    );
    assert_error(
        &get(&format!("{inst}/frames/2,0"), None),
        400,
        "\"0\" is not a frame number",
    );
    assert_error(&get(&format!("{inst}/frames/x"), None), 400, "frame list");
}

#[test]
fn dicomweb_client_retrieves_frames() {
    let s = setup();
    let (native, jpeg) = (sample(NATIVE), sample(JPEG));
    let script = r#"
import json, sys
from dicomweb_client.api import DICOMwebClient
base, st, se, i, media = sys.argv[1:6]
client = DICOMwebClient(url=base)
kw = {"media_types": (media,)} if media != "default" else {}
frames = client.retrieve_instance_frames(st, se, i, frame_numbers=[1, 3], **kw)
print(json.dumps([f.hex() for f in frames]))
"#;
    let run = |file: &Path, media: &str| -> Vec<Vec<u8>> {
        let out = Command::new(venv_python())
            .args(["-c", script, &s.base])
            .args(uids(file))
            .arg(media)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hex: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        hex.iter().map(|h| unhex(h)).collect()
    };
    let want = orthanc_frames(&s, &jpeg, false);
    assert_eq!(
        run(&jpeg, "default"),
        vec![want[0].clone(), want[2].clone()]
    );
    assert_eq!(
        run(&jpeg, "image/jpeg"),
        vec![want[0].clone(), want[2].clone()]
    );
    let want = orthanc_frames(&s, &native, false);
    assert_eq!(
        run(&native, "application/octet-stream"),
        vec![want[0].clone(), want[2].clone()]
    );
    assert_eq!(
        run(&native, "default"),
        vec![want[0].clone(), want[2].clone()]
    );
}

#[test]
fn rendered_and_thumbnails() {
    use img::ImageFormat::{Jpeg, Png};
    let s = setup();
    let (ct, jpeg) = (s.ct[1].clone(), sample(JPEG));
    let inst = instance_url(&s, &ct);
    let size = |i: &img::DynamicImage| (i.width(), i.height());

    let rendered = get(&format!("{inst}/rendered"), None);
    assert_eq!(rendered.header("content-type"), Some("image/jpeg"));
    assert_eq!(size(&image(&rendered, Jpeg)), (512, 512));
    let fit = get(
        &format!("{inst}/rendered?viewport=128,64"),
        Some("image/jpeg"),
    );
    assert_eq!(size(&image(&fit, Jpeg)), (64, 64));
    let png = get(&format!("{inst}/rendered"), Some("image/png"));
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert_eq!(size(&image(&png, Png)), (512, 512));
    let low = get(&format!("{inst}/rendered?quality=5"), None);
    let high = get(&format!("{inst}/rendered?quality=95"), None);
    assert!(image(&low, Jpeg).width() == 512 && low.body.len() < high.body.len() / 2);
    // A window far below every CT value renders white, one far above black.
    let mean = |w: &str| {
        let luma = image(
            &get(&format!("{inst}/rendered?window={w}"), Some("image/png")),
            Png,
        )
        .to_luma8();
        luma.iter().map(|&v| v as f64).sum::<f64>() / luma.len() as f64
    };
    assert!(mean("-30000,1") > 254.0);
    assert!(mean("30000,1,linear-exact") < 1.0);

    // A frame of the multiframe ultrasound, and its thumbnail (320×240 → 128×96).
    let us = instance_url(&s, &jpeg);
    let f5 = image(&get(&format!("{us}/frames/5/rendered"), None), Jpeg);
    assert_eq!(size(&f5), (320, 240));
    let f1 = image(&get(&format!("{us}/frames/1/rendered"), None), Jpeg);
    assert_ne!(
        f1.to_rgb8().into_raw(),
        f5.to_rgb8().into_raw(),
        "frames 1 and 5 render alike"
    );
    assert_eq!(
        size(&image(&get(&format!("{us}/thumbnail"), None), Jpeg)),
        (128, 96)
    );
    assert_eq!(
        size(&image(
            &get(&format!("{us}/frames/5/thumbnail"), None),
            Jpeg
        )),
        (128, 96)
    );

    // Series and study: an instance of them.
    let [st, se, _] = uids(&ct);
    let series = get(
        &format!("{}/studies/{st}/series/{se}/rendered", s.base),
        None,
    );
    assert_eq!(size(&image(&series, Jpeg)), (512, 512));
    let thumb = get(
        &format!("{}/studies/{st}/thumbnail", s.base),
        Some("image/png"),
    );
    assert_eq!(size(&image(&thumb, Png)), (128, 128));

    // Refusals name the problem.
    assert_error(
        &get(&format!("{inst}/rendered"), Some("image/gif")),
        406,
        "image/jpeg or image/png",
    );
    assert_error(
        &get(&format!("{inst}/rendered?window=40"), None),
        400,
        "window",
    );
    assert_error(
        &get(&format!("{inst}/rendered?viewport=0,10"), None),
        400,
        "viewport",
    );
    assert_error(
        &get(&format!("{inst}/rendered?quality=101"), None),
        400,
        "quality",
    );
    assert_error(
        &get(&format!("{us}/frames/31/rendered"), None),
        404,
        "frames 1 to 30",
    );
    assert_error(
        &get(&format!("{us}/frames/1,2/rendered"), None),
        400,
        "one at a time",
    );
    let nothing = format!("{}/studies/1.2.3.999/rendered", s.base);
    assert_error(&get(&nothing, None), 404, "1.2.3.999");
}

#[test]
fn wado_uri() {
    use img::ImageFormat::{Jpeg, Png};
    let s = setup();
    let (ct, jpeg) = (s.ct[0].clone(), sample(JPEG));
    let query = |file: &Path, rest: &str| {
        let [st, se, i] = uids(file);
        let url = format!(
            "{}/wado?requestType=WADO&studyUID={st}&seriesUID={se}&objectUID={i}{rest}",
            s.base
        );
        get(&url, None)
    };

    // application/dicom: the instance, in Explicit VR LE by default or as stored.
    let dcm = query(&ct, "&contentType=application/dicom");
    assert_eq!(dcm.status, 200, "{}", dcm.text());
    assert_eq!(dcm.header("content-type"), Some("application/dicom"));
    assert_same_dataset(&ct, &dcm.body);
    let stored = query(
        &jpeg,
        "&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.4.50",
    );
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_same_dataset(&jpeg, &stored.body);
    assert_error(
        &query(
            &jpeg,
            "&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.4.90",
        ),
        406,
        "stored as 1.2.840.10008.1.2.4.50",
    );

    // image/jpeg (the default) and image/png, with frameNumber and size.
    assert_eq!(image(&query(&ct, ""), Jpeg).width(), 512);
    let f3 = image(&query(&jpeg, "&contentType=image/jpeg&frameNumber=3"), Jpeg);
    assert_eq!((f3.width(), f3.height()), (320, 240));
    let small = image(&query(&jpeg, "&contentType=image/png&columns=160"), Png);
    assert_eq!((small.width(), small.height()), (160, 120));
    let white = image(
        &query(
            &ct,
            "&contentType=image/png&windowCenter=-30000&windowWidth=1",
        ),
        Png,
    );
    assert!(white.to_luma8().iter().all(|&v| v == 255));

    // Bad requests name the parameter.
    let [st, se, _] = uids(&ct);
    let partial = format!(
        "{}/wado?requestType=WADO&studyUID={st}&seriesUID={se}",
        s.base
    );
    assert_error(&get(&partial, None), 400, "missing parameter objectUID");
    assert_error(
        &get(&format!("{partial}&objectUID=1.2&requestType=X"), None),
        400,
        "requestType",
    );
    assert_error(&query(&jpeg, "&frameNumber=0"), 400, "frameNumber");
    assert_error(&query(&jpeg, "&frameNumber=99"), 404, "frames 1 to 30");
    assert_error(&query(&ct, "&contentType=text/html"), 406, "contentType");
    assert_error(&query(&ct, "&windowCenter=40"), 400, "windowWidth");
    assert_error(&query(&ct, "&imageQuality=0"), 400, "imageQuality");
    assert_error(&query(&ct, "&objectUID=x"), 400, "UID");
}
