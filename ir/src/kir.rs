//! The saved form `model.kir` + `model.kir.bin` (placeholder; see the text-form work).
