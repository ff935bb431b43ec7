//! DIMSE status codes (PS3.7 Annex C, PS3.4 per service class), one table.

pub const SUCCESS: u16 = 0x0000;
pub const PENDING: u16 = 0xFF00;
pub const PENDING_WARNING: u16 = 0xFF01;
pub const CANCEL: u16 = 0xFE00;

/// Storage (PS3.4 B.2.3).
pub mod storage {
    /// Refused: Out of Resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: Data Set does not match SOP Class.
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: Cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Warning: Coercion of Data Elements.
    pub const COERCION: u16 = 0xB000;
    pub const ELEMENTS_DISCARDED: u16 = 0xB006;
    pub const DATA_SET_MISMATCH_WARNING: u16 = 0xB007;
}

/// Query/Retrieve (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4).
pub mod query_retrieve {
    /// Refused: Out of Resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Refused: Out of Resources – Unable to perform sub-operations.
    pub const NONE_SUCCEEDED: u16 = 0xA702;
    /// Refused: Move Destination unknown.
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// Error: Identifier does not match SOP Class.
    pub const IDENTIFIER_MISMATCH: u16 = 0xA900;
    /// Failed: Unable to process.
    pub const UNABLE_TO_PROCESS: u16 = 0xC000;
    /// Warning: Sub-operations complete, one or more failures or warnings.
    pub const SOME_FAILED: u16 = 0xB000;
}

/// General failures (PS3.7 C.4, C.5).
pub mod general {
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    pub const MISTYPED_ARGUMENT: u16 = 0x0212;
    pub const NO_SUCH_EVENT_TYPE: u16 = 0x0113;
    pub const INVALID_ARGUMENT_VALUE: u16 = 0x0115;
    pub const INVALID_OBJECT_INSTANCE: u16 = 0x0117;
    pub const NO_SUCH_SOP_CLASS: u16 = 0x0118;
    pub const NO_SUCH_ACTION: u16 = 0x0123;
    pub const RESOURCE_LIMITATION: u16 = 0x0213;
}

/// How a status reads to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Success,
    Warning,
    Pending,
    Cancel,
    Failure,
}

pub fn kind(status: u16) -> StatusKind {
    match status {
        SUCCESS => StatusKind::Success,
        PENDING | PENDING_WARNING => StatusKind::Pending,
        CANCEL => StatusKind::Cancel,
        0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusKind::Warning,
        _ => StatusKind::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        assert_eq!(kind(0x0000), StatusKind::Success);
        assert_eq!(kind(0xFF00), StatusKind::Pending);
        assert_eq!(kind(0xB000), StatusKind::Warning);
        assert_eq!(kind(0xA700), StatusKind::Failure);
        assert_eq!(kind(0xC000), StatusKind::Failure);
        assert_eq!(kind(0xFE00), StatusKind::Cancel);
    }
}
