//! The gRPC codec of the ExternalScaler service: prost's, with the metadata's key count read off
//! the wire before a request is decoded. Decoding a map builds every key and value, so a request
//! with 10,000 unknown keys cost milliseconds of CPU before `intake::check` could refuse it; here
//! the refusal costs a walk over the message's field headers.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, ScaledObjectRef,
};

/// What a message's wire form must pass before it is decoded. Responses (which the generated
/// client decodes) need nothing.
pub trait WireCheck {
    fn check_wire(_wire: &[u8]) -> Result<(), Status> {
        Ok(())
    }
}

/// `ScaledObjectRef.scalerMetadata` is field 3.
const METADATA_FIELD: u32 = 3;
/// `GetMetricsRequest.scaledObjectRef` is field 1.
const OBJECT_FIELD: u32 = 1;

impl WireCheck for ScaledObjectRef {
    fn check_wire(wire: &[u8]) -> Result<(), Status> {
        check_keys(count_fields(wire, METADATA_FIELD))
    }
}

impl WireCheck for GetMetricsRequest {
    fn check_wire(wire: &[u8]) -> Result<(), Status> {
        // A message field given more than once is merged, map entries added up: count them all.
        let mut keys = 0;
        for object in fields(wire, OBJECT_FIELD) {
            keys += count_fields(object, METADATA_FIELD);
        }
        check_keys(keys)
    }
}

impl WireCheck for IsActiveResponse {}
impl WireCheck for GetMetricSpecResponse {}
impl WireCheck for GetMetricsResponse {}

/// The same refusal `intake::check` gives for a decoded map, INVALID_ARGUMENT as `service` maps
/// it.
fn check_keys(keys: usize) -> Result<(), Status> {
    crate::intake::check_key_count(keys)
        .map_err(|e| Status::invalid_argument(format!("invalid scalerMetadata: {e}")))
}

/// Map entries (and any field) repeated on the wire: each entry of a map is one occurrence.
fn count_fields(wire: &[u8], field: u32) -> usize {
    fields(wire, field).count()
}

/// The payloads of the length-delimited occurrences of `field` at the top level of `wire`.
/// Stops quietly at anything malformed: prost's decoder then reports it properly.
fn fields(wire: &[u8], field: u32) -> impl Iterator<Item = &[u8]> {
    let mut rest = wire;
    std::iter::from_fn(move || loop {
        let tag = varint(&mut rest)?;
        let (number, wire_type) = (tag >> 3, tag & 7);
        let payload = match wire_type {
            0 => {
                varint(&mut rest)?;
                continue;
            }
            1 => take(&mut rest, 8)?,
            2 => {
                let len = usize::try_from(varint(&mut rest)?).ok()?;
                take(&mut rest, len)?
            }
            5 => take(&mut rest, 4)?,
            // Groups (3, 4) are not in proto3 messages; anything else is malformed.
            _ => return None,
        };
        if wire_type == 2 && number == u64::from(field) {
            return Some(payload);
        }
    })
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if rest.len() < len {
        return None;
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Some(head)
}

fn varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest.split_first()?;
        *rest = tail;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Prost's codec, with `WireCheck` before every decode. Named by `build.rs` as the codec of the
/// generated server and client.
#[derive(Debug, Clone)]
pub struct IntakeCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for IntakeCodec<T, U> {
    fn default() -> Self {
        IntakeCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for IntakeCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + WireCheck + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = IntakeDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        IntakeDecoder {
            inner: ProstDecoder::new(BufferSettings::default()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IntakeDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default + WireCheck> Decoder for IntakeDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // The whole message is buffered in one piece before decode is called (tonic reads the
        // length prefix first), so its first chunk is all of it.
        U::check_wire(prost::bytes::Buf::chunk(buf))?;
        self.inner.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(keys: usize) -> ScaledObjectRef {
        ScaledObjectRef {
            name: "llm".into(),
            namespace: "default".into(),
            scaler_metadata: (0..keys).map(|i| (format!("k{i}"), "v".into())).collect(),
        }
    }

    #[test]
    fn keys_are_counted_on_the_wire() {
        for keys in [0, 1, 5, 128, 129, 10_000] {
            let wire = object(keys).encode_to_vec();
            assert_eq!(count_fields(&wire, METADATA_FIELD), keys);
            let request = GetMetricsRequest {
                scaled_object_ref: Some(object(keys)),
                metric_name: "gpu-composite".into(),
            };
            let checked = GetMetricsRequest::check_wire(&request.encode_to_vec());
            assert_eq!(checked.is_ok(), keys <= crate::intake::MAX_KEYS, "{keys}");
            let checked = ScaledObjectRef::check_wire(&wire);
            assert_eq!(checked.is_ok(), keys <= crate::intake::MAX_KEYS, "{keys}");
            if let Err(s) = checked {
                assert_eq!(s.code(), tonic::Code::InvalidArgument);
                assert!(s.message().contains(&format!("{keys} keys given")), "{s:?}");
            }
        }
    }

    #[test]
    fn a_repeated_object_field_adds_its_entries_up() {
        // Two scaledObjectRef fields of 100 keys each decode as one map of 200.
        let half = GetMetricsRequest {
            scaled_object_ref: Some(object(100)),
            metric_name: String::new(),
        }
        .encode_to_vec();
        let wire = [half.clone(), half].concat();
        let e = GetMetricsRequest::check_wire(&wire).unwrap_err();
        assert!(e.message().contains("200 keys given"), "{e:?}");
    }

    #[test]
    fn malformed_wire_is_left_to_prost() {
        for wire in [&[0xff_u8][..], &[0x1a, 0x05, 0x01], &[0x0f], &[]] {
            assert!(ScaledObjectRef::check_wire(wire).is_ok());
        }
        let mut wire = object(3).encode_to_vec();
        wire.truncate(wire.len() - 1);
        assert!(ScaledObjectRef::check_wire(&wire).is_ok());
        let decoded: Result<ScaledObjectRef, _> = Message::decode(&wire[..]);
        assert!(decoded.is_err());
    }
}
