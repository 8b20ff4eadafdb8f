//! GGUF metadata values exactly as stored: the thirteen value types with their on-disk ids
//! and gguf-py names, scalar values of their own width, and arrays that keep their length and
//! as many leading elements as the reader was asked to keep.

use candle_core::quantized::gguf_file;

/// A GGUF metadata value type, as numbered in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `UINT8` (0).
    U8,
    /// `INT8` (1).
    I8,
    /// `UINT16` (2).
    U16,
    /// `INT16` (3).
    I16,
    /// `UINT32` (4).
    U32,
    /// `INT32` (5).
    I32,
    /// `FLOAT32` (6).
    F32,
    /// `BOOL` (7).
    Bool,
    /// `STRING` (8).
    String,
    /// `ARRAY` (9).
    Array,
    /// `UINT64` (10).
    U64,
    /// `INT64` (11).
    I64,
    /// `FLOAT64` (12).
    F64,
}

/// Every value type in id order (the index is the id).
const ALL: [ValueType; 13] = [
    ValueType::U8,
    ValueType::I8,
    ValueType::U16,
    ValueType::I16,
    ValueType::U32,
    ValueType::I32,
    ValueType::F32,
    ValueType::Bool,
    ValueType::String,
    ValueType::Array,
    ValueType::U64,
    ValueType::I64,
    ValueType::F64,
];

impl ValueType {
    /// The type stored under `id`, `None` for ids the GGUF specification does not define.
    pub fn from_id(id: u32) -> Option<Self> {
        ALL.get(id as usize).copied()
    }

    /// The id stored in the file.
    pub fn id(self) -> u32 {
        ALL.iter().position(|t| *t == self).unwrap_or(0) as u32
    }

    /// gguf-py's name for the type (`UINT32`, `FLOAT32`, `STRING`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "UINT8",
            Self::I8 => "INT8",
            Self::U16 => "UINT16",
            Self::I16 => "INT16",
            Self::U32 => "UINT32",
            Self::I32 => "INT32",
            Self::F32 => "FLOAT32",
            Self::Bool => "BOOL",
            Self::String => "STRING",
            Self::Array => "ARRAY",
            Self::U64 => "UINT64",
            Self::I64 => "INT64",
            Self::F64 => "FLOAT64",
        }
    }

    /// Bytes one value takes in the file, `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<u64> {
        match self {
            Self::U8 | Self::I8 | Self::Bool => Some(1),
            Self::U16 | Self::I16 => Some(2),
            Self::U32 | Self::I32 | Self::F32 => Some(4),
            Self::U64 | Self::I64 | Self::F64 => Some(8),
            Self::String | Self::Array => None,
        }
    }

    /// The fewest bytes one value of this type can take (a string or array header).
    pub fn min_size(self) -> u64 {
        match self {
            Self::String => 8,
            Self::Array => 12,
            other => other.fixed_size().unwrap_or(1),
        }
    }
}

/// An array value: its element type, its length, and its first elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Type of every element.
    pub elem_type: ValueType,
    /// Number of elements in the file.
    pub len: u64,
    /// The first elements, as many as the reader kept (all of them when `items.len() == len`).
    pub items: Vec<Value>,
}

impl Array {
    /// True when every element was kept.
    pub fn is_complete(&self) -> bool {
        self.items.len() as u64 == self.len
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `UINT8`.
    U8(u8),
    /// `INT8`.
    I8(i8),
    /// `UINT16`.
    U16(u16),
    /// `INT16`.
    I16(i16),
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING` (invalid UTF-8 replaced).
    Str(String),
    /// `ARRAY`.
    Array(Array),
    /// `UINT64`.
    U64(u64),
    /// `INT64`.
    I64(i64),
    /// `FLOAT64`.
    F64(f64),
}

impl Value {
    /// The stored type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::Str(_) => ValueType::String,
            Self::Array(_) => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// The type as gguf-py prints it, arrays with their element type: `ARRAY[STRING]`.
    pub fn type_name(&self) -> String {
        match self {
            Self::Array(a) if a.elem_type == ValueType::Array => {
                match a.items.first().map(Value::type_name) {
                    Some(inner) => format!("ARRAY[{inner}]"),
                    None => "ARRAY[ARRAY]".to_string(),
                }
            }
            Self::Array(a) => format!("ARRAY[{}]", a.elem_type.name()),
            other => other.value_type().name().to_string(),
        }
    }

    /// Any integer, widened.
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(x) => x.into(),
            Self::I8(x) => x.into(),
            Self::U16(x) => x.into(),
            Self::I16(x) => x.into(),
            Self::U32(x) => x.into(),
            Self::I32(x) => x.into(),
            Self::U64(x) => x.into(),
            Self::I64(x) => x.into(),
            _ => return None,
        })
    }

    /// A non-negative integer that fits a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(|x| u64::try_from(x).ok())
    }

    /// Any number (integers and floats) as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(x) => Some(x.into()),
            Self::F64(x) => Some(x),
            _ => self.as_int().map(|x| x as f64),
        }
    }

    /// A string's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An array.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Candle's representation, `None` when an array was not kept whole.
    pub fn to_candle(&self) -> Option<gguf_file::Value> {
        use gguf_file::Value as C;
        Some(match self {
            Self::U8(x) => C::U8(*x),
            Self::I8(x) => C::I8(*x),
            Self::U16(x) => C::U16(*x),
            Self::I16(x) => C::I16(*x),
            Self::U32(x) => C::U32(*x),
            Self::I32(x) => C::I32(*x),
            Self::F32(x) => C::F32(*x),
            Self::Bool(x) => C::Bool(*x),
            Self::Str(x) => C::String(x.clone()),
            Self::U64(x) => C::U64(*x),
            Self::I64(x) => C::I64(*x),
            Self::F64(x) => C::F64(*x),
            Self::Array(a) if a.is_complete() => C::Array(
                a.items
                    .iter()
                    .map(Value::to_candle)
                    .collect::<Option<Vec<_>>>()?,
            ),
            Self::Array(_) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_round_trip_and_carry_gguf_py_names() {
        for id in 0..13 {
            let t = ValueType::from_id(id).unwrap();
            assert_eq!(t.id(), id);
        }
        assert_eq!(ValueType::from_id(13), None);
        assert_eq!(ValueType::from_id(6).map(ValueType::name), Some("FLOAT32"));
        assert_eq!(ValueType::from_id(10).map(ValueType::name), Some("UINT64"));
    }

    #[test]
    fn array_type_names_show_their_element_type() {
        let a = Value::Array(Array {
            elem_type: ValueType::String,
            len: 3,
            items: vec![Value::Str("a".into())],
        });
        assert_eq!(a.type_name(), "ARRAY[STRING]");
        assert!(
            a.to_candle().is_none(),
            "a partial array has no candle value"
        );
    }

    #[test]
    fn integers_of_every_width_widen() {
        assert_eq!(Value::I8(-3).as_int(), Some(-3));
        assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::I32(-1).as_u64(), None);
        assert_eq!(Value::F32(0.5).as_f64(), Some(0.5));
        assert_eq!(Value::Str("x".into()).as_int(), None);
    }
}
