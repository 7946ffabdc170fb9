//! The synchronous part of a call's decision at the callee: the method exists with this
//! shape, the caller still has a grant, the caller's calls in flight are within the bound,
//! and the call gate (names, quotas, approval) lets it through.

use std::sync::Arc;

use nullport_keyring::{Admitted, CallGate, CallRefused};
use nullport_protocol::rpc::Open;

use super::access::Admission;
use super::error::RpcError;
use super::error::cut;
use super::service::Handler;
use super::state::{InFlight, Inner};
use crate::rpc::Code;

/// What a refused OPEN gets.
pub(super) struct Refusal {
    pub(super) error: RpcError,
    pub(super) outcome: &'static str,
}

/// The synchronous part of an OPEN's decision.
#[allow(clippy::type_complexity)]
pub(super) fn decide(
    inner: &Arc<Inner>,
    admission: &Admission,
    open: &Open,
) -> Result<(Handler, InFlight, bool), Refusal> {
    let refuse = |error: RpcError, outcome| Refusal { error, outcome };
    let Some(method) = inner
        .services
        .get(&admission.service)
        .and_then(|s| s.methods.get(&open.method))
    else {
        return Err(refuse(
            RpcError::not_found(format!(
                "service {:?} has no method {:?}",
                admission.service,
                cut(&open.method, 128)
            )),
            "not found",
        ));
    };
    if method.shape != open.shape {
        return Err(refuse(
            RpcError::invalid_argument(format!(
                "method {:?} is {:?}, called as {:?}",
                cut(&open.method, 128),
                method.shape,
                open.shape
            )),
            "denied",
        ));
    }
    let grant = inner
        .access
        .grant(admission)
        .map_err(|why| refuse(RpcError::denied(why), "denied"))?;
    let rule = grant.rule.clone();
    let peer = admission.peer;
    let mut counts = inner.in_flight.lock().unwrap_or_else(|p| p.into_inner());
    let running = counts.get(&peer).copied().unwrap_or(0);
    if running >= inner.limits.max_in_flight_per_caller {
        return Err(refuse(
            RpcError::new(
                Code::ResourceExhausted,
                format!(
                    "too many calls in flight from this caller (limit {})",
                    inner.limits.max_in_flight_per_caller
                ),
            ),
            "over quota",
        ));
    }
    let admitted = {
        let mut gates = inner.gates.lock().unwrap_or_else(|p| p.into_inner());
        let gate = gates
            .entry((peer, admission.service.clone()))
            .or_insert_with(|| CallGate::new(grant.clone()));
        gate.set_grant(grant);
        gate.admit(
            "method",
            &open.method,
            running as usize,
            std::time::Instant::now(),
        )
    };
    let approve = match admitted {
        Ok(Admitted::Run) => false,
        Ok(Admitted::Approve) => true,
        Err(refused @ CallRefused::NotAllowed { .. }) => {
            return Err(refuse(
                RpcError::denied(format!("{refused} (rule {rule:?})")),
                "denied",
            ));
        }
        Err(quota) => {
            return Err(refuse(
                RpcError::new(
                    Code::ResourceExhausted,
                    format!("over quota (rule {rule:?}): {quota}"),
                ),
                "over quota",
            ));
        }
    };
    *counts.entry(peer).or_insert(0) += 1;
    drop(counts);
    Ok((
        method.handler.clone(),
        InFlight::new(inner.clone(), peer),
        approve,
    ))
}
