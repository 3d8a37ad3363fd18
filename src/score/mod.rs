//! Pure scoring: smoothing, per-signal demand, the composite and activation. No IO, no async, no
//! clocks (time is an argument), so the server, the simulator and the tests run the same code.

// The submodules are the crate's; what other crates use is re-exported below (the types of every
// public signature among it).
pub(crate) mod composite;
pub(crate) mod demand;
pub(crate) mod ewma;
pub(crate) mod forecast;
pub(crate) mod objective;

pub use composite::{
    Activation, Capacity, CapacityView, Context, Decision, Fleet, Limits, Scorer, ScorerConfig,
    SignalDecision, SignalRule, Within,
};
pub use demand::{backlog_demand, demand, latency_demand, Demand, DemandModel};
pub use ewma::{Ewma, Observed, Smoothing};
pub use forecast::{ForecastConfig, Seasonal};
pub use objective::{ObjectiveConfig, ObjectiveInput, ObjectiveView, Planner, ReadyTimer};
