//! Pure scoring: smoothing, per-signal demand, the composite and activation. No IO, no async, no
//! clocks (time is an argument), so the server, the simulator and the tests run the same code.

pub mod composite;
pub mod ewma;
pub mod forecast;
pub mod objective;

pub use composite::{
    backlog_demand, demand, latency_demand, Activation, Capacity, CapacityView, Context, Decision,
    Demand, DemandModel, Fleet, Limits, Scorer, ScorerConfig, SignalDecision, SignalRule,
};
pub use ewma::{Ewma, Smoothing};
pub use forecast::{ForecastConfig, Seasonal};
pub use objective::{ObjectiveConfig, ObjectiveView, Planner, ReadyTimer};
