//! The text form (placeholder; see the text-form work).
