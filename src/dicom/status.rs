//! Status codes (PS3.7 Annex C, PS3.4 per service class) and the Failure
//! and Warning Reasons that share their code space (PS3.3 C.14.1.1, PS3.18
//! Table I.2-2): one table of what each means, as pynetdicom's `status.py`.

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
    /// STOW-RS Failure Reason: the instance's transfer syntax is not supported.
    pub const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;
    pub const ELEMENTS_DISCARDED: u16 = 0xB006;
    pub const DATA_SET_MISMATCH_WARNING: u16 = 0xB007;
}

/// Query/Retrieve (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4).
pub mod query_retrieve {
    /// Refused: Out of Resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Refused: Out of Resources – Unable to perform sub-operations.
    pub const NONE_SUCCEEDED: u16 = 0xA702;
    /// The same code, given before any sub-operation: there would be too many.
    pub const TOO_MANY_SUB_OPERATIONS: u16 = 0xA702;
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
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    pub const NO_SUCH_INSTANCE: u16 = 0x0112;
    pub const NO_SUCH_EVENT_TYPE: u16 = 0x0113;
    pub const INVALID_ARGUMENT_VALUE: u16 = 0x0115;
    pub const INVALID_OBJECT_INSTANCE: u16 = 0x0117;
    pub const NO_SUCH_SOP_CLASS: u16 = 0x0118;
    pub const NO_SUCH_ACTION: u16 = 0x0123;
    pub const RESOURCE_LIMITATION: u16 = 0x0213;
    pub const DUPLICATE_TRANSACTION: u16 = 0x0131;
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

use StatusKind::*;

/// (first code, last code, kind, meaning): the first row that holds a code
/// wins, so single codes come before the ranges around them. Meanings are
/// for logs, Error Comments and job errors. B000 is C-STORE's reading; for
/// C-GET/C-MOVE it means "sub-operations complete with failures".
const TABLE: &[(u16, u16, StatusKind, &str)] = &[
    (SUCCESS, SUCCESS, Success, "success"),
    (PENDING, PENDING, Pending, "pending"),
    (
        PENDING_WARNING,
        PENDING_WARNING,
        Pending,
        "pending: optional keys not supported",
    ),
    (CANCEL, CANCEL, Cancel, "cancelled"),
    (
        0x0001,
        0x0001,
        Warning,
        "warning: optional attributes not supported",
    ),
    (0x0107, 0x0107, Warning, "warning: attribute list error"),
    (
        0x0116,
        0x0116,
        Warning,
        "warning: attribute value out of range",
    ),
    (0x0110, 0x0110, Failure, "processing failure"),
    (0x0111, 0x0111, Failure, "duplicate SOP instance"),
    (0x0112, 0x0112, Failure, "no such object instance"),
    (0x0113, 0x0113, Failure, "no such event type"),
    (0x0115, 0x0115, Failure, "invalid argument value"),
    (0x0117, 0x0117, Failure, "invalid object instance"),
    (0x0118, 0x0118, Failure, "no such SOP class"),
    (0x0119, 0x0119, Failure, "class-instance conflict"),
    (0x0122, 0x0122, Failure, "SOP class not supported"),
    (0x0123, 0x0123, Failure, "no such action"),
    (0x0124, 0x0124, Failure, "refused: not authorized"),
    (0x0131, 0x0131, Failure, "duplicate transaction UID"),
    (0x0210, 0x0210, Failure, "duplicate invocation"),
    (0x0211, 0x0211, Failure, "unrecognized operation"),
    (0x0212, 0x0212, Failure, "mistyped argument"),
    (0x0213, 0x0213, Failure, "resource limitation"),
    (
        0xA702,
        0xA702,
        Failure,
        "refused: out of resources, unable to perform sub-operations",
    ),
    (0xA801, 0xA801, Failure, "refused: move destination unknown"),
    (0xA700, 0xA7FF, Failure, "refused: out of resources"),
    (0xA900, 0xA9FF, Failure, "data set does not match SOP class"),
    (
        0xB000,
        0xB000,
        Warning,
        "warning: coercion of data elements",
    ),
    (0xB006, 0xB006, Warning, "warning: elements discarded"),
    (
        0xB007,
        0xB007,
        Warning,
        "warning: data set does not match SOP class",
    ),
    (0xB000, 0xBFFF, Warning, "warning"),
    (0xC122, 0xC122, Failure, "transfer syntax not supported"),
    (0xC000, 0xCFFF, Failure, "cannot understand"),
];

fn row(code: u16) -> Option<&'static (u16, u16, StatusKind, &'static str)> {
    TABLE
        .iter()
        .find(|(first, last, _, _)| (*first..=*last).contains(&code))
}

/// How a status reads: anything unknown is a failure.
pub fn kind(status: u16) -> StatusKind {
    row(status).map_or(Failure, |r| r.2)
}

/// Human words for a status, Failure Reason or Warning Reason.
pub fn meaning(code: u16) -> &'static str {
    row(code).map_or("unknown reason", |r| r.3)
}

/// The warning to pass on for a code given as a warning: C-STORE's warnings
/// (B000, B006, B007…) as they are; anything else reads as coercion.
pub fn as_warning(code: u16) -> u16 {
    if (0xB000..=0xBFFF).contains(&code) {
        code
    } else {
        storage::COERCION
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
        assert_eq!(kind(0x0112), StatusKind::Failure);
        assert_eq!(kind(0x1234), StatusKind::Failure);
    }

    #[test]
    fn says_what_codes_mean() {
        assert_eq!(meaning(0xA7FE), "refused: out of resources");
        assert_eq!(meaning(0xC122), "transfer syntax not supported");
        assert_eq!(meaning(0xC001), "cannot understand");
        assert_eq!(meaning(0x0122), "SOP class not supported");
        assert_eq!(meaning(0xB006), "warning: elements discarded");
        assert_eq!(meaning(0x9999), "unknown reason");
        assert_eq!(as_warning(0xB007), 0xB007);
        assert_eq!(as_warning(0x0001), 0xB000);
    }
}
