//! The CPU device (to come with the CPU issue).
