//! A small archive whose contents the tests know, for query/retrieve tests.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::path::{Path, PathBuf};

pub struct Spec {
    pub name: &'static str,
    pub id: &'static str,
    pub study: &'static str,
    pub date: &'static str,
    pub series: &'static str,
    pub modality: &'static str,
    pub instances: usize,
}

pub const ROOT: &str = "1.2.826.0.1.3680043.10.999";

/// Patient A: 2 studies × 2 series × 2 instances; B: non-ASCII name; C: 3 instances.
pub const ARCHIVE: &[Spec] = &[
    Spec {
        name: "DOE^JOHN",
        id: "PA1",
        study: "1.1",
        date: "20200105",
        series: "1.1.1",
        modality: "CT",
        instances: 2,
    },
    Spec {
        name: "DOE^JOHN",
        id: "PA1",
        study: "1.1",
        date: "20200105",
        series: "1.1.2",
        modality: "MR",
        instances: 2,
    },
    Spec {
        name: "DOE^JOHN",
        id: "PA1",
        study: "1.2",
        date: "20210310",
        series: "1.2.1",
        modality: "CT",
        instances: 2,
    },
    Spec {
        name: "DOE^JOHN",
        id: "PA1",
        study: "1.2",
        date: "20210310",
        series: "1.2.2",
        modality: "CT",
        instances: 2,
    },
    Spec {
        name: "Müller^Jürgen",
        id: "PB2",
        study: "2.1",
        date: "20220101",
        series: "2.1.1",
        modality: "CT",
        instances: 1,
    },
    Spec {
        name: "ROE^JANE",
        id: "PC3",
        study: "3.1",
        date: "20230615",
        series: "3.1.1",
        modality: "MR",
        instances: 3,
    },
];

pub fn uid(suffix: &str) -> String {
    format!("{ROOT}.{suffix}")
}

fn text(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

/// The instance files of the archive, written into `dir`.
pub fn write_archive(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for s in ARCHIVE {
        for i in 1..=s.instances {
            let sop = uid(&format!("{}.{i}", s.series));
            let class = if s.modality == "MR" {
                uids::MR_IMAGE_STORAGE
            } else {
                uids::CT_IMAGE_STORAGE
            };
            let obj = InMemDicomObject::from_element_iter([
                text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
                text(tags::SOP_CLASS_UID, VR::UI, class),
                text(tags::SOP_INSTANCE_UID, VR::UI, &sop),
                text(tags::STUDY_DATE, VR::DA, s.date),
                text(tags::ACCESSION_NUMBER, VR::SH, &format!("ACC{}", s.study)),
                text(tags::MODALITY, VR::CS, s.modality),
                text(tags::PATIENT_NAME, VR::PN, s.name),
                text(tags::PATIENT_ID, VR::LO, s.id),
                text(tags::STUDY_INSTANCE_UID, VR::UI, &uid(s.study)),
                text(tags::SERIES_INSTANCE_UID, VR::UI, &uid(s.series)),
                DataElement::new(
                    tags::INSTANCE_NUMBER,
                    VR::IS,
                    PrimitiveValue::from(i.to_string()),
                ),
            ]);
            let meta = FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(class)
                .media_storage_sop_instance_uid(&sop)
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid("1.2.3.4")
                .build()
                .unwrap();
            let path = dir.join(format!("{sop}.dcm"));
            obj.with_exact_meta(meta).write_to_file(&path).unwrap();
            files.push(path);
        }
    }
    files
}

/// Write the archive into `dir` and store it into Orthanc over DIMSE.
pub fn load_archive(orthanc: &super::Orthanc, dir: &Path) -> Vec<PathBuf> {
    let files = write_archive(dir);
    super::storescu("LOADER", orthanc.aet(), orthanc.dicom_port(), &files, &[]).assert_success();
    let stored = orthanc.wait_for_instances(files.len(), std::time::Duration::from_secs(30));
    assert_eq!(stored, files.len());
    files
}
