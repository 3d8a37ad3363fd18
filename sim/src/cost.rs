//! What a request costs a replica: the cost model that both the request traces (which price
//! each request when they are built) and the cluster (which serves them) use, kept apart from
//! both so neither depends on the other.

/// What a request costs a replica, and what the replica reports while serving it.
///
/// Service time alone = `overhead_s + prefill_s_per_token x context + decode_s_per_token x
/// generated`; a request admitted into a batch already holding `b - 1` others takes
/// `1 + (full_batch_slowdown - 1) x (b - 1) / (batch - 1)` times longer (fixed at admission).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostModel {
    pub overhead_s: f64,
    pub prefill_s_per_token: f64,
    pub decode_s_per_token: f64,
    /// Requests one replica serves at once (B).
    pub batch: u32,
    /// Service-time multiplier when the batch is full (2 = a full batch runs each request at half speed).
    pub full_batch_slowdown: f64,
    /// GPU memory in use with nothing in flight (weights), percent.
    pub memory_base_pct: f64,
    /// GPU memory per 1000 KV-cache tokens in flight, percent.
    pub memory_pct_per_1k_tokens: f64,
    /// Host CPU of an idle replica, percent of its request.
    pub cpu_idle_pct: f64,
    /// Extra host CPU when every batch slot is busy (tokenising, sampling, HTTP), percent.
    pub cpu_full_batch_pct: f64,
    /// Request size used by generators and by plain traces without a cost column.
    pub default_context_tokens: f64,
    pub default_generated_tokens: f64,
    /// Requests each ready replica queues beyond its batch before new ones are refused at once
    /// (an engine's `max_queue_size`, the demo's `--queue-capacity`): an arrival finding the
    /// gateway queue at this times the ready replicas is answered with an error, a miss. None
    /// (the default): the queue is unbounded and requests wait until `--timeout-s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<u32>,
    /// CPU cores the replicas share on their node: when their CPU readings add up to more, each
    /// reads its share of these (the demo's replicas on a two-core host). None (the default):
    /// every replica has its own CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_cpu_cores: Option<f64>,
}

impl Default for CostModel {
    fn default() -> Self {
        // A 7-13B model on one H100-class GPU: ~6.7k prefill tokens/s, 25 ms per decode step.
        CostModel {
            overhead_s: 0.05,
            prefill_s_per_token: 0.000_15,
            decode_s_per_token: 0.025,
            batch: 8,
            full_batch_slowdown: 2.0,
            memory_base_pct: 40.0,
            memory_pct_per_1k_tokens: 3.0,
            cpu_idle_pct: 5.0,
            cpu_full_batch_pct: 50.0,
            default_context_tokens: 2048.0,
            default_generated_tokens: 28.0,
            queue_capacity: None,
            node_cpu_cores: None,
        }
    }
}

impl CostModel {
    pub fn work_s(&self, context_tokens: f64, generated_tokens: f64) -> f64 {
        self.overhead_s
            + self.prefill_s_per_token * context_tokens
            + self.decode_s_per_token * generated_tokens
    }

    pub fn default_work_s(&self) -> f64 {
        self.work_s(self.default_context_tokens, self.default_generated_tokens)
    }

    /// Service time of `work_s` admitted as the `batch_size`-th request in service.
    pub fn service_s(&self, work_s: f64, batch_size: u32) -> f64 {
        let fill = if self.batch > 1 {
            (batch_size.saturating_sub(1)) as f64 / (self.batch - 1) as f64
        } else {
            0.0
        };
        work_s * (1.0 + (self.full_batch_slowdown - 1.0) * fill)
    }

    /// Checks every field; names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("overhead_s", self.overhead_s),
            ("prefill_s_per_token", self.prefill_s_per_token),
            ("decode_s_per_token", self.decode_s_per_token),
            ("memory_base_pct", self.memory_base_pct),
            ("memory_pct_per_1k_tokens", self.memory_pct_per_1k_tokens),
            ("cpu_idle_pct", self.cpu_idle_pct),
            ("cpu_full_batch_pct", self.cpu_full_batch_pct),
            ("default_context_tokens", self.default_context_tokens),
            ("default_generated_tokens", self.default_generated_tokens),
        ];
        for (name, v) in fields {
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "{name} = {v} is not accepted; expected a number >= 0"
                ));
            }
        }
        if self.batch == 0 || self.batch > 4096 {
            return Err(format!(
                "batch = {} is not accepted; expected 1..=4096",
                self.batch
            ));
        }
        if !self.full_batch_slowdown.is_finite() || self.full_batch_slowdown < 1.0 {
            return Err(format!(
                "full_batch_slowdown = {} is not accepted; expected a factor >= 1",
                self.full_batch_slowdown
            ));
        }
        if let Some(c) = self.node_cpu_cores.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(format!(
                "node_cpu_cores = {c} is not accepted; expected a number of cores > 0"
            ));
        }
        if self.default_work_s() <= 0.0 {
            return Err(
                "the default request costs nothing; raise overhead_s or a per-token cost".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_model_validation_names_the_field() {
        let bad = CostModel {
            batch: 0,
            ..CostModel::default()
        };
        assert!(bad.validate().unwrap_err().contains("batch"));
        let bad = CostModel {
            decode_s_per_token: -1.0,
            ..CostModel::default()
        };
        assert!(bad.validate().unwrap_err().contains("decode_s_per_token"));
        assert!(CostModel::default().validate().is_ok());
    }
}
