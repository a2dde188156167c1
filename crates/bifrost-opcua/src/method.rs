//! The Method service set (Part 4, 5.11): Call, and the Argument structure a
//! method's InputArguments and OutputArguments properties hold (Part 3, 8.6).

use bifrost_core::{Error, Result};
use bytes::Bytes;

use crate::encoding::{
    Decode, DiagnosticInfo, Encode, ExtensionBody, ExtensionObject, LocalizedText, ReadLengths, Reader, Variant,
};
use crate::node_id::NodeId;
use crate::secure_channel;
use crate::session::ServiceRequest;

/// The binary encodings' NodeIds of the messages here (namespace 0).
pub mod encoding_id {
    pub const ARGUMENT: u32 = 298;
    pub const CALL_REQUEST: u32 = 712;
    pub const CALL_RESPONSE: u32 = 715;
}

/// One argument of a method, as its InputArguments property describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Argument {
    pub name: Option<String>,
    pub data_type: NodeId,
    /// -1 scalar, 1 one dimension, ...
    pub value_rank: i32,
    pub description: LocalizedText,
}

impl Argument {
    /// As an ExtensionObject, as a property's value holds it.
    pub fn to_extension_object(&self) -> ExtensionObject {
        let mut body = Vec::new();
        self.name.as_deref().encode(&mut body);
        self.data_type.encode(&mut body);
        body.extend_from_slice(&self.value_rank.to_le_bytes());
        body.extend_from_slice(&(-1i32).to_le_bytes()); // no array dimensions
        self.description.encode(&mut body);
        ExtensionObject { type_id: NodeId::numeric(0, encoding_id::ARGUMENT), body: ExtensionBody::Binary(body) }
    }

    /// From a property's ExtensionObject; another type is `EPROTO`.
    pub fn from_extension_object(object: &ExtensionObject) -> Result<Argument> {
        let ExtensionBody::Binary(body) = &object.body else {
            return Err(Error::proto("a method argument that is not binary-encoded"));
        };
        if object.type_id != NodeId::numeric(0, encoding_id::ARGUMENT) {
            return Err(Error::proto(format!("a method argument of type {}, not Argument", object.type_id)));
        }
        let mut r = Reader::new(body);
        let name = r.string("an argument's name")?.map(str::to_string);
        let data_type = NodeId::decode(&mut r)?;
        let value_rank = r.i32("an argument's value rank")?;
        let dimensions = r.length(4, "an argument's dimensions")?.unwrap_or(0);
        r.bytes(4 * dimensions, "an argument's dimensions")?;
        let description = LocalizedText::decode(&mut r)?;
        Ok(Argument { name, data_type, value_rank, description })
    }
}

/// Call of one method on one object.
pub fn call(object: &NodeId, method: &NodeId, inputs: &[Variant]) -> ServiceRequest {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&1u32.to_le_bytes());
    object.encode(&mut out);
    method.encode(&mut out);
    out.extend_from_slice(&(inputs.len() as i32).to_le_bytes());
    inputs.iter().for_each(|input| input.encode(&mut out));
    ServiceRequest { type_id: encoding_id::CALL_REQUEST, fields: Bytes::from(out) }
}

/// What a method call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    pub status: u32,
    /// Per input argument, when the server found fault with one.
    pub input_results: Vec<u32>,
    pub outputs: Vec<Variant>,
}

impl Encode for CallResult {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&(self.input_results.len() as i32).to_le_bytes());
        self.input_results.iter().for_each(|code| out.extend_from_slice(&code.to_le_bytes()));
        out.extend_from_slice(&0i32.to_le_bytes()); // input argument diagnostics
        out.extend_from_slice(&(self.outputs.len() as i32).to_le_bytes());
        self.outputs.iter().for_each(|output| output.encode(out));
    }
}

impl Decode<'_> for CallResult {
    fn decode(r: &mut Reader<'_>) -> Result<CallResult> {
        let status = r.u32("a call's status")?;
        let count = r.length(4, "input argument results")?.unwrap_or(0);
        let input_results = (0..count).map(|_| r.u32("an input argument's status")).collect::<Result<_>>()?;
        let count = r.length(1, "input argument diagnostics")?.unwrap_or(0);
        for _ in 0..count {
            DiagnosticInfo::decode(r)?;
        }
        let count = r.length(1, "output arguments")?.unwrap_or(0);
        let outputs = (0..count).map(|_| Variant::decode(r)).collect::<Result<_>>()?;
        Ok(CallResult { status, input_results, outputs })
    }
}

/// A Call response's one result.
pub fn parse_call(body: &[u8]) -> Result<CallResult> {
    let (_, mut r) = secure_channel::response(body, encoding_id::CALL_RESPONSE, "Call")?;
    crate::session::result_count(&mut r, 4, 1, || "a Call of one method".into())?;
    CallResult::decode(&mut r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_call_results_round_trip() {
        let argument = Argument {
            name: Some("a".into()),
            data_type: NodeId::numeric(0, 6),
            value_rank: -1,
            description: LocalizedText::default(),
        };
        assert_eq!(Argument::from_extension_object(&argument.to_extension_object()).unwrap(), argument);
        let result = CallResult { status: 0, input_results: vec![0, 0x8074_0000], outputs: vec![Variant::Int32(5)] };
        let mut out = Vec::new();
        result.encode(&mut out);
        assert_eq!(CallResult::decode(&mut Reader::new(&out)).unwrap(), result);
        // One method: object i=85, method ns=1;i=7, one Double argument 2.0.
        let request = call(&NodeId::numeric(0, 85), &NodeId::numeric(1, 7), &[Variant::Double(2.0)]);
        assert_eq!(
            &request.fields[..],
            &[1, 0, 0, 0, 0x00, 0x55, 0x01, 0x01, 0x07, 0x00, 1, 0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 0x40]
        );
    }
}
