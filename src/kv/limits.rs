//! Size limits on what clients send, and the checks the request path runs
//! before a write is proposed. Their values (etcd's by default) come from
//! the node's config, `[store]`.
//!
//! The store itself takes any size (a write already in the log must apply
//! on every replica whatever today's limits are), so these checks belong
//! before Raft: the RPC layer runs them on every client request. This
//! module must never be consulted while applying committed entries.

use super::types::{PutRequest, RequestOp, ShowKey, TxnRequest};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    /// The largest request as it arrives, everything in it counted.
    pub request_bytes_max: usize,
    /// The most compares, and the most ops in each branch, of one txn (and
    /// of each nested txn), as etcd's `--max-txn-ops`.
    pub txn_ops_max: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the key is empty; give a key of 1 to {key_bytes_max} bytes")]
    EmptyKey { key_bytes_max: usize },
    #[error("key starting {} is {bytes} bytes, over the limit of {key_bytes_max}; use a shorter key", ShowKey(.key_start))]
    KeyTooLarge { key_start: Vec<u8>, bytes: usize, key_bytes_max: usize },
    #[error(
        "the value of key {} is {bytes} bytes, over the limit of {value_bytes_max}; \
         store less per key or raise value_bytes_max",
        ShowKey(.key)
    )]
    ValueTooLarge { key: Vec<u8>, bytes: usize, value_bytes_max: usize },
    #[error(
        "the request is {bytes} bytes, over the limit of {request_bytes_max}; send less in one request \
         (split the txn, store less per key) or raise store.request_bytes_max"
    )]
    RequestTooLarge { bytes: usize, request_bytes_max: usize },
    #[error("a txn has {ops} {what}, over the limit of {txn_ops_max}; split it or raise txn_ops_max")]
    TooManyTxnOps { what: &'static str, ops: usize, txn_ops_max: usize },
}

/// How much of an oversized key an error repeats.
const KEY_SHOWN_BYTES_MAX: usize = 64;

impl Limits {
    /// Checks the size of a whole request, as it arrived.
    pub fn check_request_bytes(&self, bytes: usize) -> Result<(), LimitError> {
        if bytes > self.request_bytes_max {
            return Err(LimitError::RequestTooLarge { bytes, request_bytes_max: self.request_bytes_max });
        }
        Ok(())
    }

    pub fn check_key(&self, key: &[u8]) -> Result<(), LimitError> {
        if key.is_empty() {
            return Err(LimitError::EmptyKey { key_bytes_max: self.key_bytes_max });
        }
        if key.len() > self.key_bytes_max {
            return Err(LimitError::KeyTooLarge {
                key_start: key[..KEY_SHOWN_BYTES_MAX.min(key.len())].to_vec(),
                bytes: key.len(),
                key_bytes_max: self.key_bytes_max,
            });
        }
        Ok(())
    }

    pub fn check_put(&self, put: &PutRequest) -> Result<(), LimitError> {
        self.check_key(&put.key)?;
        if put.value.len() > self.value_bytes_max {
            return Err(LimitError::ValueTooLarge {
                key: put.key.clone(),
                bytes: put.value.len(),
                value_bytes_max: self.value_bytes_max,
            });
        }
        Ok(())
    }

    /// Checks the counts of a txn and of its nested txns, and every key and
    /// value in them.
    pub fn check_txn(&self, txn: &TxnRequest) -> Result<(), LimitError> {
        for (what, ops) in [
            ("compares", txn.compares.len()),
            ("success ops", txn.success.len()),
            ("failure ops", txn.failure.len()),
        ] {
            if ops > self.txn_ops_max {
                return Err(LimitError::TooManyTxnOps { what, ops, txn_ops_max: self.txn_ops_max });
            }
        }
        for compare in &txn.compares {
            self.check_key(&compare.key)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Range(range) => self.check_key(&range.key)?,
                RequestOp::Put(put) => self.check_put(put)?,
                RequestOp::DeleteRange(delete) => self.check_key(&delete.key)?,
                RequestOp::Txn(nested) => self.check_txn(nested)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::types::RangeRequest;

    fn put(key: &[u8], value_bytes: usize) -> PutRequest {
        PutRequest { key: key.to_vec(), value: vec![0; value_bytes], ..PutRequest::default() }
    }

    #[test]
    fn oversized_and_empty_keys_and_values_are_refused_with_sizes() {
        let limits = Limits { key_bytes_max: 4, value_bytes_max: 8, request_bytes_max: 16, txn_ops_max: 2 };
        assert_eq!(limits.check_put(&put(b"abcd", 8)), Ok(()));
        assert_eq!(limits.check_put(&put(b"", 0)), Err(LimitError::EmptyKey { key_bytes_max: 4 }));
        let error = limits.check_put(&put(b"abcde", 0)).unwrap_err();
        assert!(error.to_string().contains("5 bytes, over the limit of 4"), "{error}");
        let error = limits.check_put(&put(b"k", 9)).unwrap_err();
        assert!(error.to_string().contains("\"k\" is 9 bytes"), "{error}");
        assert_eq!(limits.check_request_bytes(16), Ok(()));
        let error = limits.check_request_bytes(17).unwrap_err();
        assert!(error.to_string().contains("17 bytes, over the limit of 16"), "{error}");
    }

    #[test]
    fn txn_counts_and_nested_contents_are_checked() {
        let limits = Limits { key_bytes_max: 4, value_bytes_max: 8, request_bytes_max: 16, txn_ops_max: 2 };
        let range = RequestOp::Range(RangeRequest { key: b"k".to_vec(), ..RangeRequest::default() });
        let too_many = TxnRequest {
            success: vec![range.clone(), range.clone(), range.clone()],
            ..TxnRequest::default()
        };
        let error = limits.check_txn(&too_many).unwrap_err();
        assert_eq!(error, LimitError::TooManyTxnOps { what: "success ops", ops: 3, txn_ops_max: 2 });
        let nested = TxnRequest {
            failure: vec![
                range,
                RequestOp::Txn(TxnRequest {
                    success: vec![RequestOp::Put(put(b"k", 9))],
                    ..TxnRequest::default()
                }),
            ],
            ..TxnRequest::default()
        };
        assert!(matches!(limits.check_txn(&nested), Err(LimitError::ValueTooLarge { bytes: 9, .. })));
    }
}
