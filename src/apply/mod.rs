//! Apply: put compiled objects where they take effect (IO). The `dir` target is embedded:
//! it writes a directory Argo CD or Flux consume as is.

pub mod dir;
