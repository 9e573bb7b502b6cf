//! The bulk-read guard in the session: a statement whose rows count is refused while the
//! user's hourly budget is spent, the rows it delivers are counted, and a statement the
//! server stopped at its cap is recognised (see `sql::cap` for the cap itself).

use std::sync::Arc;
use std::time::Instant;

use super::queue::Pending;
use super::{Event, Outbound, Session};
use crate::protocol::backend::ErrorFields;
use crate::protocol::message::Frontend;
use crate::sql::{Analysis, Plan, Subject};

impl Session {
    /// `analysis` of `msg`, or (with `true`) the refusal of a statement whose rows count
    /// against a spent hourly budget: a simple Query when analysed, a prepared one at each
    /// Execute.
    pub(super) fn within_budget(
        &self,
        msg: &Frontend<'_>,
        analysis: Option<Analysis>,
        now: Instant,
        out: &mut Outbound,
    ) -> (Option<Analysis>, bool) {
        let counted = match (msg, &analysis) {
            (Frontend::Query { .. }, Some(Analysis::Rewrite(plan))) => plan.counted,
            (Frontend::Execute { portal, .. }, _) => {
                (self.registry.rows(portal)).is_some_and(|r| r.plan.counted)
            }
            _ => false,
        };
        let Some(g) = self.guard.as_ref().filter(|_| counted) else {
            return (analysis, false);
        };
        let who = self.speaker.as_ref().unwrap_or(&g.subject);
        let Some(refusal) = g.over_budget(who, now, self.emergency.is_some()) else {
            return (analysis, false);
        };
        out.events.push(row_cap_event(who, true));
        (Some(Analysis::Refuse(Arc::new(refusal))), true)
    }

    /// The plan of the statement whose rows arrive now, when they count.
    fn counted_plan(&self) -> Option<&Arc<Plan>> {
        let plan = match self.queue.front()? {
            Pending::Query { plan, .. } => plan.as_ref()?,
            Pending::Execute { rows, .. } => &rows.as_ref()?.plan,
            _ => return None,
        };
        plan.counted.then_some(plan)
    }

    /// A row (DataRow, or CopyData of a COPY TO) is on its way to the client.
    pub(super) fn row_delivered(&mut self) {
        if self.counted_plan().is_some() {
            self.delivered += 1;
        }
    }

    /// A statement ended: the rows it delivered count against the budget of the user it
    /// ran for.
    pub(super) fn count_delivered(&mut self, now: Instant) {
        let rows = std::mem::take(&mut self.delivered);
        let user = self
            .counted_plan()
            .and_then(|p| p.subject.as_ref())
            .map(|s| s.user.clone());
        if let (Some(g), Some(user), true) = (&self.guard, user, rows > 0) {
            g.count_rows(&user, now, rows);
        }
    }

    /// True when `fields` is the server stopping a statement at its row cap; the stop is
    /// reported.
    pub(super) fn stopped_at_cap(&self, fields: &ErrorFields<'_>, out: &mut Outbound) -> bool {
        if fields.code != "54000" || !fields.message.starts_with(crate::sql::CAP_MESSAGE) {
            return false;
        }
        let who = (self.counted_plan().and_then(|p| p.subject.as_ref()))
            .or(self.guard.as_ref().map(|g| &g.subject));
        if let Some(who) = who {
            out.events.push(row_cap_event(who, false));
        }
        true
    }
}

fn row_cap_event(who: &Subject, hourly: bool) -> Event {
    Event::RowCap {
        user: who.user.clone(),
        role: who.role.clone(),
        hourly,
    }
}
