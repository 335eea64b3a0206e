//! Runs cases one after another (they share one server, and ordering keeps reports readable),
//! timing each and turning a panic inside a case into a failure instead of ending the run.

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::cases::{Case, Ctx};
use crate::check::{Outcome, SKIPPED};

/// How a case ended.
pub enum Status {
    Pass,
    /// What was expected and what came back.
    Fail(String),
    /// Why the case does not apply to this server.
    Skip(String),
}

impl Status {
    fn from_outcome(outcome: Outcome) -> Self {
        match outcome {
            Ok(()) => Status::Pass,
            Err(message) => match message.strip_prefix(SKIPPED) {
                Some(reason) => Status::Skip(reason.to_string()),
                None => Status::Fail(message),
            },
        }
    }
}

/// The result of one case.
pub struct CaseResult {
    pub id: String,
    pub area: &'static str,
    pub name: String,
    pub status: Status,
    pub duration: Duration,
}

impl CaseResult {
    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Fail(_))
    }
}

/// A finished run.
pub struct Run {
    pub base_url: String,
    pub run_id: String,
    pub results: Vec<CaseResult>,
    pub duration: Duration,
}

impl Run {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|result| matches!(result.status, Status::Pass)).count()
    }
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|result| result.failed()).count()
    }
    pub fn skipped(&self) -> usize {
        self.results.iter().filter(|result| matches!(result.status, Status::Skip(_))).count()
    }
}

/// Runs `cases` in order, calling `on_result` as each finishes.
pub fn run(ctx: &Ctx, cases: &[Case], mut on_result: impl FnMut(&CaseResult)) -> Run {
    // A panicking case is reported as a FAIL line; the default hook would also print a backtrace
    // notice in the middle of the report.
    panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        let case_started = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| case.run(ctx)))
            .unwrap_or_else(|payload| Err(format!("the case panicked: {}", panic_message(payload.as_ref()))));
        let result = CaseResult {
            id: case.id.clone(),
            area: case.area,
            name: case.name.clone(),
            status: Status::from_outcome(outcome),
            duration: case_started.elapsed(),
        };
        on_result(&result);
        results.push(result);
    }
    let _ = panic::take_hook();
    Run { base_url: ctx.url(""), run_id: ctx.run_id().to_string(), results, duration: started.elapsed() }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic payload".to_string()
    }
}
