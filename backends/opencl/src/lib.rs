//! The OpenCL device (to come with the OpenCL issue).
