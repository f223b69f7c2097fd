//! numpy arrays to kiln tensors and back, and kiln's types as Python values.

use kiln_ir::tensor::SharedElems;
use kiln_ir::{with_dtype, DType, Dim, Tensor, TensorType};
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

/// An input array as a tensor. A C-contiguous, aligned array of a kiln element type other
/// than bool is read in place (the tensor keeps the array alive); any other array is copied
/// once, in its logical order.
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
    if let Some(t) = in_place(&view) {
        return t.map_err(|e| KilnError::new_err(format!("{what}: {e}")));
    }
    // Any other layout: numpy copies it into a new C-contiguous array (one pass, at numpy's
    // speed), which kiln then reads in place like any other. bool stays on the walk below.
    if T::DTYPE != DType::Bool {
        let copy = array.call_method1("copy", ("C",))?.cast_into::<PyArrayDyn<T>>()?;
        let copy_view = copy.try_readonly().map_err(|e| KilnError::new_err(format!("{what}: {e}")))?;
        if let Some(t) = in_place(&copy_view) {
            return t.map_err(|e| KilnError::new_err(format!("{what}: {e}")));
        }
    }
    let data: Vec<T> = view.as_array().iter().cloned().collect();
    Tensor::new(view.shape().to_vec(), data).map_err(|e| KilnError::new_err(format!("{what}: {e}")))
}

/// A tensor reading the array's buffer in place, when kiln can: C-contiguous, aligned, and
/// not bool (numpy does not promise a bool's byte is 0 or 1, which Rust's `bool` requires).
fn in_place<T: Element + kiln_ir::tensor::Storable>(
    view: &numpy::PyReadonlyArrayDyn<'_, T>,
) -> Option<kiln_ir::Result<Tensor>> {
    let ptr = view.data() as *const T;
    let usable = T::DTYPE != DType::Bool
        && view.is_c_contiguous()
        && !ptr.is_null()
        && ptr.align_offset(std::mem::align_of::<T>()) == 0;
    if !usable {
        return None;
    }
    let elems = NumpyElems { _array: view.as_unbound().clone_ref(view.py()), ptr, len: view.len() };
    Some(Tensor::from_shared(view.shape().to_vec(), elems))
}

/// A numpy array's elements, read in place while the array is kept alive.
struct NumpyElems<T: Element> {
    _array: Py<PyArrayDyn<T>>,
    ptr: *const T,
    len: usize,
}

// The pointer is only read, and `Py` keeps the array (and the buffer under it) alive from
// any thread; dropping it without the GIL defers the decref to PyO3's reference pool.
unsafe impl<T: Element + Sync> Send for NumpyElems<T> {}
unsafe impl<T: Element + Sync> Sync for NumpyElems<T> {}

// Same slice on every call: a numpy array's data pointer and size are fixed for its life
// (`ndarray.resize` refuses while another reference, like ours, exists, unless told
// `refcheck=False`, which numpy documents as unsafe for every holder of a reference). The caller
// promises not to write to the array while a run reads it (the README says so).
unsafe impl<T: Element + Sync + 'static> SharedElems<T> for NumpyElems<T> {
    fn elems(&self) -> &[T] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// An output tensor as a new numpy array (one copy: numpy owns its memory).
pub fn to_array<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let shape = t.shape().to_vec();
    if t.dtype() == DType::BF16 {
        check_bf16(py)?;
    }
    with_dtype!(t.dtype(), T => {
        let v = t.as_slice::<T>().map_err(|e| KilnError::new_err(e.to_string()))?;
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
