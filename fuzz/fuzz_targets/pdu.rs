//! Bytes off the DIMSE socket: dicom-ul's PDU reader as the listener runs it
//! (strict, our max PDU), and Pons's own `PduReader` (the retrieve loop's)
//! over the same bytes, command PDVs from both reassembled into commands.
#![no_main]
use dicom_ul::pdu::{read_pdu, PDataValue, PDataValueType, Pdu};
use libfuzzer_sys::fuzz_target;
use pons::dimse::pdv::{CommandAssembler, PduReader, RawPdu};

fuzz_target!(|data: &[u8]| {
    let mut commands = CommandAssembler::default();
    let mut cursor = std::io::Cursor::new(data);
    while let Ok(Some(pdu)) = read_pdu(&mut cursor, 131072, true) {
        if let Pdu::PData { data } = pdu {
            for pdv in data {
                if pdv.value_type == PDataValueType::Command && commands.push(pdv).is_err() {
                    commands = CommandAssembler::default();
                }
            }
        }
    }

    let mut commands = CommandAssembler::default();
    let mut reader = PduReader::default();
    let mut wire = data;
    futures::executor::block_on(async {
        while let Ok(pdu) = reader.next(&mut wire).await {
            let RawPdu::PData(values) = pdu else { continue };
            for (pc, is_command, is_last, bytes) in values {
                if !is_command {
                    continue;
                }
                let pdv = PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Command,
                    is_last,
                    data: bytes.to_vec(),
                };
                if commands.push(pdv).is_err() {
                    commands = CommandAssembler::default();
                }
            }
        }
    });
});
