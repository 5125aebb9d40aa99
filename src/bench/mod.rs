//! Load generators: `nvkv bench device` (the log append path) today; the
//! store workloads join here.

pub mod device;
