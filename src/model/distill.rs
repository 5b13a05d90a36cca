//! Knowledge distillation (Hinton et al., 2015): a student learns from a
//! teacher's softened predictions. The student's training loss is
//!
//! ```text
//! (1 − α)·CE(student, labels) + α·τ²·KL(softmax(t/τ) ‖ softmax(s/τ))
//! ```
//!
//! with the teacher's logits `t` given as the input `teacher_logits`
//! (the trainer runs the frozen teacher forward-only in the same step and
//! copies its logits there, on the GPU; see `crate::train::trainer`). The
//! τ² keeps the soft term's gradients on the scale of the hard one's.
//! Without `teacher_logits` (evaluation) the student is itself: its plain
//! loss. Checkpoints hold the student alone (its config and parameters).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, ensure, Result};

use super::{Dims, Model, Outputs};
use crate::data::{Batch, InputSpec};
use crate::graph::{Graph, TensorId};
use crate::runtime::DType;

/// The input the teacher's logits arrive in.
pub const TEACHER_LOGITS: &str = "teacher_logits";

#[derive(Debug)]
pub struct Distilled {
    pub student: Arc<dyn Model>,
    /// Weight of the soft (teacher) term; 1 − α weighs the hard labels.
    pub alpha: f32,
    /// Softmax temperature of both distributions in the soft term.
    pub tau: f32,
}

impl Distilled {
    pub fn new(student: Arc<dyn Model>, alpha: f32, tau: f32) -> Result<Self> {
        ensure!(
            (0.0..=1.0).contains(&alpha),
            "--alpha {alpha}: the weight of the teacher's term must be in [0, 1]"
        );
        ensure!(
            tau.is_finite() && tau > 0.0,
            "--tau {tau}: the temperature must be a positive number"
        );
        Ok(Self {
            student,
            alpha,
            tau,
        })
    }
}

/// The shape of `model`'s logits for inputs `specs`.
pub fn logits_shape(model: &dyn Model, specs: &[InputSpec]) -> Result<Vec<usize>> {
    let (g, out) = super::declare(model, specs)?;
    let l = out
        .tensors
        .get("logits")
        .ok_or_else(|| anyhow!("{} has no logits", model.architecture()))?;
    Ok(g.shape(*l).to_vec())
}

impl Model for Distilled {
    fn architecture(&self) -> &'static str {
        self.student.architecture()
    }

    fn config_json(&self) -> serde_json::Value {
        self.student.config_json()
    }

    fn describe(&self) -> String {
        format!(
            "{} distilled (α {}, τ {})",
            self.student.describe(),
            self.alpha,
            self.tau
        )
    }

    fn input_specs(&self, d: Dims) -> Vec<InputSpec> {
        let mut s = self.student.input_specs(d);
        // The teacher's logits have the student's logits' shape ([B, T, V]
        // for a language model, [B, classes] for a classifier); a student
        // without logits gets none (its forward says so).
        if let Ok(shape) = logits_shape(self.student.as_ref(), &s) {
            s.push(InputSpec::new(TEACHER_LOGITS, &shape, DType::F32));
        }
        s
    }

    fn forward(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<Outputs> {
        let mut out = self.student.forward(g, inputs)?;
        let Some(&teacher) = inputs.get(TEACHER_LOGITS) else {
            return Ok(out);
        };
        let logits = *out
            .tensors
            .get("logits")
            .ok_or_else(|| anyhow!("the student has no logits to distil into"))?;
        ensure!(
            g.shape(teacher) == g.shape(logits),
            "the teacher's logits {:?} and the student's {:?} differ in shape (the two models \
             must share a vocabulary and see the same batch)",
            g.shape(teacher),
            g.shape(logits)
        );
        let kl = g.kl_div(logits, teacher, self.tau)?;
        for (_, _, w) in &mut out.losses {
            *w *= 1.0 - self.alpha;
        }
        out.losses.push(("distill_kl".into(), kl, self.alpha));
        out.tensors.insert("distill_kl".into(), kl);
        Ok(out)
    }

    fn prepare_batch(&self, batch: &mut Batch) -> Result<()> {
        self.student.prepare_batch(batch)
    }

    fn inputs_share_batch_dim(&self) -> bool {
        self.student.inputs_share_batch_dim()
    }

    fn context_length(&self) -> Option<usize> {
        self.student.context_length()
    }

    fn canonical_name(&self, stored: &str) -> Option<String> {
        self.student.canonical_name(stored)
    }

    fn head_prefixes(&self) -> Vec<String> {
        self.student.head_prefixes()
    }
}
