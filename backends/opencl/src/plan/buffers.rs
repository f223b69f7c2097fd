//! Device tensors of a run: buffers with their type, uploads, allocations and read-backs.

use super::DEVICE;
use crate::device::ClDevice;
use kiln_ir::{DType, Tensor};
use opencl3::command_queue::CommandQueue;
use opencl3::event::Event;
use opencl3::memory::{Buffer, CL_MEM_COPY_HOST_PTR, CL_MEM_READ_ONLY, CL_MEM_READ_WRITE};
use opencl3::types::CL_BLOCKING;
use std::ptr;
use std::sync::Arc;

/// A tensor on the device during a run. Buffers are written once (every kernel writes
/// fresh ones), so tensors share them freely.
#[derive(Clone)]
pub struct DevTensor {
    pub buf: Arc<Buffer<u8>>,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

/// A launch's event, resolved into a timing once the run's queue has finished.
pub type Timed = (Vec<String>, String, Event);

pub(crate) fn cl_err(what: &str, e: impl std::fmt::Display) -> kiln_backends::BackendError {
    kiln_backends::BackendError::new(DEVICE, format!("{what}: {e}"))
}

/// A device tensor holding `t` (copied during the call).
pub fn upload_tensor(device: &ClDevice, t: &Tensor) -> Result<DevTensor, kiln_backends::BackendError> {
    Ok(DevTensor { buf: Arc::new(upload(device, t)?), dtype: t.dtype(), shape: t.shape().to_vec() })
}

/// An uninitialized device buffer of `bytes` (at least one: OpenCL has no empty buffers).
pub fn alloc(device: &ClDevice, bytes: usize) -> Result<Buffer<u8>, kiln_backends::BackendError> {
    // SAFETY: a fresh device allocation, no host pointer.
    unsafe { Buffer::<u8>::create(&device.context, CL_MEM_READ_WRITE, bytes.max(1), ptr::null_mut()) }.map_err(|e| cl_err("cannot allocate a buffer", e))
}

/// `t` read back to the host (blocking: the queue runs up to here).
pub fn read(queue: &CommandQueue, t: &DevTensor) -> Result<Tensor, kiln_backends::BackendError> {
    let n: usize = t.shape.iter().product::<usize>() * t.dtype.size();
    let mut bytes = vec![0u8; n];
    if n > 0 {
        // SAFETY: `bytes` holds exactly the tensor's n bytes; the read blocks.
        unsafe { queue.enqueue_read_buffer(&t.buf, CL_BLOCKING, 0, &mut bytes, &[]) }.map_err(|e| cl_err("cannot read a tensor back", e))?;
    }
    Tensor::from_le_bytes(t.dtype, t.shape.clone(), &bytes).map_err(|e| kiln_backends::BackendError::from_ir(DEVICE, e))
}

pub(crate) fn upload(device: &ClDevice, t: &Tensor) -> Result<Buffer<u8>, kiln_backends::BackendError> {
    let mut bytes = t.to_le_bytes();
    if bytes.is_empty() {
        bytes.push(0);
    }
    // SAFETY: COPY_HOST_PTR copies `bytes` during the call; the buffer does not keep it.
    unsafe { Buffer::<u8>::create(&device.context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes.len(), bytes.as_mut_ptr().cast()) }
        .map_err(|e| cl_err("cannot create a buffer", e))
}
