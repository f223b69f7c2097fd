//! Typed access to a node's attributes, with ONNX defaults supplied by the caller. A wrong
//! attribute type is an error naming the attribute (the caller adds the node).

use kiln_ir::{IrError, Result};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, GraphProto, TensorProto};

pub(crate) struct Attrs<'a> {
    list: &'a [AttributeProto],
}

/// The type an attribute declares; files from IR version 1 leave it UNDEFINED, and then
/// the populated field decides.
fn kind(a: &AttributeProto) -> AttributeType {
    match a.type_.enum_value() {
        Ok(AttributeType::UNDEFINED) | Err(_) => {
            if a.t.is_some() {
                AttributeType::TENSOR
            } else if a.g.is_some() {
                AttributeType::GRAPH
            } else if !a.floats.is_empty() {
                AttributeType::FLOATS
            } else if !a.ints.is_empty() {
                AttributeType::INTS
            } else if !a.strings.is_empty() {
                AttributeType::STRINGS
            } else if !a.s.is_empty() {
                AttributeType::STRING
            } else if a.f != 0.0 {
                AttributeType::FLOAT
            } else {
                AttributeType::INT
            }
        }
        Ok(t) => t,
    }
}

fn wrong(a: &AttributeProto, expected: &str) -> IrError {
    IrError::msg(format!(
        "attribute `{}` must be {expected}, found {:?}",
        a.name,
        kind(a)
    ))
}

fn utf8(a: &AttributeProto, b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec())
        .map_err(|_| IrError::msg(format!("attribute `{}` is not valid UTF-8", a.name)))
}

impl<'a> Attrs<'a> {
    pub fn new(list: &'a [AttributeProto]) -> Attrs<'a> {
        Attrs { list }
    }

    pub fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.list.iter().find(|a| a.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn int_opt(&self, name: &str) -> Result<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if kind(a) == AttributeType::INT => Ok(Some(a.i)),
            Some(a) => Err(wrong(a, "an integer")),
        }
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int_opt(name)?.unwrap_or(default))
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool> {
        Ok(self.int_opt(name)?.map_or(default, |v| v != 0))
    }

    pub fn req_int(&self, name: &str) -> Result<i64> {
        self.int_opt(name)?.ok_or_else(|| missing(name))
    }

    pub fn float_opt(&self, name: &str) -> Result<Option<f32>> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if kind(a) == AttributeType::FLOAT => Ok(Some(a.f)),
            // Some exporters write whole numbers as ints.
            Some(a) if kind(a) == AttributeType::INT => Ok(Some(a.i as f32)),
            Some(a) => Err(wrong(a, "a float")),
        }
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.float_opt(name)?.unwrap_or(default))
    }

    pub fn ints_opt(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if kind(a) == AttributeType::INTS => Ok(Some(a.ints.clone())),
            // An empty list is written with no type information in some files.
            Some(a)
                if a.ints.is_empty()
                    && a.floats.is_empty()
                    && matches!(kind(a), AttributeType::INT) =>
            {
                Ok(Some(vec![]))
            }
            Some(a) => Err(wrong(a, "a list of integers")),
        }
    }

    pub fn ints(&self, name: &str) -> Result<Vec<i64>> {
        Ok(self.ints_opt(name)?.unwrap_or_default())
    }

    pub fn floats_opt(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if kind(a) == AttributeType::FLOATS => Ok(Some(a.floats.clone())),
            Some(a) if kind(a) == AttributeType::INTS => {
                Ok(Some(a.ints.iter().map(|&i| i as f32).collect()))
            }
            Some(a)
                if a.floats.is_empty()
                    && a.ints.is_empty()
                    && matches!(kind(a), AttributeType::INT) =>
            {
                Ok(Some(vec![]))
            }
            Some(a) => Err(wrong(a, "a list of floats")),
        }
    }

    pub fn string_opt(&self, name: &str) -> Result<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(a)
                if kind(a) == AttributeType::STRING
                    || (kind(a) == AttributeType::INT && a.i == 0) =>
            {
                Ok(Some(utf8(a, &a.s)?))
            }
            Some(a) => Err(wrong(a, "a string")),
        }
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        Ok(self
            .string_opt(name)?
            .unwrap_or_else(|| default.to_string()))
    }

    pub fn strings_opt(&self, name: &str) -> Result<Option<Vec<String>>> {
        match self.get(name) {
            None => Ok(None),
            Some(a)
                if kind(a) == AttributeType::STRINGS
                    || (kind(a) == AttributeType::INT && a.i == 0) =>
            {
                a.strings
                    .iter()
                    .map(|s| utf8(a, s))
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
            }
            Some(a) => Err(wrong(a, "a list of strings")),
        }
    }

    pub fn tensor_opt(&self, name: &str) -> Result<Option<&'a TensorProto>> {
        match self.get(name) {
            None => Ok(None),
            Some(a) => match a.t.as_ref() {
                Some(t) if matches!(kind(a), AttributeType::TENSOR) => Ok(Some(t)),
                _ => Err(wrong(a, "a tensor")),
            },
        }
    }

    pub fn graph(&self, name: &str) -> Result<&'a GraphProto> {
        match self.get(name) {
            None => Err(missing(name)),
            Some(a) => match a.g.as_ref() {
                Some(g) if matches!(kind(a), AttributeType::GRAPH) => Ok(g),
                _ => Err(wrong(a, "a graph")),
            },
        }
    }
}

pub(crate) fn missing(name: &str) -> IrError {
    IrError::msg(format!("required attribute `{name}` is missing"))
}
