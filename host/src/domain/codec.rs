//! The length-prefixed binary layout Sluice's own encodings share: integers little-endian, a
//! byte string as its length (u32) then its bytes, `u32::MAX` for an absent one.

/// Appends fields to a buffer.
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    pub fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub fn i32(&mut self, value: i32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// A count of what follows (at most `u32::MAX - 1`: every caller writes far fewer).
    pub fn len(&mut self, len: usize) {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX - 1));
    }

    pub fn bytes(&mut self, value: Option<&[u8]>) {
        match value {
            Some(v) => {
                self.len(v.len());
                self.0.extend_from_slice(v);
            }
            None => self.u32(u32::MAX),
        }
    }

    pub fn text(&mut self, value: Option<&str>) {
        self.bytes(value.map(str::as_bytes));
    }
}

/// Takes fields off the front of a buffer; every error names what was cut short.
pub struct Reader<'a> {
    pub input: &'a [u8],
    /// What is being read, for errors ("record batch").
    pub what: &'static str,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .input
            .split_first_chunk::<N>()
            .ok_or_else(|| format!("truncated {}", self.what))?;
        self.input = rest;
        Ok(*head)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        self.take::<4>().map(u32::from_le_bytes)
    }

    pub fn i32(&mut self) -> Result<i32, String> {
        self.take::<4>().map(i32::from_le_bytes)
    }

    pub fn i64(&mut self) -> Result<i64, String> {
        self.take::<8>().map(i64::from_le_bytes)
    }

    pub fn bytes(&mut self) -> Result<Option<&'a [u8]>, String> {
        let len = self.u32()?;
        if len == u32::MAX {
            return Ok(None);
        }
        let len = len as usize;
        if self.input.len() < len {
            return Err(format!("truncated {}", self.what));
        }
        let (value, rest) = self.input.split_at(len);
        self.input = rest;
        Ok(Some(value))
    }

    pub fn optional_text(&mut self) -> Result<Option<String>, String> {
        self.bytes()?
            .map(|v| {
                std::str::from_utf8(v)
                    .map(str::to_string)
                    .map_err(|_| format!("a text field of a {} that is not UTF-8", self.what))
            })
            .transpose()
    }

    pub fn text(&mut self) -> Result<String, String> {
        self.optional_text()?
            .ok_or_else(|| format!("a missing text field in a {}", self.what))
    }

    /// The end: nothing may follow.
    pub fn done(&self) -> Result<(), String> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(format!("trailing bytes after a {}", self.what))
        }
    }
}
