//! axum router: /healthz, /readyz.
