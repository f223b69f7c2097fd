//! numpy arrays to kiln tensors and back, and kiln's types as Python values.

use kiln_ir::{with_data, with_dtype, DType, Data, Dim, Tensor, TensorType};
use numpy::{Element, PyArray, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::KilnError;

/// numpy's name for a kiln element type (`np.dtype(name)` accepts it).
pub fn numpy_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        DType::I8 => "int8",
        DType::I16 => "int16",
        DType::I32 => "int32",
        DType::I64 => "int64",
        DType::U8 => "uint8",
        DType::U16 => "uint16",
        DType::U32 => "uint32",
        DType::U64 => "uint64",
        DType::Bool => "bool",
    }
}

/// An input array as a tensor. kiln's tensors own their elements, so this is one copy: a
/// plain memcpy for C-contiguous arrays, a strided walk otherwise.
pub fn to_tensor(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let array = obj.cast::<PyUntypedArray>().map_err(|_| {
        KilnError::new_err(format!(
            "{what} must be a numpy array, was given {}",
            type_name(obj)
        ))
    })?;
    let descr = array.dtype();
    let name = descr.str()?.to_string();
    let dtype = DType::ALL
        .into_iter()
        .find(|&d| numpy_name(d) == name)
        .ok_or_else(|| {
            KilnError::new_err(format!(
                "{what} has dtype {name}, which kiln has no element type for"
            ))
        })?;
    with_dtype!(dtype, T => typed::<T>(what, obj))
}

/// numpy has no bfloat16 of its own; `ml_dtypes` (which TensorFlow and JAX ship) adds it.
/// Without it, numpy-rust's bf16 dtype lookup panics, so ask first.
fn check_bf16(py: Python<'_>) -> PyResult<()> {
    py.import("ml_dtypes").map(|_| ()).map_err(|_| {
        KilnError::new_err("bfloat16 tensors need the ml_dtypes package (pip install ml_dtypes)")
    })
}

fn typed<T: Element + Clone + kiln_ir::tensor::Storable>(
    what: &str,
    obj: &Bound<'_, PyAny>,
) -> PyResult<Tensor> {
    if T::DTYPE == DType::BF16 {
        check_bf16(obj.py())?;
    }
    let array = obj
        .cast::<PyArrayDyn<T>>()
        .map_err(|e| KilnError::new_err(format!("{what}: {e}")))?;
    let view = array
        .try_readonly()
        .map_err(|e| KilnError::new_err(format!("{what}: {e}")))?;
    let shape = view.shape().to_vec();
    let data: Vec<T> = match view.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => view.as_array().iter().cloned().collect(),
    };
    Tensor::new(shape, data).map_err(|e| KilnError::new_err(format!("{what}: {e}")))
}

/// An output tensor as a new numpy array (one copy: numpy owns its memory).
pub fn to_array<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let shape = t.shape().to_vec();
    if t.dtype() == DType::BF16 {
        check_bf16(py)?;
    }
    let data: &Data = t.data();
    with_data!(data, v, T => {
        let flat = PyArray::from_slice(py, v);
        Ok(flat.reshape(shape)?.into_any())
    })
}

pub fn to_list<'py>(py: Python<'py>, ts: &[Tensor]) -> PyResult<Bound<'py, PyList>> {
    let arrays = ts
        .iter()
        .map(|t| to_array(py, t))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, arrays)
}

/// `(name, dtype, shape)` with each dim an int, a symbol's name, or None when unknown; the
/// shape is None when even the rank is unknown.
pub fn signature<'py>(
    py: Python<'py>,
    items: &[(String, TensorType)],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for (name, ty) in items {
        let shape: Bound<'py, PyAny> = match &ty.shape.0 {
            None => py.None().into_bound(py),
            Some(dims) => {
                let list = PyList::empty(py);
                for d in dims {
                    match d {
                        Dim::Known(n) => list.append(*n)?,
                        Dim::Sym(s) => list.append(s.as_str())?,
                        Dim::Unknown => list.append(py.None())?,
                    }
                }
                list.into_any()
            }
        };
        out.append((name.as_str(), numpy_name(ty.dtype), shape))?;
    }
    Ok(out)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an object".into())
}
