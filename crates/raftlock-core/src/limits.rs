//! Every collection and every field has a maximum; exceeding one is an
//! ordinary, typed error.

use serde::{Deserialize, Serialize};

use crate::error::{Limit, LockError};
use crate::types::{Metadata, Mode};

/// The limits the state machine enforces. They are part of the replicated
/// state (every replica must judge a command the same way) and are changed
/// only through a `SetLimits` log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_name_bytes: u32,
    pub max_owner_bytes: u32,
    pub max_reason_bytes: u32,
    /// Sum of key and value lengths of a hold's metadata.
    pub max_metadata_bytes: u32,
    pub min_ttl_ms: u64,
    pub max_ttl_ms: u64,
    pub max_lock_delay_ms: u64,
    /// Waiters queued on one name.
    pub max_waiters_per_lock: u32,
    /// Names one lease holds or waits for, together.
    pub max_holds_per_lease: u32,
    /// Leases alive at once.
    pub max_leases: u32,
    /// Names in one (atomic, all-or-none) acquire.
    pub max_locks_per_request: u32,
    /// Permits of one semaphore.
    pub max_permits: u32,
}

/// The longest identity a lease may record, in bytes (auth files name
/// identities of at most 128 bytes; this bounds what a command may carry).
pub const MAX_IDENTITY_BYTES: usize = 256;

/// One identity's maxima, from the auth file of the node that took the
/// call. They travel in the commands of that identity's calls (GrantLease,
/// Acquire) and are checked when the entry is applied, so they hold
/// exactly, whatever the number of concurrent requests: every replica
/// judges each entry against the same state. `None`: no maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityLimits {
    /// Leases alive at once.
    pub max_leases: Option<u32>,
    /// Names held or waited for, together, over all the identity's leases.
    pub max_holds: Option<u32>,
    /// Queued requests over all the identity's leases.
    pub max_waiters: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_bytes: 512,
            max_owner_bytes: 256,
            max_reason_bytes: 1024,
            max_metadata_bytes: 4096,
            min_ttl_ms: 1_000,
            max_ttl_ms: 24 * 60 * 60 * 1_000,
            max_lock_delay_ms: 60_000,
            max_waiters_per_lock: 1_024,
            max_holds_per_lease: 1_024,
            max_leases: 100_000,
            max_locks_per_request: 64,
            max_permits: 65_536,
        }
    }
}

impl Limits {
    /// Limits that cannot be met or that would let the state grow without
    /// bound are refused.
    pub fn validate(&self) -> Result<(), LockError> {
        let bad = |field: &'static str, reason: &str| {
            Err(LockError::InvalidArgument {
                field: field.to_string(),
                reason: reason.to_string(),
            })
        };
        if self.max_name_bytes == 0 || self.max_name_bytes > 64 * 1024 {
            return bad("limits.max_name_bytes", "must be between 1 and 65536");
        }
        if self.min_ttl_ms == 0 || self.min_ttl_ms > self.max_ttl_ms {
            return bad(
                "limits.min_ttl_ms",
                "must be at least 1 and at most max_ttl_ms",
            );
        }
        if self.max_metadata_bytes > 1024 * 1024 {
            return bad("limits.max_metadata_bytes", "must be at most 1 MiB");
        }
        for (field, value) in [
            ("limits.max_waiters_per_lock", self.max_waiters_per_lock),
            ("limits.max_holds_per_lease", self.max_holds_per_lease),
            ("limits.max_leases", self.max_leases),
            ("limits.max_locks_per_request", self.max_locks_per_request),
            ("limits.max_permits", self.max_permits),
        ] {
            if value == 0 || value > 10_000_000 {
                return bad(field, "must be between 1 and 10000000");
            }
        }
        Ok(())
    }

    /// A lock name is a non-empty UTF-8 path of at most `max_name_bytes`
    /// bytes without control characters.
    pub fn check_name(&self, name: &str) -> Result<(), LockError> {
        let invalid = |reason: String| {
            Err(LockError::InvalidName {
                name: truncate_for_error(name),
                reason,
            })
        };
        if name.is_empty() {
            return invalid("the name is empty".to_string());
        }
        if name.len() > self.max_name_bytes as usize {
            return invalid(format!(
                "the name is {} bytes long, the limit is {}",
                name.len(),
                self.max_name_bytes
            ));
        }
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return invalid(format!(
                "the name contains the control character U+{:04X}",
                c as u32
            ));
        }
        Ok(())
    }

    pub fn check_ttl(&self, ttl_ms: u64) -> Result<(), LockError> {
        if ttl_ms < self.min_ttl_ms || ttl_ms > self.max_ttl_ms {
            return Err(LockError::TtlOutOfRange {
                ttl_ms,
                min_ms: self.min_ttl_ms,
                max_ms: self.max_ttl_ms,
            });
        }
        Ok(())
    }

    pub fn check_text(&self, field: &'static str, value: &str) -> Result<(), LockError> {
        let max = match field {
            "owner" => self.max_owner_bytes,
            _ => self.max_reason_bytes,
        };
        if value.len() > max as usize {
            return Err(LockError::TooLarge {
                field: field.to_string(),
                size: value.len() as u64,
                max: max as u64,
            });
        }
        Ok(())
    }

    pub fn check_metadata(&self, metadata: &Metadata) -> Result<(), LockError> {
        let size: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > self.max_metadata_bytes as usize {
            return Err(LockError::TooLarge {
                field: "metadata".to_string(),
                size: size as u64,
                max: self.max_metadata_bytes as u64,
            });
        }
        if metadata.keys().any(|k| k.is_empty()) {
            return Err(LockError::InvalidArgument {
                field: "metadata".to_string(),
                reason: "a metadata key is empty".to_string(),
            });
        }
        Ok(())
    }

    pub fn check_mode(&self, mode: Mode) -> Result<(), LockError> {
        if let Mode::Semaphore { permits } = mode {
            if permits == 0 {
                return Err(LockError::InvalidArgument {
                    field: "permits".to_string(),
                    reason: "a semaphore needs at least 1 permit".to_string(),
                });
            }
            if permits > self.max_permits {
                return Err(LockError::LimitExceeded {
                    limit: Limit::PermitsPerSemaphore,
                    max: self.max_permits as u64,
                });
            }
        }
        Ok(())
    }

    pub fn check_lock_delay(&self, lock_delay_ms: u64) -> Result<(), LockError> {
        if lock_delay_ms > self.max_lock_delay_ms {
            return Err(LockError::InvalidArgument {
                field: "lock_delay_ms".to_string(),
                reason: format!(
                    "{lock_delay_ms} ms is above the limit of {} ms",
                    self.max_lock_delay_ms
                ),
            });
        }
        Ok(())
    }
}

/// Error messages quote names, but never a megabyte of one.
pub(crate) fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.escape_debug().to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s[..end].escape_debug())
}
