//! Turning block images into tag values: one typed value per tag, or flat
//! `f64` columns for prepared plans. `ReplyDecoder` applies the same decoding
//! to read replies that arrived by some other path than a `Client`.

use bifrost_core::{
    decode_element, decode_string, elements_f64, registers_per_element, ByteOrder, DataType, Error, Result, Value,
};

use bifrost_engine::Columns;

use crate::pdu::{self, Response};
use crate::tag::{ModbusTag, Table};
use crate::tcp;

/// Decodes every tag into columns; `slots` gives each tag's image and its offset in it, in table units.
pub fn columns<'a>(tags: &[ModbusTag], slots: impl IntoIterator<Item = Result<(&'a [u8], u32)>>) -> Columns {
    let mut out = columns_for(tags);
    let errors = &mut out.errors;
    decode_into(tags, slots, &mut out.values, |tag, e| errors.push((tag as u32, e)));
    out
}

/// Columns shaped for `tags`, every tag good and zero until decoded.
pub fn columns_for(tags: &[ModbusTag]) -> Columns {
    let mut offsets = Vec::with_capacity(tags.len() + 1);
    offsets.push(0);
    for tag in tags {
        offsets.push(offsets[offsets.len() - 1] + tag.elements() as u32);
    }
    Columns { values: vec![0.0; offsets[tags.len()] as usize], offsets, errors: Vec::new() }
}

/// Decodes every tag's elements into `out`, back to back (`out` holds exactly
/// their count); a tag that fails is NaN and goes to `failed` with its position.
fn decode_into<'a>(
    tags: &[ModbusTag],
    slots: impl IntoIterator<Item = Result<(&'a [u8], u32)>>,
    out: &mut [f64],
    mut failed: impl FnMut(usize, Error),
) {
    let mut at = 0;
    for (index, (tag, slot)) in tags.iter().zip(slots).enumerate() {
        let values = &mut out[at..at + tag.elements()];
        at += tag.elements();
        if let Err(e) = slot.and_then(|(image, offset)| decode_tag_f64(tag, image, offset, values)) {
            values.fill(f64::NAN);
            failed(index, e);
        }
    }
}

/// Decodes one tag from its block image.
pub fn decode_tag(tag: &ModbusTag, image: &[u8], offset: u32) -> Result<Value> {
    let element = |i: usize| -> Result<Value> {
        if tag.table.is_bit() {
            let bit = image.get(offset as usize + i).ok_or_else(|| Error::proto("short image"))?;
            return Ok(Value::Bool(*bit != 0));
        }
        let size = tag.element_span() as usize * 2;
        let start = offset as usize * 2 + i * size;
        let bytes = image.get(start..start + size).ok_or_else(|| Error::proto("short image"))?;
        match (tag.bit, tag.data_type) {
            (Some(bit), _) => {
                let Value::UInt(word) = decode_element(bytes, DataType::Uint, tag.byte_order)? else {
                    return Err(Error::proto("register did not decode as UINT"));
                };
                Ok(Value::Bool(word >> bit & 1 == 1))
            }
            (None, DataType::String) => {
                Ok(Value::String(decode_string(bytes, usize::from(tag.string_length), tag.byte_order)))
            }
            (None, ty) => decode_element(bytes, ty, tag.byte_order),
        }
    };
    match tag.count {
        None => element(0),
        Some(n) => (0..n as usize).map(element).collect::<Result<Vec<_>>>().map(Value::Array),
    }
}

/// Decodes one tag's elements into `out`, which holds exactly their count.
fn decode_tag_f64(tag: &ModbusTag, image: &[u8], offset: u32, out: &mut [f64]) -> Result<()> {
    if tag.data_type == DataType::String {
        return Err(Error::address(format!("STRING tag '{tag}' has no numeric column")));
    }
    if tag.table.is_bit() || tag.bit.is_some() {
        // Bits are rare in hot loops; reuse the typed decoder.
        return match decode_tag(tag, image, offset)? {
            Value::Array(items) => {
                for (slot, item) in out.iter_mut().zip(&items) {
                    *slot = matches!(item, Value::Bool(true)) as u8 as f64;
                }
                Ok(())
            }
            v => {
                out[0] = matches!(v, Value::Bool(true)) as u8 as f64;
                Ok(())
            }
        };
    }
    let size = tag.element_span() as usize * 2;
    let start = offset as usize * 2;
    let bytes = image.get(start..start + size * tag.elements()).ok_or_else(|| Error::proto("short image"))?;
    elements_f64(bytes, tag.data_type, tag.byte_order, out);
    Ok(())
}

/// Decodes tags out of Modbus TCP read replies captured elsewhere (a sniffer,
/// a gateway's own transport): the reply must answer a read of the tags'
/// table starting at `start`, since a reply does not carry its address.
#[derive(Debug, Clone)]
pub struct ReplyDecoder {
    tags: Vec<ModbusTag>,
    table: Table,
    start: u16,
    /// The tags as runs of like elements, when every tag is a plain number in
    /// registers: a reply long enough for all of them decodes run by run.
    runs: Option<Runs>,
}

/// Neighbouring tags of one kind in one image, decoded by one loop.
#[derive(Debug, Clone)]
struct Run {
    image: u32,
    /// Byte offset of the first element in the image.
    at: usize,
    elements: usize,
    /// Where the run's values go in the output.
    out_at: usize,
    kind: RunKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RunKind {
    /// Numbers in registers.
    Registers(DataType, ByteOrder),
    /// Coils or discrete inputs: one byte per bit in the image.
    Bits,
}

impl RunKind {
    fn element_bytes(self) -> usize {
        match self {
            RunKind::Registers(data_type, _) => registers_per_element(data_type) * 2,
            RunKind::Bits => 1,
        }
    }
}

/// Tags as runs of like elements: when every image is long enough, a read
/// decodes run by run, one loop per type, with no work per tag.
#[derive(Debug, Clone)]
pub struct Runs {
    runs: Vec<Run>,
}

impl Runs {
    /// `placed` gives each tag, in order, with its image and its offset in it in
    /// table units. `None` when a tag has no run (a bit of a register, a STRING).
    pub fn of<'a>(placed: impl Iterator<Item = (&'a ModbusTag, u32, u32)>) -> Option<Runs> {
        let mut runs: Vec<Run> = Vec::new();
        let mut out_at = 0;
        for (tag, image, offset) in placed {
            let kind = match (tag.table.is_bit(), tag.bit, tag.data_type) {
                (true, _, _) => RunKind::Bits,
                (false, None, data_type) if data_type != DataType::String => {
                    RunKind::Registers(data_type, tag.byte_order)
                }
                _ => return None,
            };
            let at = if tag.table.is_bit() { offset as usize } else { offset as usize * 2 };
            let elements = tag.elements();
            match runs.last_mut() {
                Some(run)
                    if (run.image, run.kind) == (image, kind) && run.at + kind.element_bytes() * run.elements == at =>
                {
                    run.elements += elements
                }
                _ => runs.push(Run { image, at, elements, out_at, kind }),
            }
            out_at += elements;
        }
        Some(Runs { runs })
    }

    /// Decodes every run into `out`; false, with `out` partly written, when an image is too short.
    pub fn decode<'a>(&self, image: impl Fn(u32) -> &'a [u8], out: &mut [f64]) -> bool {
        for run in &self.runs {
            let Some(bytes) = image(run.image).get(run.at..run.at + run.kind.element_bytes() * run.elements) else {
                return false;
            };
            let values = &mut out[run.out_at..run.out_at + run.elements];
            match run.kind {
                RunKind::Registers(data_type, byte_order) => elements_f64(bytes, data_type, byte_order, values),
                RunKind::Bits => {
                    for (value, &bit) in values.iter_mut().zip(bytes) {
                        *value = f64::from(u8::from(bit != 0));
                    }
                }
            }
        }
        true
    }
}

impl ReplyDecoder {
    /// Every tag must be in one table, numeric, and at or after `start`.
    pub fn new(tags: Vec<ModbusTag>, start: u16) -> Result<ReplyDecoder> {
        let Some(table) = tags.first().map(|t| t.table) else {
            return Err(Error::address("a reply decoder needs at least one tag"));
        };
        for tag in &tags {
            if tag.table != table {
                return Err(Error::address(format!(
                    "tag '{tag}' is not in the {} table like the first tag",
                    table.name()
                )));
            }
            if tag.data_type == DataType::String {
                return Err(Error::address(format!("STRING tag '{tag}' has no numeric column")));
            }
            if u32::from(tag.address) < u32::from(start) {
                return Err(Error::address(format!("tag '{tag}' starts before the reply's first address {start}")));
            }
        }
        let runs = Runs::of(tags.iter().map(|tag| (tag, 0, u32::from(tag.address) - u32::from(start))));
        Ok(ReplyDecoder { tags, table, start, runs })
    }

    /// The tags one decode yields.
    pub fn tag_count(&self) -> usize {
        self.tags.len()
    }

    /// Element values one decode yields (a tag array counts each element).
    pub fn value_count(&self) -> usize {
        self.tags.iter().map(|t| t.elements()).sum()
    }

    /// Decodes one whole Modbus TCP frame (MBAP header and PDU). A frame that is
    /// not a complete reply to this table's read function is an error; a tag
    /// beyond the reply's end fails alone.
    pub fn decode(&self, frame: &[u8]) -> Result<Columns> {
        let mut columns = columns_for(&self.tags);
        let errors = &mut columns.errors;
        self.decode_into(frame, &mut columns.values, |tag, e| errors.push((tag as u32, e)))?;
        Ok(columns)
    }

    /// Decodes one whole frame, as [`ReplyDecoder::decode`], straight into `out`
    /// (exactly [`ReplyDecoder::value_count`] long): a tag that fails is NaN and
    /// goes to `failed` with its position.
    pub fn decode_into(&self, frame: &[u8], out: &mut [f64], failed: impl FnMut(usize, Error)) -> Result<()> {
        let Some((_, pdu, frame_len)) = tcp::decode_frame(frame)? else {
            return Err(Error::proto(format!("truncated Modbus TCP frame ({} bytes)", frame.len())));
        };
        if frame_len != frame.len() {
            return Err(Error::proto(format!("{} bytes follow the Modbus TCP frame", frame.len() - frame_len)));
        }
        let unpacked;
        let (image, units): (&[u8], usize) = match Response::decode(pdu, self.table.read_function())? {
            Response::Exception { function, code } => return Err(Error::modbus_exception(function, code)),
            Response::ReadRegisters { registers } if !self.table.is_bit() => (registers, registers.len() / 2),
            // Bit images hold one byte per bit, as in a device read; the reply cannot say how many bits were asked for.
            Response::ReadBits { packed } if self.table.is_bit() => {
                unpacked = (0..packed.len() * 8).map(|i| pdu::bit(packed, i) as u8).collect::<Vec<u8>>();
                (&unpacked, unpacked.len())
            }
            _ => return Err(Error::proto("the reply is not a read of the tags' table")),
        };
        if self.runs.as_ref().is_some_and(|runs| runs.decode(|_| image, out)) {
            return Ok(());
        }
        let slots = self.tags.iter().map(|tag| {
            let offset = u32::from(tag.address) - u32::from(self.start);
            if offset as usize + tag.span() as usize > units {
                let unit = if self.table.is_bit() { "bits" } else { "registers" };
                return Err(Error::address(format!("tag '{tag}' lies beyond the reply's {units} {unit}")));
            }
            Ok((image, offset))
        });
        decode_into(&self.tags, slots, out, failed);
        Ok(())
    }

    /// The length of the Modbus TCP frame that starts `bytes` (its MBAP header's
    /// count), or `None` when fewer than its 6 first bytes are there.
    pub fn frame_len(bytes: &[u8]) -> Option<usize> {
        let length = bytes.get(4..6)?;
        Some(6 + usize::from(u16::from_be_bytes([length[0], length[1]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bifrost_core::ErrorCode;

    fn decoder(tags: &[&str], start: u16) -> ReplyDecoder {
        ReplyDecoder::new(tags.iter().map(|t| ModbusTag::parse(t).unwrap()).collect(), start).unwrap()
    }

    fn column(read: &Columns, tag: usize) -> &[f64] {
        &read.values[read.offsets[tag] as usize..read.offsets[tag + 1] as usize]
    }

    #[test]
    fn spec_holding_register_reply() {
        // The specification's FC3 example (registers 108..110 = 555, 0, 100) behind an MBAP header.
        let frame = [0x00, 0x01, 0x00, 0x00, 0x00, 0x09, 0x11, 0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64];
        let read = decoder(&["holding-register:107:UINT", "holding-register:108:DINT", "holding-register:109"], 107)
            .decode(&frame)
            .unwrap();
        assert_eq!(read.values, [555.0, 100.0, 100.0]);
        assert_eq!(read.offsets, [0, 1, 2, 3]);
        assert!(read.errors.is_empty());
    }

    #[test]
    fn real_in_cdab_order() {
        // -1234.5678f32 is 0xC49A522B; CDAB sends the low word first.
        let frame = [0x00, 0x02, 0x00, 0x00, 0x00, 0x07, 0x01, 0x03, 0x04, 0x52, 0x2B, 0xC4, 0x9A];
        let read = decoder(&["holding-register:40:REAL{byte-order: CDAB}"], 40).decode(&frame).unwrap();
        assert_eq!(read.values, [-1234.5678f32 as f64]);
    }

    #[test]
    fn spec_coil_reply() {
        // The specification's FC1 example: coils 20..38, first byte CD.
        let frame = [0x00, 0x03, 0x00, 0x00, 0x00, 0x06, 0x01, 0x01, 0x03, 0xCD, 0x6B, 0x05];
        let read = decoder(&["coil:19:BOOL[8]", "coil:27"], 19).decode(&frame).unwrap();
        assert_eq!(column(&read, 0), [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!(column(&read, 1), [1.0]);
    }

    #[test]
    fn tag_beyond_the_reply_fails_alone() {
        let frame = [0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x01, 0x03, 0x02, 0x00, 0x07];
        let read = decoder(&["holding-register:0", "holding-register:0:DINT"], 0).decode(&frame).unwrap();
        assert_eq!(read.values[0], 7.0);
        assert!(read.values[1].is_nan());
        assert_eq!(read.errors.len(), 1);
        assert_eq!((read.errors[0].0, read.errors[0].1.code), (1, ErrorCode::Address));
    }

    #[test]
    fn runs_decode_as_each_tag_alone_does() {
        // Runs merge neighbours of one type and order; every tag must still read as decode_element reads it.
        let tags = [
            "holding-register:0:REAL{byte-order: CDAB}",
            "holding-register:2:REAL{byte-order: CDAB}",
            "holding-register:4:REAL",
            "holding-register:6:INT[3]",
            "holding-register:9:INT",
            "holding-register:10:DINT{byte-order: DCBA}",
            "holding-register:12:LREAL{byte-order: BADC}",
            "holding-register:16:UINT",
            "holding-register:18:LINT[2]",
            "holding-register:26:SINT",
        ];
        let registers: Vec<u8> = (0..54u32).map(|i| (i.wrapping_mul(97) ^ 0x5A) as u8).collect();
        let mut frame =
            vec![0x00, 0x01, 0x00, 0x00, 0x00, 3 + registers.len() as u8, 0x01, 0x03, registers.len() as u8];
        frame.extend(&registers);
        let d = decoder(&tags, 0);
        assert_eq!(d.runs.as_ref().map(|r| r.runs.len()), Some(8), "the two CDAB REALs and the INTs merge");
        let read = d.decode(&frame).unwrap();
        for (i, text) in tags.iter().enumerate() {
            let tag = ModbusTag::parse(text).unwrap();
            let want = match decode_tag(&tag, &registers, u32::from(tag.address)).unwrap() {
                Value::Array(items) => items,
                one => vec![one],
            };
            let want: Vec<f64> = want
                .iter()
                .map(|v| match *v {
                    Value::Int(n) => n as f64,
                    Value::UInt(n) => n as f64,
                    Value::Float(f) => f,
                    ref other => panic!("{other:?}"),
                })
                .collect();
            let got = column(&read, i);
            assert!(
                got.iter().zip(&want).all(|(a, b)| a == b || (a.is_nan() && b.is_nan())),
                "{text}: {got:?} != {want:?}"
            );
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        let d = decoder(&["holding-register:0"], 0);
        let ok = [0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x01, 0x03, 0x02, 0x00, 0x07];
        assert!(d.decode(&ok).is_ok());
        assert_eq!(d.decode(&ok[..9]).unwrap_err().code, ErrorCode::Proto, "truncated");
        assert_eq!(d.decode(&[&ok[..], &[0]].concat()).unwrap_err().code, ErrorCode::Proto, "trailing byte");
        let fc4 = [0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x01, 0x04, 0x02, 0x00, 0x07];
        assert_eq!(d.decode(&fc4).unwrap_err().code, ErrorCode::Proto, "reply to another function");
        let exception = [0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x01, 0x83, 0x02];
        let e = d.decode(&exception).unwrap_err();
        assert_eq!((e.code, e.exception_code), (ErrorCode::ModbusException, Some(2)));
        assert_eq!(d.decode(&[]).unwrap_err().code, ErrorCode::Proto, "empty");
    }

    #[test]
    fn decoder_settings_are_checked() {
        let tags = |ts: &[&str]| ts.iter().map(|t| ModbusTag::parse(t).unwrap()).collect::<Vec<_>>();
        let err = |ts: &[&str], start| ReplyDecoder::new(tags(ts), start).unwrap_err().code;
        assert_eq!(err(&[], 0), ErrorCode::Address);
        assert_eq!(err(&["holding-register:0", "input-register:1"], 0), ErrorCode::Address);
        assert_eq!(err(&["holding-register:0:STRING(4)"], 0), ErrorCode::Address);
        assert_eq!(err(&["holding-register:4"], 5), ErrorCode::Address);
    }
}
