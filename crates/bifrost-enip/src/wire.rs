//! The byte fields every EtherNet/IP layer is made of: the shared little-endian
//! reader and writers, and a length patched in once known.

use bifrost_core::{Error, Result};

pub use bifrost_core::wire::{put_u16, put_u32, Reader};

/// Writes `value` little-endian at `at` of `out` (a length patched in once known).
pub fn patch_u16(out: &mut [u8], at: usize, value: usize) -> Result<()> {
    let value =
        u16::try_from(value).map_err(|_| Error::invalid_value(format!("{value} bytes do not fit a 16-bit length")))?;
    out[at..at + 2].copy_from_slice(&value.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_that_does_not_fit_is_refused() {
        let mut out = vec![0; 2];
        assert!(patch_u16(&mut out, 0, 70_000).is_err());
        patch_u16(&mut out, 0, 0x1234).unwrap();
        assert_eq!(out, [0x34, 0x12]);
    }
}
