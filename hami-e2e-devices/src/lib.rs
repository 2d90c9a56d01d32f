//! Vendor device backends for hami-e2e: resource names, HAMi's annotations and
//! verification for NVIDIA, Cambricon, Hygon and Ascend, and fake devices for the GPU-less
//! local cluster.
//!
//! Not written yet: this crate is a placeholder in the workspace layout; the devices issue
//! fills it.
