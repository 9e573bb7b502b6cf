//! Statement analysis on any text, for a role with a row policy: never a panic, and a
//! rewrite that touches the protected table carries the role's row filter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phigate::protocol::value::Context;
use phigate::sql::{Analysis, SearchPath};
use phigate_fuzz::{FILTER, TABLE, enforcement, subject};

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let enforcement = enforcement();
    let enforced = enforcement.current();
    let ctx = Context {
        zone: Some(phigate::protocol::zone::Zone::UTC),
        ..Context::default()
    };
    let analysis = enforced
        .analyzer
        .analyse_on(&subject(), ctx, &SearchPath::Default, sql);
    if let Analysis::Rewrite(plan) = analysis
        && plan.tables.iter().any(|t| t.name.table == TABLE)
    {
        assert!(
            plan.sql.text().contains(FILTER),
            "a rewrite of {sql:?} touches {TABLE} without its row filter: {:?}",
            plan.sql
        );
    }
});
