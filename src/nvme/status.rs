//! NVMe completion status: the status code type and status code a device
//! returns for a failed command, named the way the NVMe base specification
//! names them so an operator can look them up.
//!
//! This module only decodes; it never decides what a failure means for the
//! data (every device status fails the command, see `NvmeError`).

use std::fmt;

/// The status field of a failed NVMe completion (status code type, status
/// code), as the device returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NvmeStatus {
    pub status_code_type: u8,
    pub status_code: u8,
}

impl NvmeStatus {
    /// Decodes the 16-bit status field of a completion queue entry (its
    /// phase tag in bit 0, status code in bits 1..9, type in bits 9..12).
    /// `None` for success.
    pub fn from_completion_field(field: u16) -> Option<NvmeStatus> {
        let status_code = ((field >> 1) & 0xff) as u8;
        let status_code_type = ((field >> 9) & 0x7) as u8;
        (status_code != 0 || status_code_type != 0).then_some(NvmeStatus { status_code_type, status_code })
    }

    fn type_name(self) -> &'static str {
        match self.status_code_type {
            0 => "generic command status",
            1 => "command specific status",
            2 => "media and data integrity error",
            3 => "path related status",
            7 => "vendor specific",
            _ => "reserved status code type",
        }
    }

    fn code_name(self) -> Option<&'static str> {
        let name = match (self.status_code_type, self.status_code) {
            (0, 0x01) => "invalid command opcode",
            (0, 0x02) => "invalid field in command",
            (0, 0x04) => "data transfer error",
            (0, 0x05) => "commands aborted due to power loss notification",
            (0, 0x06) => "internal error",
            (0, 0x07) => "command abort requested",
            (0, 0x08) => "command aborted due to SQ deletion",
            (0, 0x0b) => "invalid namespace or format",
            (0, 0x80) => "LBA out of range",
            (0, 0x81) => "capacity exceeded",
            (0, 0x82) => "namespace not ready",
            (1, 0x80) => "conflicting attributes",
            (1, 0x82) => "attempted write to read only range",
            (2, 0x80) => "write fault",
            (2, 0x81) => "unrecovered read error",
            (2, 0x82) => "end-to-end guard check error",
            (2, 0x86) => "access denied",
            (2, 0x87) => "deallocated or unwritten logical block",
            (3, 0x00) => "internal path error",
            (3, 0x01) => "asymmetric access persistent loss",
            (3, 0x02) => "asymmetric access inaccessible",
            (3, 0x60) => "controller pathing error",
            (3, 0x70) => "host pathing error",
            (3, 0x71) => "command aborted by host",
            _ => return None,
        };
        Some(name)
    }
}

impl fmt::Display for NvmeStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "type {:#x} ({}) code {:#04x}",
            self.status_code_type,
            self.type_name(),
            self.status_code
        )?;
        if let Some(name) = self.code_name() {
            write!(formatter, " ({name})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_decodes_to_none_whatever_the_phase() {
        assert_eq!(NvmeStatus::from_completion_field(0), None);
        assert_eq!(NvmeStatus::from_completion_field(1), None, "bit 0 is the phase tag");
    }

    #[test]
    fn type_and_code_are_taken_from_their_bits() {
        // A write fault: type 2, code 0x80, with the phase bit and DNR set.
        let field = 1 | (0x80 << 1) | (2 << 9) | (1 << 15);
        let status = NvmeStatus::from_completion_field(field).expect("an error");
        assert_eq!(status, NvmeStatus { status_code_type: 2, status_code: 0x80 });
        assert_eq!(status.to_string(), "type 0x2 (media and data integrity error) code 0x80 (write fault)");
        let unknown = NvmeStatus { status_code_type: 7, status_code: 0xc3 };
        assert_eq!(unknown.to_string(), "type 0x7 (vendor specific) code 0xc3");
    }
}
