#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets, fuzz/seeds/<target>/.

    $PONS_CACHE/venv/bin/python fuzz/make_seeds.py [--testdata DIR]

Run with the venv python made by scripts/install-deps.sh, after
scripts/make_testdata.py (the test data, default
${PONS_CACHE:-$HOME/.cache/pons}/testdata, needs samples/ and ct/100/).

Every seed is what a real peer sends: command sets, identifiers and PDUs as
pynetdicom encodes them, PS3.10 heads and data sets of the real test files,
DICOM JSON from pydicom's Dataset.to_json, multipart/related bodies as
dicomweb-client encodes them, typical QIDO-RS queries and Accept headers.
The output is deterministic: a rerun rewrites the same files. Total size is
kept small (the seeds are committed); fuzz/corpus/ is where they grow.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import zlib
from pathlib import Path

from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import dimse_messages as msgs
from pynetdicom import dimse_primitives as prims
from pynetdicom.dsutils import encode
from pynetdicom.pdu import (
    A_ABORT_RQ,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RQ,
    A_RELEASE_RP,
    P_DATA_TF,
)
from pynetdicom.pdu_primitives import (
    A_ABORT,
    A_ASSOCIATE,
    A_RELEASE,
    P_DATA,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import build_context

FUZZ = Path(__file__).resolve().parent
TARGETS = [
    "command_set",
    "data_set",
    "part10_and_scan",
    "dicom_json",
    "qido_to_cfind",
    "cfind_to_qido",
    "pdu",
    "multipart",
    "accept",
    "worklist_params",
    "worklist_identifier",
]

VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
# The UIDs the dicom_json target expects a STOW-RS response to name.
STOW_UIDS = ["1.2.3", "1.2.4"]


class Seeds:
    def __init__(self, root: Path):
        self.root = root
        self.count = 0
        self.bytes = 0

    def put(self, target: str, name: str, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        path = self.root / target / name
        path.write_bytes(data)
        self.count += 1
        self.bytes += len(data)


# --- DIMSE ------------------------------------------------------------------


def identifier(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def study_query() -> Dataset:
    """A C-FIND identifier as a viewer sends it: matching keys, universal
    matching for the return keys."""
    return identifier(
        "STUDY",
        SpecificCharacterSet="ISO_IR 100",
        PatientName="Synthetic^*",
        PatientID="",
        PatientBirthDate="",
        StudyDate="20240101-20241231",
        StudyTime="",
        AccessionNumber="",
        StudyDescription="",
        ModalitiesInStudy="CT\\MR",
        StudyInstanceUID="",
        NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
    )


def commitment_items(uids: list[tuple[str, str]]) -> Sequence:
    items = []
    for cls, inst in uids:
        item = Dataset()
        item.ReferencedSOPClassUID = cls
        item.ReferencedSOPInstanceUID = inst
        items.append(item)
    return Sequence(items)


def real_files(testdata: Path) -> dict[str, Path]:
    s = testdata / "samples"
    files = {
        "ct": testdata / "ct" / "100" / "ct00000.dcm",
        "mr": s / "MR1_4919.dcm",
        "mr2": s / "MR2_4950.dcm",
        "cr": s / "CR1_6154.dcm",
        "j2k": s / "JPEG2000.dcm",
        "big_endian": s / "SC_rgb_small_odd_big_endian.dcm",
        "implicit": s / "SC_rgb_jpeg_dcmd.dcm",
    }
    deflated = testdata / "samples" / "image_dfl.dcm"
    if deflated.exists():
        files["deflated"] = deflated
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        sys.exit(f"make_seeds: missing test data {missing}: run scripts/make_testdata.py")
    return files


def messages(files: dict[str, Path]) -> list[tuple[str, msgs.DIMSEMessage, bytes | None]]:
    """Real DIMSE messages: (name, message, data set bytes or None)."""
    out = []

    def msg(name, cls, prim, data=None):
        m = cls()
        m.primitive_to_message(prim)
        out.append((name, m, data))

    p = prims.C_ECHO()
    p.MessageID = 1
    p.AffectedSOPClassUID = VERIFICATION
    msg("c_echo_rq", msgs.C_ECHO_RQ, p)
    p = prims.C_ECHO()
    p.MessageIDBeingRespondedTo = 1
    p.AffectedSOPClassUID = VERIFICATION
    p.Status = 0x0000
    msg("c_echo_rsp", msgs.C_ECHO_RSP, p)

    mr = dcmread(files["mr"])
    p = prims.C_STORE()
    p.MessageID = 7
    p.AffectedSOPClassUID = mr.SOPClassUID
    p.AffectedSOPInstanceUID = mr.SOPInstanceUID
    p.Priority = 2
    p.MoveOriginatorApplicationEntityTitle = "VIEWER"
    p.MoveOriginatorMessageID = 3
    store_data = encode(mr, False, True)
    msg("c_store_rq", msgs.C_STORE_RQ, p, store_data)
    p = prims.C_STORE()
    p.MessageIDBeingRespondedTo = 7
    p.AffectedSOPClassUID = mr.SOPClassUID
    p.AffectedSOPInstanceUID = mr.SOPInstanceUID
    p.Status = 0xB000
    msg("c_store_rsp_warning", msgs.C_STORE_RSP, p)

    p = prims.C_FIND()
    p.MessageID = 2
    p.AffectedSOPClassUID = STUDY_FIND
    p.Priority = 0
    find_data = encode(study_query(), True, True)
    msg("c_find_rq", msgs.C_FIND_RQ, p, find_data)
    ct = dcmread(files["ct"], stop_before_pixels=True)
    match = identifier(
        "STUDY",
        SpecificCharacterSet=ct.SpecificCharacterSet,
        PatientName=ct.PatientName,
        PatientID=ct.PatientID,
        StudyDate=ct.StudyDate,
        StudyInstanceUID=ct.StudyInstanceUID,
        ModalitiesInStudy="CT",
        NumberOfStudyRelatedInstances="100",
    )
    match.RetrieveAETitle = "ORTHANC"
    p = prims.C_FIND()
    p.MessageIDBeingRespondedTo = 2
    p.AffectedSOPClassUID = STUDY_FIND
    p.Status = 0xFF00
    msg("c_find_rsp_pending", msgs.C_FIND_RSP, p, encode(match, True, True))
    p = prims.C_FIND()
    p.MessageIDBeingRespondedTo = 2
    p.AffectedSOPClassUID = STUDY_FIND
    p.Status = 0x0000
    msg("c_find_rsp_success", msgs.C_FIND_RSP, p)

    p = prims.C_MOVE()
    p.MessageID = 3
    p.AffectedSOPClassUID = STUDY_MOVE
    p.Priority = 0
    p.MoveDestination = "PONS"
    move_id = identifier("STUDY", StudyInstanceUID=ct.StudyInstanceUID)
    msg("c_move_rq", msgs.C_MOVE_RQ, p, encode(move_id, True, True))
    p = prims.C_MOVE()
    p.MessageIDBeingRespondedTo = 3
    p.AffectedSOPClassUID = STUDY_MOVE
    p.Status = 0xFF00
    p.NumberOfRemainingSuboperations = 99
    p.NumberOfCompletedSuboperations = 1
    p.NumberOfFailedSuboperations = 0
    p.NumberOfWarningSuboperations = 0
    msg("c_move_rsp_pending", msgs.C_MOVE_RSP, p)
    p = prims.C_GET()
    p.MessageID = 4
    p.AffectedSOPClassUID = STUDY_GET
    p.Priority = 0
    msg("c_get_rq", msgs.C_GET_RQ, p, encode(move_id, True, True))
    p = prims.C_CANCEL()
    p.MessageIDBeingRespondedTo = 3
    msg("c_cancel_rq", msgs.C_CANCEL_RQ, p)

    info = Dataset()
    info.TransactionUID = "1.2.826.0.1.3680043.8.498.1.5"
    info.ReferencedSOPSequence = commitment_items(
        [(CT_STORAGE, ct.SOPInstanceUID), (MR_STORAGE, mr.SOPInstanceUID)]
    )
    p = prims.N_ACTION()
    p.MessageID = 5
    p.RequestedSOPClassUID = COMMITMENT
    p.RequestedSOPInstanceUID = COMMITMENT_INSTANCE
    p.ActionTypeID = 1
    msg("n_action_rq", msgs.N_ACTION_RQ, p, encode(info, False, True))
    report = Dataset()
    report.TransactionUID = info.TransactionUID
    report.RetrieveAETitle = "ORTHANC"
    report.ReferencedSOPSequence = commitment_items([(CT_STORAGE, ct.SOPInstanceUID)])
    failed = commitment_items([(MR_STORAGE, mr.SOPInstanceUID)])
    failed[0].FailureReason = 0x0112
    report.FailedSOPSequence = failed
    p = prims.N_EVENT_REPORT()
    p.MessageID = 6
    p.AffectedSOPClassUID = COMMITMENT
    p.AffectedSOPInstanceUID = COMMITMENT_INSTANCE
    p.EventTypeID = 2
    msg("n_event_report_rq", msgs.N_EVENT_REPORT_RQ, p, encode(report, False, True))
    return out


def command_bytes(m: msgs.DIMSEMessage) -> bytes:
    return encode(m.command_set, True, True)


def p_data_pdus(m: msgs.DIMSEMessage, data: bytes | None, pc: int, max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs carrying message `m` (and its data set)."""
    if data is not None:
        m.data_set = io.BytesIO(data)
    out = b""
    for prim in m.encode_msg(pc, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(prim)
        out += pdu.encode()
    return out


# --- Association ------------------------------------------------------------


def associate_rq() -> A_ASSOCIATE:
    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title = "VIEWER"
    prim.called_ae_title = "PONS"
    contexts = [
        build_context(VERIFICATION),
        build_context(STUDY_FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        build_context(STUDY_MOVE),
        build_context(STUDY_GET),
        build_context(
            CT_STORAGE,
            [
                "1.2.840.10008.1.2.4.70",
                "1.2.840.10008.1.2.4.90",
                ExplicitVRLittleEndian,
                ImplicitVRLittleEndian,
                ExplicitVRBigEndian,
                "1.2.840.10008.1.2.1.99",
            ],
        ),
        build_context(COMMITMENT),
    ]
    for i, cx in enumerate(contexts):
        cx.context_id = 2 * i + 1
    prim.presentation_context_definition_list = contexts
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0.4"
    iv = ImplementationVersionNameNotification()
    iv.implementation_version_name = "PYNETDICOM_304"
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = CT_STORAGE
    role.scu_role = False
    role.scp_role = True
    ext = SOPClassExtendedNegotiation()
    ext.sop_class_uid = STUDY_FIND
    ext.service_class_application_information = b"\x01\x01\x01"
    common = SOPClassCommonExtendedNegotiation()
    common.sop_class_uid = CT_STORAGE
    common.service_class_uid = "1.2.840.10008.4.2"
    common.related_general_sop_class_identification = ["1.2.840.10008.5.1.4.1.1.2.1"]
    ident = UserIdentityNegotiation()
    ident.user_identity_type = 2
    ident.positive_response_requested = True
    ident.primary_field = b"viewer"
    ident.secondary_field = b"secret"
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 1
    window.maximum_number_operations_performed = 1
    prim.user_information = [ml, ic, iv, role, ext, common, ident, window]
    return prim


def associate_ac(rq: A_ASSOCIATE) -> A_ASSOCIATE:
    prim = A_ASSOCIATE()
    prim.application_context_name = rq.application_context_name
    prim.calling_ae_title = rq.calling_ae_title
    prim.called_ae_title = rq.called_ae_title
    prim.result = 0
    results = []
    for cx in rq.presentation_context_definition_list:
        r = build_context(cx.abstract_syntax, cx.transfer_syntax[0])
        r.context_id = cx.context_id
        r.result = 0 if cx.abstract_syntax != STUDY_GET else 3
        results.append(r)
    prim.presentation_context_definition_results_list = results
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 131072
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = "1.2.826.0.1.3680043.10.1234"
    iv = ImplementationVersionNameNotification()
    iv.implementation_version_name = "PONS"
    prim.user_information = [ml, ic, iv]
    return prim


def pdu_bytes(cls, prim) -> bytes:
    pdu = cls()
    pdu.from_primitive(prim)
    return pdu.encode()


def pdus(seeds: Seeds, dimse: list) -> None:
    rq = associate_rq()
    rq_bytes = pdu_bytes(A_ASSOCIATE_RQ, rq)
    ac_bytes = pdu_bytes(A_ASSOCIATE_AC, associate_ac(rq))
    rj = A_ASSOCIATE()
    rj.result = 1
    rj.result_source = 1
    rj.diagnostic = 7  # called AE title not recognised
    rj_bytes = pdu_bytes(A_ASSOCIATE_RJ, rj)
    release = A_RELEASE()
    rl_rq = pdu_bytes(A_RELEASE_RQ, release)
    release.result = "affirmative"
    rl_rp = pdu_bytes(A_RELEASE_RP, release)
    abort = A_ABORT()
    abort.abort_source = 0
    ab = pdu_bytes(A_ABORT_RQ, abort)
    seeds.put("pdu", "a_associate_rq", rq_bytes)
    seeds.put("pdu", "a_associate_ac", ac_bytes)
    seeds.put("pdu", "a_associate_rj", rj_bytes)
    seeds.put("pdu", "a_release_rq", rl_rq)
    seeds.put("pdu", "a_release_rp", rl_rp)
    seeds.put("pdu", "a_abort", ab)
    by_name = {name: (m, data) for name, m, data in dimse}
    for name, (m, data) in by_name.items():
        # Our max PDU as the peer's; the C-STORE also in small fragments.
        seeds.put("pdu", f"p_data_{name}", p_data_pdus(m, data, 1, 16384))
    m, data = by_name["c_store_rq"]
    seeds.put("pdu", "p_data_c_store_rq_fragments", p_data_pdus(m, data, 9, 1024))
    # Whole exchanges, one direction each, as the peer sends them.
    m, _ = by_name["c_echo_rq"]
    seeds.put("pdu", "scu_echo", rq_bytes + p_data_pdus(m, None, 1, 16384) + rl_rq)
    m, data = by_name["c_find_rq"]
    scu_find = rq_bytes + p_data_pdus(m, data, 3, 16384)
    m, _ = by_name["c_cancel_rq"]
    seeds.put("pdu", "scu_find_cancel", scu_find + p_data_pdus(m, None, 3, 16384) + ab)
    scp = ac_bytes
    for name in ["c_find_rsp_pending", "c_find_rsp_pending", "c_find_rsp_success"]:
        m, data = by_name[name]
        scp += p_data_pdus(m, data, 3, 16384)
    seeds.put("pdu", "scp_find", scp + rl_rp)
    m, data = by_name["n_event_report_rq"]
    seeds.put("pdu", "scp_commitment_report", p_data_pdus(m, data, 11, 16384) + rl_rq)


# --- Data sets --------------------------------------------------------------


def data_sets(seeds: Seeds, files: dict[str, Path], dimse: list) -> None:
    for name, m, data in dimse:
        seeds.put("command_set", name, command_bytes(m))
    # Identifiers and N-ACTION / N-EVENT-REPORT information in each syntax.
    ct = dcmread(files["ct"], stop_before_pixels=True)
    mr = dcmread(files["mr"])
    info = Dataset()
    info.TransactionUID = "1.2.826.0.1.3680043.8.498.1.5"
    info.ReferencedSOPSequence = commitment_items([(CT_STORAGE, ct.SOPInstanceUID)])
    sets = {
        "study_query": study_query(),
        "patient_query": identifier("PATIENT", PatientID="PONS-*", PatientName=""),
        "series_query": identifier(
            "SERIES",
            StudyInstanceUID=ct.StudyInstanceUID,
            SeriesInstanceUID="",
            Modality="",
            SeriesNumber="",
            NumberOfSeriesRelatedInstances="",
        ),
        "image_query": identifier(
            "IMAGE",
            StudyInstanceUID=ct.StudyInstanceUID,
            SeriesInstanceUID=ct.SeriesInstanceUID,
            SOPInstanceUID="",
            SOPClassUID="",
            InstanceNumber="",
        ),
        "commitment": info,
    }
    for name, ds in sets.items():
        for ts in SYNTAXES:
            raw = encode(ds, ts.is_implicit_VR, ts.is_little_endian)
            short = {ImplicitVRLittleEndian: "ivle", ExplicitVRLittleEndian: "evle"}.get(
                ts, "evbe"
            )
            seeds.put("data_set", f"{name}_{short}", raw)
            if ts == ExplicitVRLittleEndian:
                seeds.put("cfind_to_qido", name, raw)
    # Real instances' data sets, whole (small files) or their head.
    mr_raw = encode(mr, False, True)
    seeds.put("data_set", "mr_evle", mr_raw)
    seeds.put("data_set", "mr_ivle", encode(mr, True, True))
    seeds.put("data_set", "mr_deflated", zlib.compress(mr_raw, 9)[2:-4])
    seeds.put("data_set", "ct_head_evle", encode(ct, False, True))
    seeds.put("cfind_to_qido", "ct_head", encode(ct, False, True))


def part10(seeds: Seeds, files: dict[str, Path]) -> None:
    """PS3.10 files: the head and first KB (the whole of small ones); byte 0
    (in the preamble) picks the scanner's piece size."""
    for name, piece in [
        ("ct", 0), ("mr", 63), ("cr", 255), ("j2k", 7),
        ("big_endian", 1), ("implicit", 15), ("deflated", 31),
    ]:
        if name not in files:
            continue
        raw = bytearray(files[name].read_bytes()[:6144])
        raw[0] = piece
        seeds.put("part10_and_scan", f"{name}.dcm", bytes(raw))
    # Bare data sets, as the scanner sees a part's body after the header.
    mr = dcmread(files["mr"])
    seeds.put("part10_and_scan", "mr_dataset_evle", encode(mr, False, True))
    seeds.put("part10_and_scan", "mr_dataset_ivle", encode(mr, True, True))
    j2k = dcmread(files["j2k"])
    seeds.put("part10_and_scan", "j2k_dataset_encapsulated", encode(j2k, False, True)[:6144])


# --- Web --------------------------------------------------------------------


def dicom_json(seeds: Seeds, files: dict[str, Path]) -> None:
    def bulk(elem):
        return "http://pons.example/bulk/" + str(elem.tag).replace(", ", "").strip("()")

    for name in ["ct", "mr", "cr", "j2k"]:
        ds = dcmread(files[name])
        meta = ds.to_json(bulk_data_threshold=512, bulk_data_element_handler=bulk)
        seeds.put("dicom_json", f"metadata_{name}.json", meta)
    mr = dcmread(files["mr"], stop_before_pixels=True)
    seeds.put("dicom_json", "metadata_array.json", "[" + mr.to_json() + "]")

    # STOW-RS response: one stored (with a warning), one failed.
    resp = Dataset()
    resp.RetrieveURL = "http://pacs.example/dicom-web/studies/1.2.9"
    ok = Dataset()
    ok.ReferencedSOPClassUID = CT_STORAGE
    ok.ReferencedSOPInstanceUID = STOW_UIDS[0]
    ok.RetrieveURL = "http://pacs.example/dicom-web/studies/1.2.9/series/1.2.9.1/instances/1.2.3"
    ok.WarningReason = 0xB000
    bad = Dataset()
    bad.ReferencedSOPClassUID = CT_STORAGE
    bad.ReferencedSOPInstanceUID = STOW_UIDS[1]
    bad.FailureReason = 0xA700
    resp.ReferencedSOPSequence = Sequence([ok])
    resp.FailedSOPSequence = Sequence([bad])
    seeds.put("dicom_json", "stow_response.json", resp.to_json())
    all_ok = Dataset()
    all_ok.RetrieveURL = resp.RetrieveURL
    refs = []
    for uid in STOW_UIDS:
        r = Dataset()
        r.ReferencedSOPClassUID = MR_STORAGE
        r.ReferencedSOPInstanceUID = uid
        refs.append(r)
    all_ok.ReferencedSOPSequence = Sequence(refs)
    seeds.put("dicom_json", "stow_response_all_stored.json", "[" + all_ok.to_json() + "]")

    # Storage commitment (PS3.18 Storage Commitment service): request, result.
    req = Dataset()
    req.ReferencedSOPSequence = commitment_items([(CT_STORAGE, "1.2.3"), (MR_STORAGE, "1.2.4")])
    seeds.put("dicom_json", "commitment_request.json", req.to_json())
    hier = Dataset()
    study = Dataset()
    study.StudyInstanceUID = "1.2.9"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.9.1"
    series.ReferencedInstanceSequence = commitment_items([(CT_STORAGE, "1.2.3")])
    study.ReferencedSeriesSequence = Sequence([series])
    hier.ReferencedStudySequence = Sequence([study])
    seeds.put("dicom_json", "commitment_request_studies.json", hier.to_json())
    result = Dataset()
    result.ReferencedSOPSequence = commitment_items([(CT_STORAGE, "1.2.3")])
    failed = commitment_items([(MR_STORAGE, "1.2.4")])
    failed[0].FailureReason = 0x0112
    result.FailedSOPSequence = failed
    seeds.put("dicom_json", "commitment_result.json", result.to_json())


def queries(seeds: Seeds) -> None:
    table = {
        "ohif_studies": "limit=101&offset=0&fuzzymatching=false"
        "&includefield=00081030%2C00080060&StudyDate=20240101-20241231",
        "patient_name": "PatientName=Synthetic%5E*&includefield=all&limit=25",
        "patient_id": "PatientID=PONS-CT-100-0&StudyDate=20240102",
        "modalities": "ModalitiesInStudy=CT&ModalitiesInStudy=MR&StudyTime=080000-180000",
        "accession": "AccessionNumber=PONS00100000&00100020=PONS*",
        "series": "StudyInstanceUID=1.2.826.0.1.3680043.8.498.92570203681673734290815484358955628362"
        "&Modality=CT&SeriesNumber=1&includefield=0008103E",
        "instances": "SeriesInstanceUID=1.2.3.4&SOPInstanceUID=1.2.3.4.5%5C1.2.3.4.6"
        "&includefield=00200013,00280010,00280011",
        "sequence": "ReferencedStudySequence.ReferencedSOPInstanceUID=1.2.3&fuzzymatching=true",
        "dates": "StudyDate=-20240101&PatientBirthDate=19700101-&StudyTime=1015",
        "empty_values": "PatientName=&limit=&offset=&includefield=",
    }
    for name, q in table.items():
        seeds.put("qido_to_cfind", name, q)


def worklist(seeds: Seeds) -> None:
    """Worklist and workitem searches as viewers send them, and the MWL
    C-FIND identifiers modalities send (and the entries origins answer)."""
    table = {
        "mwl_station_today": "Modality=CT&ScheduledStationAETitle=CT1"
        "&ScheduledProcedureStepStartDate=20261203&includefield=all&limit=50",
        "mwl_path": "ScheduledProcedureStepSequence.ScheduledProcedureStepStartTime=0800-1200"
        "&PatientName=M%C3%BCller*&offset=10",
        "ups_codes": "ScheduledStationClassCodeSequence.CodeValue=MR"
        "&ScheduledStationNameCodeSequence.CodeValue=MR1&ProcedureStepState=SCHEDULED",
        "ups_datetime": "ScheduledProcedureStepStartDateTime=20261203080000-0500-20261203170000-0500"
        "&ScheduledProcedureStepPriority=HIGH&includefield=ReferencedRequestSequence",
        "match_pairs": "Yamada^Tarou=Yamada^Tarou=山田^太郎&0900-1000=093000&2026-2027=20261203",
    }
    for name, q in table.items():
        seeds.put("worklist_params", name, q)
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledStationAETitle = "CT1"
    step.ScheduledProcedureStepStartDate = "20261203"
    step.ScheduledProcedureStepStartTime = "0800-1200"
    step.ScheduledProcedureStepID = ""
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 100"
    query.PatientName = "M*"
    query.AccessionNumber = ""
    query.StudyInstanceUID = ""
    query.ScheduledProcedureStepSequence = Sequence([step])
    seeds.put("worklist_identifier", "modality_query", encode(query, False, True))
    entry = Dataset()
    entry.AccessionNumber = "ACC1"
    entry.PatientName = "Doe^Jane"
    entry.StudyInstanceUID = "1.2.3"
    done = Dataset()
    done.Modality = "CT"
    done.ScheduledStationAETitle = "CT1"
    done.ScheduledProcedureStepStartDate = "20261203"
    done.ScheduledProcedureStepStartTime = "093000"
    done.ScheduledProcedureStepID = "SPS1"
    entry.ScheduledProcedureStepSequence = Sequence([done])
    seeds.put("worklist_identifier", "entry", encode(entry, False, True))


def multipart(seeds: Seeds, files: dict[str, Path]) -> None:
    """A piece-size byte, the Content-Type line, the body (target format)."""
    parts = [files["mr"].read_bytes(), files["mr2"].read_bytes()]
    bodies = [
        ("stow", 6, 'multipart/related; type="application/dicom"; boundary=0f3cf5c0-d2cb-4aa9-8f5b-a0b1c2d3e4f5', "application/dicom", parts),
        ("stow_unquoted_type", 3, "multipart/related; type=application/dicom; boundary=\"pons 7e1f\"", "application/dicom", parts),
        ("stow_one_byte_pieces", 0, 'multipart/related; boundary=b; type="application/dicom"', "application/dicom", parts),
        ("frames", 4, 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1; boundary=frames', "application/octet-stream", [b"\x00\x01" * 64, b"\x02\x03" * 64]),
        ("metadata_json", 5, 'multipart/related; type="application/dicom+json"; boundary=meta', "application/dicom+json", [dcmread(files["mr"], stop_before_pixels=True).to_json().encode()[:2048], b"{}"]),
    ]
    for name, pick, content_type, part_type, content in bodies:
        encode_ct = content_type
        boundary = content_type.split("boundary=", 1)[1].split(";")[0].strip('"')
        if " " in boundary or "type=application" in content_type:
            encode_ct = f'multipart/related; type="{part_type}"; boundary={boundary}'
        body = DICOMwebClient._encode_multipart_message(content, encode_ct)
        seeds.put("multipart", name, bytes([pick]) + content_type.encode() + b"\r\n" + body)
    # Part headers of their own, and a preamble and epilogue.
    body = (
        b"preamble\r\n--x\r\nContent-Type: application/dicom\r\nContent-Location: /a\r\n"
        b"Content-Length: 4\r\n\r\nDICM\r\n--x\r\nContent-Type: application/dicom\r\n\r\n\r\n--x--\r\nepilogue"
    )
    seeds.put("multipart", "headers", b"\x02" + b'multipart/related; boundary="x"\n' + body)


def accepts(seeds: Seeds) -> None:
    table = {
        "ohif_frames": 'multipart/related; type="application/octet-stream"; transfer-syntax=*',
        "ohif_instances": 'multipart/related; type="application/dicom"; transfer-syntax=*',
        "dicom_json": "application/dicom+json",
        "json_fallback": "application/dicom+json, application/json;q=0.9, */*;q=0.1",
        "browser": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
        "rendered": "image/jpeg",
        "rendered_q": "image/png;q=0.5, image/jpeg;q=0.9, image/*;q=0.1",
        "instances_ts": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1, '
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50; q=0.5',
        "bulk": 'multipart/related; type="application/octet-stream", multipart/related; type="image/jls"; q=0.2',
        "two_headers": "application/dicom\n*/*;q=0",
        "quoted": 'multipart/related; type="application/dicom"; x="a,b;c\\"d"; q=1.000',
        "stow_content_type": 'multipart/related; type="application/dicom"; boundary="DICOMwebBoundary"',
        "stow_lenient": "multipart/related; type=application/dicom; boundary=abc; start=<1@x>",
    }
    for name, value in table.items():
        seeds.put("accept", name, value)


def main() -> int:
    parser = argparse.ArgumentParser()
    cache = Path(os.environ.get("PONS_CACHE", Path.home() / ".cache" / "pons"))
    parser.add_argument("--testdata", type=Path, default=cache / "testdata")
    args = parser.parse_args()
    files = real_files(args.testdata)
    root = FUZZ / "seeds"
    for t in TARGETS:
        shutil.rmtree(root / t, ignore_errors=True)
        (root / t).mkdir(parents=True)
    seeds = Seeds(root)
    dimse = messages(files)
    data_sets(seeds, files, dimse)
    pdus(seeds, dimse)
    part10(seeds, files)
    dicom_json(seeds, files)
    queries(seeds)
    worklist(seeds)
    multipart(seeds, files)
    accepts(seeds)
    print(f"make_seeds: {seeds.count} seeds, {seeds.bytes // 1024} KiB in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
