#![forbid(unsafe_code)]

pub mod modbus;
