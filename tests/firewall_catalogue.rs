//! The firewall's list of functions that run SQL held in a string, open a cursor by name or
//! read a table given by name or OID, checked against PostgreSQL's own catalogue: every
//! built-in function of that shape is either refused or reviewed as harmless, so a new
//! server version that adds one fails this test until someone decides.

mod common;

use common::Pg;

/// Built-in functions of that shape reviewed as harmless: they read a relation's size,
/// properties, partitions or sequence state, or print a regclass; none reads rows.
const HARMLESS: &[&str] = &[
    "brin_desummarize_range",
    "brin_summarize_new_values",
    "brin_summarize_range",
    "currval",
    "gin_clean_pending_list",
    "nextval",
    "pg_column_is_updatable",
    "pg_extension_config_dump",
    "pg_get_replica_identity_index",
    "pg_index_column_has_property",
    "pg_index_has_property",
    "pg_indexes_size",
    "pg_nextoid",
    "pg_partition_ancestors",
    "pg_partition_root",
    "pg_partition_tree",
    "pg_relation_filenode",
    "pg_relation_filepath",
    "pg_relation_is_publishable",
    "pg_relation_is_updatable",
    "pg_relation_size",
    "pg_sequence_last_value",
    "pg_table_size",
    "pg_total_relation_size",
    "regclassout",
    "regclasssend",
    "setval",
];

/// Refused by argument shape rather than by name (`ts_rewrite(tsquery, text)` runs its
/// second argument as a query; the three-tsquery form is harmless).
const BY_ARGUMENTS: &[&str] = &["ts_rewrite"];

/// Functions in `pg_catalog` that take a regclass or refcursor, an input argument named like
/// a query, cursor, table or schema, whose C entry point runs a query given as text, or that
/// belong to the `*_to_xml*` families.
const CANDIDATES: &str = "SELECT DISTINCT p.proname::text FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'pg_catalog'::regnamespace AND (
  EXISTS (SELECT 1 FROM unnest(p.proargtypes::oid[]) t WHERE t IN ('regclass'::regtype, 'refcursor'::regtype))
  OR EXISTS (SELECT 1 FROM unnest(p.proargnames[1:p.pronargs]) n WHERE n IN ('query', 'sql', 'cursor', 'tbl', 'schema'))
  OR p.prosrc IN ('tsquery_rewrite_query', 'ts_stat1', 'ts_stat2')
  OR p.proname LIKE '%to_xml%')
ORDER BY 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_string_sql_function_in_the_catalogue_is_refused_or_reviewed() {
    let pg = Pg::start();
    let db = pg.direct().await;
    let found: Vec<String> = db
        .query(CANDIDATES, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let refused = |f: &str| phigate::sql::FORBIDDEN_WORDS.contains(&f) || BY_ARGUMENTS.contains(&f);
    let unreviewed: Vec<&String> = found
        .iter()
        .filter(|f| !refused(f) && !HARMLESS.contains(&f.as_str()))
        .collect();
    assert!(
        unreviewed.is_empty(),
        "functions that may run SQL or read tables by name, neither refused by the firewall \
         nor reviewed as harmless: {unreviewed:?}"
    );
    // ... and the list is not stale: every refused or reviewed name still exists.
    for name in HARMLESS.iter().chain(BY_ARGUMENTS) {
        assert!(
            found.iter().any(|f| f == name),
            "{name} is gone from the catalogue"
        );
    }
    for name in [
        "ts_stat",
        "query_to_xml",
        "table_to_xml",
        "cursor_to_xml",
        "database_to_xml",
    ] {
        assert!(refused(name), "{name}");
    }
}
