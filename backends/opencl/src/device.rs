//! The OpenCL device a compiled model runs on: platform discovery (libOpenCL.so is loaded
//! on first use, so a machine without it gets an error, not a failed start), the context,
//! and the cache of built programs keyed by source hash.

use opencl3::context::Context;
use opencl3::device::{Device, CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_GPU};
use opencl3::program::Program;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

pub const NO_PLATFORM: &str = "no OpenCL platform found (install an ICD such as pocl-opencl-icd)";

pub struct ClDevice {
    pub context: Context,
    /// The device's name, for errors.
    pub name: String,
    /// cl_khr_fp64: f64 tensors run, and f32 math runs in double as `ir::eval` does.
    pub fp64: bool,
    /// CL_DEVICE_MAX_WORK_GROUP_SIZE: a recurrent op's hidden size must fit one group.
    pub max_group: usize,
    programs: Mutex<HashMap<u64, Arc<Program>>>,
}

/// Every device of every platform, in platform order.
fn all_devices() -> Result<Vec<Device>, String> {
    let platforms = opencl3::platform::get_platforms().map_err(|_| NO_PLATFORM.to_string())?;
    if platforms.is_empty() {
        return Err(NO_PLATFORM.into());
    }
    let mut out = Vec::new();
    for p in platforms {
        if let Ok(ids) = p.get_devices(CL_DEVICE_TYPE_ALL) {
            out.extend(ids.into_iter().map(Device::new));
        }
    }
    if out.is_empty() {
        return Err("the OpenCL platforms list no devices".into());
    }
    Ok(out)
}

/// The device `index` (`None`: the first GPU, else the first device), opened once per
/// process and shared by every model compiled for it.
pub fn open(index: Option<usize>) -> Result<Arc<ClDevice>, String> {
    static OPEN: OnceLock<Mutex<HashMap<Option<usize>, Arc<ClDevice>>>> = OnceLock::new();
    let mut open = OPEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = open.get(&index) {
        return Ok(d.clone());
    }
    let devices = all_devices()?;
    let device = match index {
        Some(i) => *devices.get(i).ok_or_else(|| format!("no OpenCL device {i}: this machine has {}", devices.len()))?,
        None => devices
            .iter()
            .copied()
            .find(|d| d.dev_type().is_ok_and(|t| t & CL_DEVICE_TYPE_GPU != 0))
            .unwrap_or(devices[0]),
    };
    let context = Context::from_device(&device).map_err(|e| format!("cannot create an OpenCL context: {e}"))?;
    let fp64 = device.extensions().map(|e| e.contains("cl_khr_fp64")).unwrap_or(false);
    let name = device.name().unwrap_or_else(|_| "OpenCL device".into());
    let max_group = device.max_work_group_size().unwrap_or(1);
    let d = Arc::new(ClDevice { context, name, fp64, max_group, programs: Mutex::new(HashMap::new()) });
    open.insert(index, d.clone());
    Ok(d)
}

impl ClDevice {
    /// The program built from `source`, built once per distinct source.
    pub fn program(&self, source: &str) -> Result<Arc<Program>, String> {
        let mut h = DefaultHasher::new();
        source.hash(&mut h);
        let key = h.finish();
        if let Some(p) = self.programs.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        // Built outside the lock: other models may build their programs meanwhile.
        let p = Program::create_and_build_from_source(&self.context, source, "-cl-std=CL1.2")
            .map_err(|log| format!("the OpenCL compiler of {} refused the generated source: {log}", self.name))?;
        let p = Arc::new(p);
        self.programs.lock().unwrap_or_else(|e| e.into_inner()).insert(key, p.clone());
        Ok(p)
    }
}
