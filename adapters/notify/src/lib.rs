//! Notification providers.
