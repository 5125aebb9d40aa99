//! The one reader of fixed-offset little-endian fields, for every binary
//! layout nvkv writes itself (log records, checkpoints, the superblock,
//! snapshot references, backups, Raft's vote slot). The layouts live with
//! their formats; this module must never define one.
//!
//! The caller checks the length before it reads (every format does, and
//! names what is short): a field past the end is a broken invariant, and
//! panics.

/// The `u16` at byte `offset` of `bytes`.
pub fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(field(bytes, offset))
}

/// The `u32` at byte `offset` of `bytes`.
pub fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(field(bytes, offset))
}

/// The `u64` at byte `offset` of `bytes`.
pub fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(field(bytes, offset))
}

fn field<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    match bytes.get(offset..offset + N) {
        Some(field) => field.try_into().expect("a slice of N bytes"),
        None => panic!("a {N}-byte field at offset {offset} is past the end of {} bytes", bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_little_endian_at_their_offset() {
        let bytes = [0xff, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        assert_eq!(u16_at(&bytes, 1), 0x0201);
        assert_eq!(u32_at(&bytes, 1), 0x0403_0201);
        assert_eq!(u64_at(&bytes, 1), 0x0807_0605_0403_0201);
    }

    #[test]
    #[should_panic(expected = "a 4-byte field at offset 6 is past the end of 9 bytes")]
    fn a_field_past_the_end_is_a_broken_invariant() {
        u32_at(&[0; 9], 6);
    }
}
