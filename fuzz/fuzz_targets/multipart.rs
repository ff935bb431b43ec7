//! A STOW-RS body. Input: one byte choosing the size of the pieces the body
//! arrives in, the Content-Type header up to the first `\n`, then the body.
//! The boundary comes from the Content-Type as Pons reads it
//! (`related_params` / `related_boundary`), else a fixed one; multer reads
//! every part to its end, behind `YieldEvery` as in STOW-RS.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pons::web::multipart::{related_boundary, related_params, YieldEvery};

const PIECES: [usize; 8] = [1, 2, 3, 7, 64, 1000, 4096, 65536];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b""[..], rest),
    };
    let content_type = String::from_utf8_lossy(content_type);
    let content_type = content_type.trim_end_matches('\r');
    let _ = related_params(content_type);
    let boundary =
        related_boundary(content_type).unwrap_or_else(|| "pons-fuzz-boundary".to_owned());

    let piece = PIECES[pick as usize % PIECES.len()];
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = YieldEvery::new(futures::stream::iter(chunks), 1 + (pick as usize >> 3) * 97);
    let mut multipart = multer::Multipart::new(stream, boundary);
    futures::executor::block_on(async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            let _ = (
                field.name(),
                field.file_name(),
                field.content_type(),
                field.index(),
            );
            let _ = field.headers().len();
            while let Ok(Some(_)) = field.chunk().await {}
        }
    });
});
