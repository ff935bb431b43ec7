//! Transfer syntax lists, one home for every room that proposes or accepts.
#![allow(deprecated)] // Explicit VR Big Endian is retired but still sent

use dicom_dictionary_std::uids;

/// Uncompressed: any of them can be rewritten into any other, and every
/// storage SCP accepts them.
pub const NATIVE: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::EXPLICIT_VR_BIG_ENDIAN,
];

pub fn is_native(ts: &str) -> bool {
    NATIVE.contains(&ts)
}

/// Proposed one context each when instances should travel as stored (C-GET
/// from a PACS, C-STORE to a move destination): the peer accepts the one
/// that matches what it holds. Most common first, since the list is cut to
/// fit 128 contexts when many SOP classes need them.
pub const AS_STORED: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEG_LOSSLESS,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
    uids::RLE_LOSSLESS,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::EXPLICIT_VR_BIG_ENDIAN,
    uids::HTJ2K_LOSSLESS,
    uids::HTJ2K,
];

/// Accepted from a storage SCU: data sets are kept as received, so every
/// standard syntax a modality is likely to send.
pub const ACCEPTED: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    uids::EXPLICIT_VR_BIG_ENDIAN,
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::JPEG2000MC_LOSSLESS,
    uids::JPEG2000MC,
    uids::HTJ2K_LOSSLESS,
    uids::HTJ2K_LOSSLESS_RPCL,
    uids::HTJ2K,
    uids::RLE_LOSSLESS,
    uids::MPEG2MPML,
    uids::MPEG2MPHL,
    uids::MPEG4HP41,
    uids::MPEG4HP41BD,
    uids::HEVCMP51,
    uids::HEVCM10P51,
    uids::ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
];
