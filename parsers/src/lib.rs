#![forbid(unsafe_code)]

pub mod dnp3;
pub mod modbus;
pub mod s7;
