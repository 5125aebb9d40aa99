//! The little-endian building blocks of nvkv's hand-written binary formats
//! (snapshots, log commands): a writer, and a reader that never reads past
//! its bytes and names the offset of whatever it refuses.
//!
//! Formats own their layouts; this module must never define one.

/// Bytes a reader refused: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub(crate) offset: usize,
    pub(crate) reason: String,
}

#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) bytes: Vec<u8>,
}

impl Writer {
    /// A writer whose buffer holds `bytes` before it grows: the formats
    /// that know their size up front say so, and pay one allocation.
    pub(crate) fn with_capacity(bytes: usize) -> Writer {
        Writer { bytes: Vec::with_capacity(bytes) }
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }
    pub(crate) fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub(crate) fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }
    pub(crate) fn blob(&mut self, value: &[u8]) {
        let bytes = u32::try_from(value.len()).expect("keys and values are far below 4 GiB");
        self.u32(bytes);
        self.bytes.extend_from_slice(value);
    }

    /// Writes a section: its header, then what `payload` writes, then the
    /// payload's length back into the header.
    pub(crate) fn section(&mut self, tag: u32, payload: impl FnOnce(&mut Writer)) {
        self.u32(tag);
        let length_at = self.bytes.len();
        self.u64(0);
        payload(self);
        let length = (self.bytes.len() - length_at - 8) as u64;
        self.bytes[length_at..length_at + 8].copy_from_slice(&length.to_le_bytes());
    }
}

pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn malformed(&self, reason: impl Into<String>) -> Malformed {
        Malformed { offset: self.offset, reason: reason.into() }
    }

    pub(crate) fn take(&mut self, count: usize, what: &str) -> Result<&'a [u8], Malformed> {
        let remaining = self.bytes.len() - self.offset;
        if count > remaining {
            return Err(self.malformed(format!("{what} needs {count} bytes but {remaining} remain")));
        }
        let taken = &self.bytes[self.offset..self.offset + count];
        self.offset += count;
        Ok(taken)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Malformed> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn i64(&mut self, what: &str) -> Result<i64, Malformed> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn bool(&mut self, what: &str) -> Result<bool, Malformed> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.malformed(format!("{what} is {other}, neither 0 nor 1"))),
        }
    }
    pub(crate) fn blob(&mut self, what: &str) -> Result<Vec<u8>, Malformed> {
        Ok(self.blob_slice(what)?.to_vec())
    }
    /// A blob, borrowed from the bytes read.
    pub(crate) fn blob_slice(&mut self, what: &str) -> Result<&'a [u8], Malformed> {
        let bytes = self.u32(what)? as usize;
        self.take(bytes, what)
    }

    pub(crate) fn done(&self) -> bool {
        self.offset == self.bytes.len()
    }

    /// The payload of the next section, which must carry `tag`.
    pub(crate) fn section(&mut self, tag: u32, name: &str) -> Result<Reader<'a>, Malformed> {
        let found = self.u32("a section tag")?;
        if found != tag {
            return Err(self.malformed(format!("expected the {name} section (tag {tag}), found tag {found}")));
        }
        let length = self.u64("a section length")?;
        let length =
            usize::try_from(length).map_err(|_| self.malformed(format!("section length {length}")))?;
        let start = self.offset;
        let payload = self.take(length, name)?;
        Ok(Reader { bytes: &self.bytes[..start + payload.len()], offset: start })
    }
}
