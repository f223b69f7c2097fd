//! Attribute values as the text form sees them. Ops carry typed attributes; `AttrValue`
//! is only the neutral shape they take on their way to and from text, so the printer and
//! parser need no per-op code.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::Graph;
use crate::tensor::Tensor;

#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Int(i64),
    Float(f32),
    Bool(bool),
    /// A bare word: an enum case (`same_upper`) or a dtype (`f32`).
    Word(String),
    /// A quoted string.
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strs(Vec<String>),
    Tensor(Tensor),
    Graph(Box<Graph>),
}

/// A Rust type usable as an op attribute.
pub trait Attr: Sized {
    /// `None` leaves the attribute out of the text (an absent optional).
    fn to_attr(&self) -> Option<AttrValue>;
    /// Parses from text; `None` means the attribute was absent.
    fn from_attr(v: Option<AttrValue>) -> Result<Self>;
}

fn wrong(expected: &str, got: &Option<AttrValue>) -> IrError {
    IrError::msg(format!("expected {expected}, found {got:?}"))
}

macro_rules! simple_attr {
    ($t:ty, $case:ident, $what:literal) => {
        impl Attr for $t {
            fn to_attr(&self) -> Option<AttrValue> {
                Some(AttrValue::$case(self.clone()))
            }
            fn from_attr(v: Option<AttrValue>) -> Result<Self> {
                match v {
                    Some(AttrValue::$case(x)) => Ok(x),
                    other => Err(wrong($what, &other)),
                }
            }
        }
    };
}
simple_attr!(i64, Int, "an integer");
simple_attr!(bool, Bool, "true or false");
simple_attr!(String, Str, "a string");
simple_attr!(Vec<String>, Strs, "a list of strings");
simple_attr!(Tensor, Tensor, "a tensor");

impl Attr for f32 {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Float(*self))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self> {
        match v {
            Some(AttrValue::Float(x)) => Ok(x),
            Some(AttrValue::Int(x)) => Ok(x as f32),
            other => Err(wrong("a number", &other)),
        }
    }
}

impl Attr for Vec<i64> {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Ints(self.clone()))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self> {
        match v {
            Some(AttrValue::Ints(x)) => Ok(x),
            Some(AttrValue::Floats(x)) if x.is_empty() => Ok(vec![]),
            Some(AttrValue::Strs(x)) if x.is_empty() => Ok(vec![]),
            other => Err(wrong("a list of integers", &other)),
        }
    }
}

impl Attr for Vec<f32> {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Floats(self.clone()))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self> {
        match v {
            Some(AttrValue::Floats(x)) => Ok(x),
            Some(AttrValue::Ints(x)) => Ok(x.into_iter().map(|i| i as f32).collect()),
            Some(AttrValue::Strs(x)) if x.is_empty() => Ok(vec![]),
            other => Err(wrong("a list of numbers", &other)),
        }
    }
}

impl Attr for DType {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Word(self.name().to_string()))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self> {
        match &v {
            Some(AttrValue::Word(w)) => DType::from_name(w).ok_or_else(|| wrong("a dtype", &v)),
            _ => Err(wrong("a dtype", &v)),
        }
    }
}

impl Attr for Box<Graph> {
    fn to_attr(&self) -> Option<AttrValue> {
        Some(AttrValue::Graph(self.clone()))
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self> {
        match v {
            Some(AttrValue::Graph(g)) => Ok(g),
            other => Err(wrong("a graph", &other)),
        }
    }
}

impl<T: Attr> Attr for Option<T> {
    fn to_attr(&self) -> Option<AttrValue> {
        self.as_ref().and_then(|x| x.to_attr())
    }
    fn from_attr(v: Option<AttrValue>) -> Result<Self> {
        match v {
            None => Ok(None),
            some => T::from_attr(some).map(Some),
        }
    }
}

/// Defines an enum of named cases that is an [`Attr`] written as a bare word.
#[macro_export]
macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $( $(#[$vm:meta])* $var:ident = $word:literal ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$vm])* $var ),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),*];
            pub fn word(self) -> &'static str {
                match self { $( $name::$var => $word ),* }
            }
            pub fn from_word(w: &str) -> Option<$name> {
                match w { $( $word => Some($name::$var), )* _ => None }
            }
        }
        impl $crate::attr::Attr for $name {
            fn to_attr(&self) -> Option<$crate::attr::AttrValue> {
                Some($crate::attr::AttrValue::Word(self.word().to_string()))
            }
            fn from_attr(v: Option<$crate::attr::AttrValue>) -> $crate::Result<Self> {
                match &v {
                    Some($crate::attr::AttrValue::Word(w)) => $name::from_word(w).ok_or_else(|| {
                        $crate::IrError::msg(format!("expected one of {:?}, found {}", [$($word),*], w))
                    }),
                    _ => Err($crate::IrError::msg(format!("expected one of {:?}, found {:?}", [$($word),*], v))),
                }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.word()) }
        }
    };
}
