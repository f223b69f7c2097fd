//! Passes (to come with the passes issue).
