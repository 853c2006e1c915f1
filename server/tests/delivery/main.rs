//! Progressive delivery end to end: scheduled changes fired by a manual clock, webhooks
//! delivered to a real HTTP receiver (signed, retried, auto-disabled), and exactly-once
//! execution across server processes sharing one PostgreSQL.

mod approvals;
mod exactly_once;
mod guardrails;
mod helpers;
mod plan_approvals;
mod plans;
mod schedules;
mod webhooks;
