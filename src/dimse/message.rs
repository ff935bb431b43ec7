//! Typed DIMSE command sets (PS3.7 §9.3, §10.3) to and from their Implicit VR
//! Little Endian encoding. The only home of command field numbers.

use crate::dicom::uid;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// (0000,0100) Command Field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandField {
    CStoreRq,
    CStoreRsp,
    CGetRq,
    CGetRsp,
    CFindRq,
    CFindRsp,
    CMoveRq,
    CMoveRsp,
    CEchoRq,
    CEchoRsp,
    NEventReportRq,
    NEventReportRsp,
    NActionRq,
    NActionRsp,
    CCancelRq,
}

impl CommandField {
    const TABLE: [(CommandField, u16); 15] = [
        (CommandField::CStoreRq, 0x0001),
        (CommandField::CStoreRsp, 0x8001),
        (CommandField::CGetRq, 0x0010),
        (CommandField::CGetRsp, 0x8010),
        (CommandField::CFindRq, 0x0020),
        (CommandField::CFindRsp, 0x8020),
        (CommandField::CMoveRq, 0x0021),
        (CommandField::CMoveRsp, 0x8021),
        (CommandField::CEchoRq, 0x0030),
        (CommandField::CEchoRsp, 0x8030),
        (CommandField::NEventReportRq, 0x0100),
        (CommandField::NEventReportRsp, 0x8100),
        (CommandField::NActionRq, 0x0130),
        (CommandField::NActionRsp, 0x8130),
        (CommandField::CCancelRq, 0x0FFF),
    ];

    /// The response field that answers this request field. Anything else
    /// gets C-STORE-RSP: a peer that sent nonsense reads only the status.
    pub fn response(self) -> CommandField {
        match self {
            CommandField::CFindRq => CommandField::CFindRsp,
            CommandField::CGetRq => CommandField::CGetRsp,
            CommandField::CMoveRq => CommandField::CMoveRsp,
            CommandField::NActionRq => CommandField::NActionRsp,
            CommandField::NEventReportRq => CommandField::NEventReportRsp,
            CommandField::CEchoRq => CommandField::CEchoRsp,
            _ => CommandField::CStoreRsp,
        }
    }

    pub fn code(self) -> u16 {
        Self::TABLE
            .iter()
            .find(|(f, _)| *f == self)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    pub fn from_code(code: u16) -> Option<CommandField> {
        Self::TABLE
            .iter()
            .find(|(_, c)| *c == code)
            .map(|(f, _)| *f)
    }

    pub fn is_response(self) -> bool {
        self.code() & 0x8000 != 0
    }

    /// N-ACTION-RQ names its target with the Requested SOP Class/Instance
    /// tags; every other message uses the Affected ones.
    fn uses_requested_uids(self) -> bool {
        self == CommandField::NActionRq
    }
}

/// (0000,0800) value meaning "no data set follows".
const NO_DATA_SET: u16 = 0x0101;
/// (0000,0800) value we send when a data set follows (any other value means the same).
const DATA_SET_PRESENT: u16 = 0x0000;

pub const PRIORITY_MEDIUM: u16 = 0x0000;

/// Sub-operation counts of C-GET/C-MOVE responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    pub remaining: Option<u16>,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
}

/// One DIMSE command set. Which fields are present depends on `field`; the
/// constructors below build each message with exactly its own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: CommandField,
    /// (0000,0110) on requests.
    pub message_id: Option<u16>,
    /// (0000,0120) on responses and C-CANCEL.
    pub responding_to: Option<u16>,
    /// Affected (0000,0002) or, for N-ACTION-RQ, Requested (0000,0003) SOP Class UID.
    pub sop_class_uid: Option<String>,
    /// Affected (0000,1000) or, for N-ACTION-RQ, Requested (0000,1001) SOP Instance UID.
    pub sop_instance_uid: Option<String>,
    pub priority: Option<u16>,
    pub has_data_set: bool,
    pub status: Option<u16>,
    pub error_comment: Option<String>,
    pub move_destination: Option<String>,
    /// (0000,1030) and (0000,1031) on C-STORE sub-operations of a C-MOVE.
    pub move_originator: Option<(String, u16)>,
    pub sub_operations: Option<SubOperations>,
    pub event_type_id: Option<u16>,
    pub action_type_id: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("command set cannot be decoded: {0}")]
    Decode(String),
    #[error("command set has no valid Command Field (0000,0100)")]
    NoCommandField,
    #[error("command set cannot be encoded: {0}")]
    Encode(String),
}

impl Command {
    fn bare(field: CommandField) -> Command {
        Command {
            field,
            message_id: None,
            responding_to: None,
            sop_class_uid: None,
            sop_instance_uid: None,
            priority: None,
            has_data_set: false,
            status: None,
            error_comment: None,
            move_destination: None,
            move_originator: None,
            sub_operations: None,
            event_type_id: None,
            action_type_id: None,
        }
    }

    fn request(field: CommandField, message_id: u16, sop_class_uid: &str) -> Command {
        Command {
            message_id: Some(message_id),
            sop_class_uid: Some(sop_class_uid.to_owned()),
            ..Command::bare(field)
        }
    }

    /// A response to `rq` carrying its message id and SOP class.
    fn response(field: CommandField, rq: &Command, status: u16) -> Command {
        Command {
            responding_to: rq.message_id,
            sop_class_uid: rq.sop_class_uid.clone(),
            status: Some(status),
            ..Command::bare(field)
        }
    }

    /// The matching response with a failure status and Error Comment.
    pub fn failure_response(rq: &Command, status: u16, comment: String) -> Command {
        Command {
            error_comment: Some(comment),
            ..Command::response(rq.field.response(), rq, status)
        }
    }

    pub fn c_echo_rq(message_id: u16) -> Command {
        Command::request(
            CommandField::CEchoRq,
            message_id,
            dicom_dictionary_std::uids::VERIFICATION,
        )
    }

    pub fn c_echo_rsp(rq: &Command, status: u16) -> Command {
        Command::response(CommandField::CEchoRsp, rq, status)
    }

    pub fn c_store_rq(message_id: u16, sop_class_uid: &str, sop_instance_uid: &str) -> Command {
        Command {
            sop_instance_uid: Some(sop_instance_uid.to_owned()),
            priority: Some(PRIORITY_MEDIUM),
            has_data_set: true,
            ..Command::request(CommandField::CStoreRq, message_id, sop_class_uid)
        }
    }

    pub fn c_store_rsp(rq: &Command, status: u16, error_comment: Option<String>) -> Command {
        Command {
            sop_instance_uid: rq.sop_instance_uid.clone(),
            error_comment,
            ..Command::response(CommandField::CStoreRsp, rq, status)
        }
    }

    pub fn c_find_rq(message_id: u16, sop_class_uid: &str) -> Command {
        Command {
            priority: Some(PRIORITY_MEDIUM),
            has_data_set: true,
            ..Command::request(CommandField::CFindRq, message_id, sop_class_uid)
        }
    }

    /// Pending responses carry an identifier; the final one usually not.
    pub fn c_find_rsp(rq: &Command, status: u16, has_data_set: bool) -> Command {
        Command {
            has_data_set,
            ..Command::response(CommandField::CFindRsp, rq, status)
        }
    }

    pub fn c_get_rq(message_id: u16, sop_class_uid: &str) -> Command {
        Command {
            priority: Some(PRIORITY_MEDIUM),
            has_data_set: true,
            ..Command::request(CommandField::CGetRq, message_id, sop_class_uid)
        }
    }

    pub fn c_move_rq(message_id: u16, sop_class_uid: &str, destination: &str) -> Command {
        Command {
            move_destination: Some(destination.to_owned()),
            ..Command::c_get_rq(message_id, sop_class_uid)
        }
        .with_field(CommandField::CMoveRq)
    }

    /// C-GET or C-MOVE response; the final one may carry the Failed SOP
    /// Instance UID List as its data set.
    pub fn retrieve_rsp(
        rq: &Command,
        status: u16,
        sub_operations: SubOperations,
        has_data_set: bool,
    ) -> Command {
        let field = if rq.field == CommandField::CMoveRq {
            CommandField::CMoveRsp
        } else {
            CommandField::CGetRsp
        };
        Command {
            sub_operations: Some(sub_operations),
            has_data_set,
            ..Command::response(field, rq, status)
        }
    }

    pub fn c_cancel_rq(message_id_being_cancelled: u16) -> Command {
        Command {
            responding_to: Some(message_id_being_cancelled),
            ..Command::bare(CommandField::CCancelRq)
        }
    }

    pub fn n_action_rq(
        message_id: u16,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        action_type_id: u16,
    ) -> Command {
        Command {
            sop_instance_uid: Some(sop_instance_uid.to_owned()),
            action_type_id: Some(action_type_id),
            has_data_set: true,
            ..Command::request(CommandField::NActionRq, message_id, sop_class_uid)
        }
    }

    pub fn n_action_rsp(rq: &Command, status: u16) -> Command {
        Command {
            sop_instance_uid: rq.sop_instance_uid.clone(),
            action_type_id: rq.action_type_id,
            ..Command::response(CommandField::NActionRsp, rq, status)
        }
    }

    pub fn n_event_report_rq(
        message_id: u16,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        event_type_id: u16,
    ) -> Command {
        Command {
            sop_instance_uid: Some(sop_instance_uid.to_owned()),
            event_type_id: Some(event_type_id),
            has_data_set: true,
            ..Command::request(CommandField::NEventReportRq, message_id, sop_class_uid)
        }
    }

    pub fn n_event_report_rsp(rq: &Command, status: u16) -> Command {
        Command {
            sop_instance_uid: rq.sop_instance_uid.clone(),
            event_type_id: rq.event_type_id,
            ..Command::response(CommandField::NEventReportRsp, rq, status)
        }
    }

    fn with_field(mut self, field: CommandField) -> Command {
        self.field = field;
        self
    }

    /// Encode as a command set in Implicit VR Little Endian, with (0000,0000).
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        let mut elements = Vec::with_capacity(16);
        let (class_tag, instance_tag) = if self.field.uses_requested_uids() {
            (
                tags::REQUESTED_SOP_CLASS_UID,
                tags::REQUESTED_SOP_INSTANCE_UID,
            )
        } else {
            (
                tags::AFFECTED_SOP_CLASS_UID,
                tags::AFFECTED_SOP_INSTANCE_UID,
            )
        };
        if let Some(uid) = &self.sop_class_uid {
            elements.push(ui(class_tag, uid));
        }
        elements.push(us(tags::COMMAND_FIELD, self.field.code()));
        if let Some(id) = self.message_id {
            elements.push(us(tags::MESSAGE_ID, id));
        }
        if let Some(id) = self.responding_to {
            elements.push(us(tags::MESSAGE_ID_BEING_RESPONDED_TO, id));
        }
        if let Some(dest) = &self.move_destination {
            elements.push(text(tags::MOVE_DESTINATION, VR::AE, dest));
        }
        if let Some(p) = self.priority {
            elements.push(us(tags::PRIORITY, p));
        }
        let data_set_type = if self.has_data_set {
            DATA_SET_PRESENT
        } else {
            NO_DATA_SET
        };
        elements.push(us(tags::COMMAND_DATA_SET_TYPE, data_set_type));
        if let Some(s) = self.status {
            elements.push(us(tags::STATUS, s));
        }
        if let Some(c) = &self.error_comment {
            // Error Comment is LO: at most 64 characters.
            let c: String = c.chars().take(64).collect();
            elements.push(text(tags::ERROR_COMMENT, VR::LO, &c));
        }
        if let Some(uid) = &self.sop_instance_uid {
            elements.push(ui(instance_tag, uid));
        }
        if let Some(e) = self.event_type_id {
            elements.push(us(tags::EVENT_TYPE_ID, e));
        }
        if let Some(a) = self.action_type_id {
            elements.push(us(tags::ACTION_TYPE_ID, a));
        }
        if let Some(n) = self.sub_operations {
            if let Some(r) = n.remaining {
                elements.push(us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS, r));
            }
            elements.push(us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, n.completed));
            elements.push(us(tags::NUMBER_OF_FAILED_SUBOPERATIONS, n.failed));
            elements.push(us(tags::NUMBER_OF_WARNING_SUBOPERATIONS, n.warning));
        }
        if let Some((ae, id)) = &self.move_originator {
            elements.push(text(
                tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE,
                VR::AE,
                ae,
            ));
            elements.push(us(tags::MOVE_ORIGINATOR_MESSAGE_ID, *id));
        }
        let obj = InMemDicomObject::command_from_element_iter(elements);
        let mut out = Vec::with_capacity(256);
        obj.write_dataset_with_ts(&mut out, implicit_vr_le())
            .map_err(|e| MessageError::Encode(e.to_string()))?;
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, MessageError> {
        let obj = crate::dicom::lengths::read_dataset(bytes, implicit_vr_le())
            .map_err(MessageError::Decode)?;
        let field = get_us(&obj, tags::COMMAND_FIELD)
            .and_then(CommandField::from_code)
            .ok_or(MessageError::NoCommandField)?;
        let (class_tag, instance_tag) = if field.uses_requested_uids() {
            (
                tags::REQUESTED_SOP_CLASS_UID,
                tags::REQUESTED_SOP_INSTANCE_UID,
            )
        } else {
            (
                tags::AFFECTED_SOP_CLASS_UID,
                tags::AFFECTED_SOP_INSTANCE_UID,
            )
        };
        let sub_operations = get_us(&obj, tags::NUMBER_OF_COMPLETED_SUBOPERATIONS)
            .or(get_us(&obj, tags::NUMBER_OF_REMAINING_SUBOPERATIONS))
            .map(|_| SubOperations {
                remaining: get_us(&obj, tags::NUMBER_OF_REMAINING_SUBOPERATIONS),
                completed: get_us(&obj, tags::NUMBER_OF_COMPLETED_SUBOPERATIONS).unwrap_or(0),
                failed: get_us(&obj, tags::NUMBER_OF_FAILED_SUBOPERATIONS).unwrap_or(0),
                warning: get_us(&obj, tags::NUMBER_OF_WARNING_SUBOPERATIONS).unwrap_or(0),
            });
        let move_originator = get_str(&obj, tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE)
            .filter(|ae| !ae.is_empty())
            .map(|ae| {
                let id = get_us(&obj, tags::MOVE_ORIGINATOR_MESSAGE_ID).unwrap_or(0);
                (ae, id)
            });
        Ok(Command {
            field,
            message_id: get_us(&obj, tags::MESSAGE_ID),
            responding_to: get_us(&obj, tags::MESSAGE_ID_BEING_RESPONDED_TO),
            sop_class_uid: get_str(&obj, class_tag),
            sop_instance_uid: get_str(&obj, instance_tag),
            priority: get_us(&obj, tags::PRIORITY),
            has_data_set: get_us(&obj, tags::COMMAND_DATA_SET_TYPE) != Some(NO_DATA_SET),
            status: get_us(&obj, tags::STATUS),
            error_comment: get_str(&obj, tags::ERROR_COMMENT),
            move_destination: get_str(&obj, tags::MOVE_DESTINATION),
            move_originator,
            sub_operations,
            event_type_id: get_us(&obj, tags::EVENT_TYPE_ID),
            action_type_id: get_us(&obj, tags::ACTION_TYPE_ID),
        })
    }
}

fn implicit_vr_le() -> &'static dicom_encoding::TransferSyntax {
    TransferSyntaxRegistry
        .get(dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN)
        .expect("Implicit VR LE is always registered")
}

fn us(tag: Tag, value: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

fn ui(tag: Tag, uid: &str) -> DataElement<InMemDicomObject> {
    text(tag, VR::UI, uid)
}

fn text(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn get_us(obj: &InMemDicomObject, tag: Tag) -> Option<u16> {
    obj.get(tag)?.to_int::<u16>().ok()
}

fn get_str(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?;
    Some(uid::trim(&s).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    const STUDY_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    const STUDY_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
    const STUDY_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
    const STGCMT: &str = "1.2.840.10008.1.20.1";
    const STGCMT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";

    fn round_trip(cmd: Command) -> Command {
        let bytes = cmd.encode().unwrap();
        // Group length first, then even length (PS3.7 §6.3.1).
        assert_eq!(&bytes[..4], &[0, 0, 0, 0]);
        assert_eq!(bytes.len() % 2, 0);
        let back = Command::decode(&bytes).unwrap();
        assert_eq!(back, cmd);
        back
    }

    #[test]
    fn c_echo_round_trips() {
        let rq = round_trip(Command::c_echo_rq(7));
        let rsp = round_trip(Command::c_echo_rsp(&rq, 0));
        assert_eq!(rsp.responding_to, Some(7));
        assert!(!rsp.has_data_set);
    }

    #[test]
    fn c_store_round_trips() {
        let mut rq = Command::c_store_rq(3, CT, "1.2.3.4");
        rq.move_originator = Some(("MOVER".into(), 9));
        let rq = round_trip(rq);
        assert!(rq.has_data_set);
        let rsp = round_trip(Command::c_store_rsp(&rq, 0xA700, Some("disk full".into())));
        assert_eq!(rsp.sop_instance_uid.as_deref(), Some("1.2.3.4"));
        assert_eq!(rsp.error_comment.as_deref(), Some("disk full"));
    }

    #[test]
    fn c_find_round_trips() {
        let rq = round_trip(Command::c_find_rq(1, STUDY_FIND));
        round_trip(Command::c_find_rsp(&rq, 0xFF00, true));
        round_trip(Command::c_find_rsp(&rq, 0x0000, false));
    }

    #[test]
    fn c_get_and_c_move_round_trip() {
        let get = round_trip(Command::c_get_rq(2, STUDY_GET));
        let counts = SubOperations {
            remaining: Some(5),
            completed: 3,
            failed: 1,
            warning: 0,
        };
        let rsp = round_trip(Command::retrieve_rsp(&get, 0xFF00, counts, false));
        assert_eq!(rsp.field, CommandField::CGetRsp);
        let mv = round_trip(Command::c_move_rq(4, STUDY_MOVE, "STORESCP"));
        assert_eq!(mv.move_destination.as_deref(), Some("STORESCP"));
        let final_counts = SubOperations {
            remaining: None,
            ..counts
        };
        let rsp = round_trip(Command::retrieve_rsp(&mv, 0xB000, final_counts, true));
        assert_eq!(rsp.field, CommandField::CMoveRsp);
    }

    #[test]
    fn c_cancel_round_trips() {
        let c = round_trip(Command::c_cancel_rq(11));
        assert_eq!(c.responding_to, Some(11));
    }

    #[test]
    fn n_action_round_trips_with_requested_uids() {
        let rq = Command::n_action_rq(5, STGCMT, STGCMT_INSTANCE, 1);
        let bytes = rq.encode().unwrap();
        let obj = InMemDicomObject::read_dataset_with_ts(&bytes[..], implicit_vr_le()).unwrap();
        assert!(obj.get(tags::REQUESTED_SOP_CLASS_UID).is_some());
        assert!(obj.get(tags::AFFECTED_SOP_CLASS_UID).is_none());
        let rq = round_trip(rq);
        round_trip(Command::n_action_rsp(&rq, 0));
    }

    #[test]
    fn n_event_report_round_trips() {
        let rq = round_trip(Command::n_event_report_rq(6, STGCMT, STGCMT_INSTANCE, 2));
        let rsp = round_trip(Command::n_event_report_rsp(&rq, 0));
        assert_eq!(rsp.event_type_id, Some(2));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Command::decode(&[1, 2, 3]).is_err());
        assert!(Command::decode(&[]).is_err());
    }
}
