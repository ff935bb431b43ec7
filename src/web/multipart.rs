//! Streaming multipart/related writer (and later reader).
