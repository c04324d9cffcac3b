//! A poison-tolerant `Mutex::lock`: a panic while a lock was held leaves the data as it was, and
//! the kubelet goes on with it rather than panicking in every later user.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data of a poisoned lock as it is.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
